#!/usr/bin/env bash
# Issue 11's CPU reference, slimming the trained baseline itself: VGG-19 ×0.25 on the shared CIFAR-10 copy
# (50k training images). The 30-epoch baseline (fast recipe) is trained first, unless OUT/baseline already
# holds it; then `compress slim --from` the baseline runs SPARSE_EPOCHS of sparse training (proximal L1,
# steered `auto`), prunes 50% and fine-tunes 15 epochs. Epochs in all: 30 + SPARSE_EPOCHS + 15, more than
# the reference's 30 + 15, because sparse training starts from the trained baseline.
#
#   COMPRESS_DATA=../shared/datasets/cifar10-jpeg.tar.gz bash benchmarks/cpu_reference_from_baseline.sh \
#       runs/cpu-ref [SPARSE_EPOCHS=15]
set -euo pipefail
OUT=${1:-runs/cpu-ref}
SPARSE=${2:-15}
: "${COMPRESS_DATA:?set COMPRESS_DATA to the CIFAR-10 copy (e.g. ../shared/datasets/cifar10-jpeg.tar.gz)}"
mkdir -p "$OUT"
if [ ! -f "$OUT/baseline/model.safetensors" ]; then
  compress train --arch vgg19 --width 0.25 --recipe fast --data cifar10 --epochs 30 --out "$OUT/baseline" \
    > "$OUT/baseline.log" 2>&1
fi
compress slim --preset paper --recipe fast --from "$OUT/baseline" --epochs "$SPARSE" --finetune-epochs 15 \
  --sparsity auto --percent 0.5 --data cifar10 --out "$OUT/from-baseline-s$SPARSE" > "$OUT/from-baseline-s$SPARSE.log" 2>&1
cat "$OUT/from-baseline-s$SPARSE/summary.md"
