#!/usr/bin/env bash
# The GPU machine's side of benchmarks/gpu (README.md there says how it is called): install what the image
# lacks, from the carried folders, then run the window. Arguments go to run.py (e.g. --deadline-s 500).
#   .whl/   torch-pruning's wheel (the image has no torch-pruning and no way to download it)
#   .data/  cifar10-jpeg.tar.gz (../shared does not travel)
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
export COMPRESS_DATA="${COMPRESS_DATA:-$PWD/.data/cifar10-jpeg.tar.gz}"
export COMPRESS_CACHE="${COMPRESS_CACHE:-$PWD/runs/cache}"
PY="${PYTHON:-python3}"

ls .whl/torch_pruning-*.whl >/dev/null 2>&1 || { echo "device.sh: no .whl/torch_pruning-*.whl (carry .whl; benchmarks/gpu/README.md)"; exit 2; }
[ -f "$COMPRESS_DATA" ] || { echo "device.sh: no $COMPRESS_DATA (carry .data; benchmarks/gpu/README.md)"; exit 2; }
"$PY" -m pip install -q --no-index --no-deps --no-compile .whl/torch_pruning-*.whl || exit 2
# --no-deps: the core pins onnxruntime >= 1.32 and the image has 1.30 (only the torch paths run here).
# --no-build-isolation: there is no index to fetch setuptools from; the image's own builds the editable install.
if ! "$PY" -m pip install -q --no-deps --no-build-isolation -e . ; then
    # No usable setuptools: the same package layout as pyproject.toml's package-dir mapping, by symbolic links.
    shim=/tmp/cnn-compress-shim
    rm -rf "$shim" && mkdir -p "$shim/compress"
    for f in compress/*; do ln -s "$PWD/$f" "$shim/compress/"; done
    ln -s "$PWD/models" "$shim/compress/models"
    ln -s "$PWD/export" "$shim/compress/exporting"
    ln -s "$PWD/runtime" "$shim/compress/runtime"
    export PYTHONPATH="$shim${PYTHONPATH:+:$PYTHONPATH}"
    echo "device.sh: pip could not install the project; importing it through $shim"
fi
"$PY" -c "import compress.models, compress.runtime.report, compress.train, torch_pruning" || exit 2
mkdir -p runs
exec "$PY" benchmarks/gpu/run.py --out runs/gpu --export "${OUT:-runs/gpu-export}" "$@"
