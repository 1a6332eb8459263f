#!/usr/bin/env bash
# The GPU machine's side of benchmarks/gpu (README.md there says how it is called): install what the image
# lacks, from the carried folders, then run the window. Arguments go to run.py (e.g. --deadline-s 500).
#   .whl/   torch-pruning's wheel (the image has no torch-pruning and no way to download it) and setuptools'
#           (the project's build backend, for pip's isolated build)
#   .data/  cifar10-jpeg.tar.gz (../shared does not travel)
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
export COMPRESS_DATA="${COMPRESS_DATA:-$PWD/.data/cifar10-jpeg.tar.gz}"
export COMPRESS_CACHE="${COMPRESS_CACHE:-$PWD/runs/cache}"
# Absolute before the fallback below changes folder: a relative path from the caller would resolve there.
# -s: a venv's python is a link to the base interpreter, and following it would leave the venv.
PY="$(command -v "${PYTHON:-python3}")" || { echo "device.sh: no Python at ${PYTHON:-python3}"; exit 2; }
PY="$(realpath -s -m "$PY")"
COMPRESS_DATA="$(realpath -s -m "$COMPRESS_DATA")"
COMPRESS_CACHE="$(realpath -s -m "$COMPRESS_CACHE")"
EXPORT="$(realpath -s -m "${OUT:-runs/gpu-export}")"

ls .whl/torch_pruning-*.whl >/dev/null 2>&1 || { echo "device.sh: no .whl/torch_pruning-*.whl (carry .whl; benchmarks/gpu/README.md)"; exit 2; }
# Without it the build falls back on the image's own setuptools (it has one): a warning, not the window's end.
ls .whl/setuptools-*.whl >/dev/null 2>&1 || echo "device.sh: no .whl/setuptools-*.whl; trying the image's setuptools"
[ -f "$COMPRESS_DATA" ] || { echo "device.sh: no $COMPRESS_DATA (carry .data; benchmarks/gpu/README.md)"; exit 2; }
"$PY" -m pip install -q --no-index --no-deps --no-compile .whl/torch_pruning-*.whl || exit 2
# --no-deps: the core pins onnxruntime >= 1.32 and the image has 1.30 (only the torch paths run here).
# The build runs in pip's isolated environment with the carried setuptools wheel (--no-index: nothing can be
# fetched there); the image's own setuptools is the second try (2026-12-05: a venv's setuptools 65.5 could
# not build it, "invalid command 'bdist_wheel'").
if "$PY" -m pip install -q --no-deps --no-index --find-links .whl -e . ; then
    :
elif "$PY" -m pip install -q --no-deps --no-build-isolation -e . ; then
    :
else
    # No build at all: the package layout of pyproject.toml's package-dir mapping, by symbolic links, in a
    # folder the run starts from, so that it comes before the checkout's own compress/ (which lacks the
    # mapped subpackages) for `python -c` and `-m`, torchrun's workers included: those put the current
    # folder first on sys.path.
    shim=/tmp/cnn-compress-shim
    rm -rf "$shim" && mkdir -p "$shim/compress" "$PWD/runs"
    for f in compress/*; do ln -s "$PWD/$f" "$shim/compress/"; done
    ln -s "$PWD/models" "$shim/compress/models"
    ln -s "$PWD/export" "$shim/compress/exporting"
    ln -s "$PWD/runtime" "$shim/compress/runtime"
    for f in benchmarks runs .data .whl; do ln -s "$PWD/$f" "$shim/$f"; done
    export PYTHONPATH="$shim${PYTHONPATH:+:$PYTHONPATH}"
    cd "$shim" || exit 2
    echo "device.sh: pip could not install the project; importing it through $shim"
fi
"$PY" -c "import compress, compress.models, compress.runtime.report, torch_pruning; compress.train, compress.slim" || exit 2
mkdir -p runs
exec "$PY" benchmarks/gpu/run.py --out runs/gpu --export "$EXPORT" "$@"
