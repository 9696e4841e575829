#!/usr/bin/env bash
# The one command for the GPU machine (and, with --cpu-dry-run, for CI): installs the wheels
# carried in .whl/ (DeepSpeed and what the device lacks; bench/gpu_wheels.sh fetches them) into
# /tmp/site without touching the device's packages, when DeepSpeed does not import, then runs bench/gpu_check.py with this
# checkout on the path. Nothing is fetched from the network. The log goes to $OUT when set.
#
#   run: bash bench/gpu_check.sh            (carry: .whl)
#   CI:  bash bench/gpu_check.sh --cpu-dry-run
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c "import deepspeed" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    set +e
    "$PYTHON" bench/gpu_check.py "$@" 2>&1 | tee "$OUT/gpu_check.log"
    exit "${PIPESTATUS[0]}"
fi
exec "$PYTHON" bench/gpu_check.py "$@"
