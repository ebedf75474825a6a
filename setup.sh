#!/usr/bin/env bash
# Installs songcorpus into ./.venv on a fresh Debian/Ubuntu machine (idempotent: re-running is quick).
# System packages (apt-get, only when missing): python3 (>= 3.11) with venv, and rubberband-cli (Rubber
# Band, the augmentation's time stretch and pitch shift; run as a program, so its GPL stays apart from this
# package). Audio decoding uses the FFmpeg and libsndfile libraries inside the PyAV and soundfile wheels.
set -euo pipefail
cd "$(dirname "$0")"

PY=""
for cand in python3.13 python3.12 python3.11 python3; do
  # pyenv shims exist for versions that are not active: run the probe quietly
  if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    PY="$cand"; break
  fi
done
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
if [ -z "$PY" ] || ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  echo "setup: installing python3 and python3-venv with apt-get" >&2
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq python3 python3-venv python3-dev >/dev/null
  PY=python3
  "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "setup: songcorpus needs Python >= 3.11 (found $("$PY" --version)); install python3.11 and re-run" >&2; exit 1; }
fi

if ! command -v rubberband >/dev/null 2>&1; then
  echo "setup: installing rubberband-cli with apt-get (augmentation's time stretch and pitch shift)" >&2
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq rubberband-cli >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=".venv/.songcorpus-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing songcorpus and its dependencies into .venv (torch is large: a few minutes the first time)" >&2
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev,full]'
  touch "$stamp"
fi
echo "setup: ready (.venv/bin/songcorpus)" >&2
