#!/usr/bin/env bash
# The README's MOSI table of every architecture: `bash bench/mosi_table.sh [ARCH ...]` runs each architecture's
# default study on the bundled MOSI (6 trials x 5 folds, the best configuration retrained and tested with 3 seeds),
# then `compare` over them (test mean ± std [95% CI] over seeds, Holm-corrected paired permutation tests between
# architectures, the interval plot). The studies go to their own tracking store (MOSI_TABLE_TRACKING, default
# mlruns/mosi_table.db). Results in bench/results/mosi_table/: ARCH.log (each study's output and wall time),
# mosi.md, mosi.png. MOSI_TABLE_ARGS adds flags to every study of this call (e.g. "--trials 4 --epochs 6" for a
# smaller study of a slow architecture; the log keeps the command, and the README says which rows were sized so).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
OUT=bench/results/mosi_table
mkdir -p "$OUT" mlruns
TRACKING=${MOSI_TABLE_TRACKING:-sqlite:///$PWD/mlruns/mosi_table.db}
archs=("$@")
[ ${#archs[@]} -gt 0 ] || archs=(mtl awf lf_dnn lf_lstm lmf tfn mult cenet)
for arch in "${archs[@]}"; do
  echo "== python -m ray_msa.tune mosi --arch $arch"
  start=$(date +%s)
  # shellcheck disable=SC2086  # MOSI_TABLE_ARGS is a list of flags
  python -m ray_msa.tune mosi --arch "$arch" --tracking-uri "$TRACKING" ${MOSI_TABLE_ARGS:-} > "$OUT/$arch.log" 2>&1 \
    || { echo "!! $arch failed: see $OUT/$arch.log" >&2; exit 1; }
  wall=$(( $(date +%s) - start ))
  echo "wall: $wall s on $(nproc) cores, commit $(git rev-parse --short HEAD), flags: ${MOSI_TABLE_ARGS:-none}" >> "$OUT/$arch.log"
  echo "   $((wall / 60)) min $((wall % 60)) s"
done
python -m ray_msa.compare --dataset mosi --tracking-uri "$TRACKING" --format md --out "$OUT/mosi.md" \
  --plot "$OUT/mosi.png" | tee "$OUT/compare.log"
