#!/usr/bin/env bash
# The GPU checks (bench/gpu_check.py; --help says what they measure and need): one JSON, --out PATH.
#   bash bench/gpu_check.sh --out $OUT/gpu_check.json     # on a GPU machine, from the repo root
#   bash bench/gpu_check.sh --dry-run --out /tmp/g.json   # the same code on the CPU, tiny sizes, under a minute
# Python: $PYTHON if set, else this checkout's .venv, else python3 (the device machine's, with torch; the
# project's other packages from bench/gpu_wheels.sh's wheels on PYTHONPATH). Nothing is downloaded.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 PYTHONUNBUFFERED=1
py="${PYTHON:-}"
if [ -z "$py" ]; then
  if [ -x "$root/.venv/bin/python" ]; then py="$root/.venv/bin/python"; else py=python3; fi
fi
exec "$py" "$root/bench/gpu_check.py" "$@"
