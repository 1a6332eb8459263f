#!/usr/bin/env bash
# The CPU reference experiment of issue 2: VGG-19 at width 0.25 on the shared CIFAR-10 copy,
# 30 sparse epochs (λ = 1e-4) → prune 50% → 15 fine-tune epochs, plus a 30-epoch baseline
# without sparsity and three pruning ablations.
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
# Ablations of the pruning step (accuracy right after pruning, no fine-tuning):
# as the independent reference implementation prunes (1-channel floor, no compensation, no recalibration),
compress prune "$OUT/slim/sparse" --percent 0.5 --min-keep 0 --no-compensate --recalibrate 0 --data cifar10 --out "$OUT/ablation-reference-like"
# the default floor without BN recalibration, and a 1-channel floor with everything else on.
compress prune "$OUT/slim/sparse" --percent 0.5 --recalibrate 0 --data cifar10 --out "$OUT/ablation-norecal"
compress prune "$OUT/slim/sparse" --percent 0.5 --min-keep 0 --data cifar10 --out "$OUT/ablation-floor1"
compress train "${COMMON[@]}" --epochs 30 --out "$OUT/baseline"
for d in "$OUT/baseline" "$OUT/slim/sparse" "$OUT/slim/pruned" "$OUT/ablation-reference-like" "$OUT/ablation-norecal" "$OUT/ablation-floor1" "$OUT/slim/finetuned"; do
    compress info "$d" --json > "$d/info.json"
    python3 -c "import json,sys; m=json.load(open('$d/model.json')); print(f\"$d: acc {m['accuracy']:.4f} params {m['params']} macs {m['macs']}\")"
done
