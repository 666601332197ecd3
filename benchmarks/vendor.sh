#!/usr/bin/env bash
# Unpack the wheels the GPU machine lacks into benchmarks/vendor/ (git-ignored).
# Run HERE (it needs PyPI); gpu.sh puts benchmarks/vendor on PYTHONPATH there, where nothing may
# be installed and there is no network. The GPU machine has torch, torchvision, transformers
# (with regex, tqdm, huggingface_hub, safetensors, pyyaml) and timm; open_clip_torch also needs
# ftfy, which needs wcwidth. Versions are those of this project's virtualenv.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
PACKAGES=(open_clip_torch ftfy wcwidth)
VENDOR=benchmarks/vendor
WHEELS=$(mktemp -d)
trap 'rm -rf "$WHEELS"' EXIT
specs=()
for name in "${PACKAGES[@]}"; do
  version=$("$PY" -c "import importlib.metadata as m; print(m.version('$name'))")
  specs+=("$name==$version")
done
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --dest "$WHEELS" "${specs[@]}"
rm -rf "$VENDOR.tmp"
mkdir -p "$VENDOR.tmp"
for wheel in "$WHEELS"/*.whl; do
  case "$wheel" in
    *-none-any.whl) ;;
    # a stable-ABI build (wcwidth ships one) runs on any x86_64 Linux CPython >= its tag
    *-abi3-manylinux*x86_64*.whl) ;;
    *) echo "vendor.sh: $(basename "$wheel") is neither pure Python nor an abi3 x86_64 Linux wheel" >&2; exit 1 ;;
  esac
  "$PY" -m zipfile -e "$wheel" "$VENDOR.tmp"
done
rm -rf "$VENDOR"
mv "$VENDOR.tmp" "$VENDOR"
echo "vendor.sh: unpacked ${specs[*]} into $VENDOR ($(du -sh "$VENDOR" | cut -f1))"
