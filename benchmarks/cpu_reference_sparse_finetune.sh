#!/usr/bin/env bash
# Issue 11's CPU reference with the recipe the sparsity study chose: VGG-19 ×0.25 on the shared CIFAR-10
# copy (50k training images), 15 plain epochs + 15 sparse epochs (proximal L1, steered `auto`) = the
# reference's 30 sparse epochs, prune 50%, 15 fine-tuning epochs; and the 30-epoch baseline with the same
# recipe. The two runs go side by side with one thread each; each resumes where it stopped.
#
#   COMPRESS_DATA=../shared/datasets/cifar10-jpeg.tar.gz bash benchmarks/cpu_reference_sparse_finetune.sh runs/cpu-ref
set -euo pipefail
OUT=${1:-runs/cpu-ref}
: "${COMPRESS_DATA:?set COMPRESS_DATA to the CIFAR-10 copy (e.g. ../shared/datasets/cifar10-jpeg.tar.gz)}"
mkdir -p "$OUT"
COMMON=(--arch vgg19 --width 0.25 --recipe fast --data cifar10)
OMP_NUM_THREADS=1 compress train "${COMMON[@]}" --epochs 30 --out "$OUT/baseline" > "$OUT/baseline.log" 2>&1 &
OMP_NUM_THREADS=1 compress slim --preset paper "${COMMON[@]}" --pretrain-epochs 15 --epochs 15 --finetune-epochs 15 \
    --sparsity auto --percent 0.5 --out "$OUT/slim" > "$OUT/slim.log" 2>&1 &
wait
compress info "$OUT/baseline" --json > "$OUT/baseline-info.json"
cat "$OUT/slim/summary.md"
