#!/usr/bin/env bash
# The CPU reference experiment of issue 2: VGG-19 at width 0.25 on the shared CIFAR-10 copy,
# 30 sparse epochs (λ = 1e-4) → prune 50% → 15 fine-tune epochs, plus a 30-epoch baseline
# without sparsity and two pruning ablations (1-channel floor, no β compensation).
#
#   COMPRESS_DATA=../shared/datasets/cifar10-jpeg.tar.gz bash benchmarks/cpu_reference.sh runs/cpu-ref
#
# Resumable: re-running continues from the last finished epoch of each stage.
set -euo pipefail
OUT=${1:-runs/cpu-ref}
: "${COMPRESS_DATA:?set COMPRESS_DATA to the CIFAR-10 copy (e.g. ../shared/datasets/cifar10-jpeg.tar.gz)}"
COMMON=(--arch vgg19 --width 0.25 --data cifar10 --recipe fast)

compress slim --preset paper "${COMMON[@]}" --epochs 30 --finetune-epochs 15 --finetune-lr 0.05 --percent 0.5 \
    --sparsity 1e-4 --out "$OUT/slim"
compress prune "$OUT/slim/sparse" --percent 0.5 --min-keep 0 --data cifar10 --out "$OUT/ablation-floor1"
compress prune "$OUT/slim/sparse" --percent 0.5 --no-compensate --data cifar10 --out "$OUT/ablation-nocomp"
compress train "${COMMON[@]}" --epochs 30 --out "$OUT/baseline"
for d in "$OUT/baseline" "$OUT/slim/sparse" "$OUT/slim/pruned" "$OUT/ablation-floor1" "$OUT/ablation-nocomp" "$OUT/slim/finetuned"; do
    compress info "$d" --json > "$d/info.json"
    python3 -c "import json,sys; m=json.load(open('$d/model.json')); print(f\"$d: acc {m['accuracy']:.4f} params {m['params']} macs {m['macs']}\")"
done
