#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py) on a machine that has the GPU but not this project's pins.
#
#   bash benchmarks/gpu_check.sh              # results in $OUT (else runs/gpu-check/out)
#   bash benchmarks/gpu_check.sh --dry-run    # the CPU dry run
#
# Packages the machine lacks travel as wheels in .whl/ (git-ignored; README "On a GPU" says how
# to fill it); they are installed into /tmp/site, outside the machine's own environment.
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
exec python3 benchmarks/gpu_check.py "$@"
