#!/usr/bin/env bash
# The README's image+text robustness rows: `bash bench/robustness_mvsa.sh [MVSA_DIR]` holds out a stratified 20% of
# the labelled posts (seed 0) as a labelled test list in a work folder (the images and texts are linked, not
# copied), trains the image+text model once from its space's start configuration (a 1-trial study, 2-fold CV for
# the refit's epoch count, 3 epochs at most, one test seed), and scores it with the image missing, the text missing
# and typing noise on the text. Its own tracking store (ROBUSTNESS_TRACKING, default mlruns/robustness.db).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
DATA=${1:-../shared/data/mvsa_ecnu}
WORK=${MVSA_HOLDOUT:-/tmp/mvsa_holdout}
OUT=bench/results/robustness
mkdir -p "$OUT" mlruns "$WORK"
TRACKING=${ROBUSTNESS_TRACKING:-sqlite:///$PWD/mlruns/robustness.db}
python - "$DATA" "$WORK" <<'PY'
import csv, sys
from pathlib import Path
from sklearn.model_selection import train_test_split
source, work = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
with (source / "train.txt").open(encoding="utf-8-sig", newline="") as handle:
    rows = [r for r in csv.reader(handle)][1:]
train, test = train_test_split(rows, test_size=0.2, random_state=0, stratify=[r[1] for r in rows])
for name, part in (("train.txt", train), ("test_without_label.txt", test)):
    with (work / name).open("w", newline="") as handle:
        csv.writer(handle).writerows([["guid", "tag"], *part])
link = work / "data"
if not link.exists():
    link.symlink_to(source / "data")
print(f"{len(train)} training posts, {len(test)} held-out labelled posts in {work}")
PY
TRAIN_LOG="$OUT/train_image_text.log"
ROBUST_LOG="$OUT/robustness_mvsa.log"
start=$(date +%s)
python -m ray_msa.tune mvsa --data "$WORK" --trials 1 --folds 2 --epochs 3 --test-seeds 1 \
  --tracking-uri "$TRACKING" > "$TRAIN_LOG" 2>&1 || { echo "!! see $TRAIN_LOG" >&2; exit 1; }
echo "wall: $(( $(date +%s) - start )) s on $(nproc) cores, commit $(git rev-parse --short HEAD)" >> "$TRAIN_LOG"
study=$(sed -n 's/^MLflow: study run \([0-9a-f]*\) .*/\1/p' "$TRAIN_LOG")
start=$(date +%s)
python -m ray_msa.robustness --model "$study" --data "$WORK" --protocol modality_missing noise \
  --tracking-uri "$TRACKING" > "$ROBUST_LOG" 2>&1 || { echo "!! see $ROBUST_LOG" >&2; exit 1; }
echo "wall: $(( $(date +%s) - start )) s on $(nproc) cores" >> "$ROBUST_LOG"
cat "$ROBUST_LOG"
