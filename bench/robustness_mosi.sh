#!/usr/bin/env bash
# The README's robustness section: `bash bench/robustness_mosi.sh [ARCH ...]` trains each architecture once from
# its space's start configuration on the bundled MOSI (a 1-trial study: ROBUSTNESS_FOLDS-fold CV for the refit's
# epoch count, one test seed; awf from its default study's best configuration, bench/robustness_awf.yaml, as the
# paper's SGD start predicts one sign for all), without and with `--missing-rate 0.5`, then scores all of them
# under random feature missing and modality missing on the same draws (`python -m ray_msa.robustness`, 3 seeds
# per level), and draws every feature-missing curve in one figure. Its own tracking store (ROBUSTNESS_TRACKING, default
# mlruns/robustness.db); logs and results in bench/results/robustness/. A model whose log is there already is not
# trained again (delete the log to retrain it).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
OUT=bench/results/robustness
mkdir -p "$OUT" mlruns
TRACKING=${ROBUSTNESS_TRACKING:-sqlite:///$PWD/mlruns/robustness.db}
FOLDS=${ROBUSTNESS_FOLDS:-3}
archs=("$@")
[ ${#archs[@]} -gt 0 ] || archs=(lf_dnn mtl awf mult)
studies=()
for arch in "${archs[@]}"; do
  space=()
  [ "$arch" != awf ] || space=(--space bench/robustness_awf.yaml)
  for rate in 0 0.5; do
    log="$OUT/train_${arch}_missing${rate}.log"
    if ! grep -q "^MLflow: study run" "$log" 2>/dev/null; then
      start=$(date +%s)
      python -m ray_msa.tune mosi --arch "$arch" --trials 1 --folds "$FOLDS" --test-seeds 1 --missing-rate "$rate" \
        "${space[@]}" --tracking-uri "$TRACKING" > "$log" 2>&1 || { echo "!! $arch failed: see $log" >&2; exit 1; }
      echo "wall: $(( $(date +%s) - start )) s on $(nproc) cores, commit $(git rev-parse --short HEAD)" >> "$log"
    fi
    studies+=("$(sed -n 's/^MLflow: study run \([0-9a-f]*\) .*/\1/p' "$log")")
    echo "$arch, missing_rate $rate: $(sed -n 's/^wall: \([0-9]*\) s.*/\1/p' "$log") s, study ${studies[-1]}"
  done
done
start=$(date +%s)
python -m ray_msa.robustness --model "${studies[@]}" --protocol feature_missing modality_missing \
  --tracking-uri "$TRACKING" > "$OUT/robustness.log" 2>&1 || { echo "!! see $OUT/robustness.log" >&2; exit 1; }
echo "wall: $(( $(date +%s) - start )) s on $(nproc) cores" >> "$OUT/robustness.log"
python bench/robustness_figure.py --tracking-uri "$TRACKING" --out "$OUT" "${studies[@]}" | tee "$OUT/summary.md"
