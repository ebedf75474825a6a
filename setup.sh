#!/usr/bin/env bash
# Installs songcorpus into ./.venv on a fresh Debian/Ubuntu machine (idempotent: re-running is quick).
#
#   bash setup.sh            install exactly the locked dependency set (uv.lock, every hash checked)
#   bash setup.sh --extra bench   also install an optional extra (bench: the method comparisons in bench/)
#   bash setup.sh --relock   re-resolve uv.lock against today's PyPI (uv lock --upgrade), then install it;
#                            run the suite and commit uv.lock after
#
# Python packages come only from uv.lock: `uv sync --locked` installs what it lists (extras dev, full, train and cloud,
# the package itself editable) and removes anything else, so a new upstream release never changes what a
# fresh install gets. uv itself is pinned in the lock too and bootstrapped with pip from its hashes.
# System packages (apt-get, only when missing): python3 (>= 3.11) with venv; rubberband-cli (Rubber Band's
# command, the augmentation's stretcher with augment.stretcher: rubberband; the default loads the Rubber Band
# library from the locked pylibrb wheel at run time); libchromaprint-tools (fpcalc, the near-duplicate
# stage's audio fingerprint); espeak-ng (phonemizer's backend for lyric phonemes); ffmpeg (the libraries
# torchcodec decodes with, for Hugging Face datasets' Audio feature); festival with two diphone voices,
# fluidsynth and a GM soundfont (songcorpus synth's singing and accompaniment); chromium with its chromedriver
# (the browser the tests of songcorpus view's pages drive). All run as separate
# programs or libraries loaded at run time, so their GPL stays apart from this package.
# Audio decoding uses the FFmpeg and libsndfile libraries inside the PyAV and soundfile wheels.
set -euo pipefail
cd "$(dirname "$0")"

RELOCK=0
EXTRAS=(--extra dev --extra full --extra train --extra cloud)
while [ $# -gt 0 ]; do
  case "$1" in
    --relock) RELOCK=1 ;;
    --extra) [ $# -ge 2 ] || { echo "setup: --extra needs a name (the extras are in pyproject.toml: bench...)" >&2; exit 2; }
             EXTRAS+=(--extra "$2"); shift ;;
    -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; exit 0 ;;
    *) echo "setup: unknown option '$1' (see bash setup.sh --help)" >&2; exit 2 ;;
  esac
  shift
done

PY=""
for cand in python3.11 python3.12 python3.13 python3; do  # 3.11 first: the interpreter CI tests the lock on
  # pyenv shims exist for versions that are not active: run the probe quietly
  if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    PY="$cand"; break
  fi
done
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
APT_UPDATED=0
apt_install() {  # apt_install WHY PACKAGE...
  local why="$1"; shift
  echo "setup: installing $* with apt-get ($why)" >&2
  local log; log=$(mktemp)
  { [ "$APT_UPDATED" = 1 ] || $SUDO apt-get update -qq; } >"$log" 2>&1 && APT_UPDATED=1 &&
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >>"$log" 2>&1 ||
    { cat "$log" >&2; echo "setup: apt-get could not install $* (output above)" >&2; rm -f "$log"; exit 1; }
  rm -f "$log"
}
if [ -z "$PY" ] || ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  apt_install "Python with venv" python3 python3-venv python3-dev
  PY=python3
  "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "setup: songcorpus needs Python >= 3.11 (found $("$PY" --version)); install python3.11 and re-run" >&2; exit 1; }
fi
command -v rubberband >/dev/null 2>&1 || apt_install "augmentation's time stretch and pitch shift with augment.stretcher: rubberband" rubberband-cli
command -v fpcalc >/dev/null 2>&1 || apt_install "Chromaprint fingerprints for near-duplicate detection" libchromaprint-tools
command -v espeak-ng >/dev/null 2>&1 || apt_install "phonemizer's backend: lyric phonemes for training and PER" espeak-ng
command -v ffmpeg >/dev/null 2>&1 || apt_install "FFmpeg libraries for torchcodec: Hugging Face datasets' Audio feature" ffmpeg
{ command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; } ||
  apt_install "a headless browser for the tests of songcorpus view's pages" chromium chromium-driver
SYNTH_PACKAGES=(festival festvox-kallpc16k festvox-kdlpc16k fluidsynth musescore-general-soundfont-small)
dpkg -s "${SYNTH_PACKAGES[@]}" >/dev/null 2>&1 ||
  apt_install "songcorpus synth: Festival's singing voices, fluidsynth and a General MIDI soundfont" "${SYNTH_PACKAGES[@]}"

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi

# uv, at the version and hashes uv.lock records (it is in the lock's dev extra, so sync keeps it)
if ! .venv/bin/python - <<'EOF' 2>/dev/null
import sys, tomllib
from importlib.metadata import version
lock = tomllib.load(open("uv.lock", "rb"))
want = next(p["version"] for p in lock["package"] if p["name"] == "uv")
sys.exit(version("uv") != want)
EOF
then
  echo "setup: bootstrapping uv (the installer of the locked set) with pip" >&2
  req=$(mktemp)
  .venv/bin/python - "$req" <<'EOF'
import sys, tomllib
lock = tomllib.load(open("uv.lock", "rb"))
uv = next(p for p in lock["package"] if p["name"] == "uv")
hashes = " ".join(f"--hash={w['hash']}" for w in uv.get("wheels", []))
open(sys.argv[1], "w").write(f"uv=={uv['version']} {hashes}\n")
EOF
  PIP_CONSTRAINT="" .venv/bin/python -m pip install -qq --disable-pip-version-check --require-hashes --no-deps -r "$req"
  rm -f "$req"
fi

export UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=.venv
if [ "$RELOCK" = 1 ]; then
  echo "setup: re-resolving uv.lock against the newest releases" >&2
  .venv/bin/uv lock --upgrade
fi
# every run syncs (about a second when nothing changed): a venv that drifted from the lock is put back
if [ ! -f .venv/.songcorpus-installed ]; then
  echo "setup: installing the locked dependency set into .venv (torch is large: a few minutes the first time)" >&2
fi
# --locked: a pyproject.toml edited without `--relock` stops here instead of installing something untested.
# --compile-bytecode: every process (Ray and Beam workers, the tests' subprocesses) otherwise compiles the imported
# packages from source when it may not write .pyc files (PYTHONDONTWRITEBYTECODE, a read-only venv): 7.5 s of a
# 73-s benchmark run were spent there.
.venv/bin/uv sync --quiet --locked --compile-bytecode "${EXTRAS[@]}" --python .venv/bin/python
touch .venv/.songcorpus-installed
echo "setup: ready (.venv/bin/songcorpus)" >&2
