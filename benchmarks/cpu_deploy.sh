#!/usr/bin/env bash
# Deployment half of the CPU reference experiment, on the models that cpu_reference.sh trained:
# ONNX export with full-test-set parity, INT8 Q/DQ, weight sharing + Huffman, ONNX Runtime CPU latency.
#
#   COMPRESS_DATA=../shared/datasets/cifar10-jpeg.tar.gz bash benchmarks/cpu_deploy.sh runs/cpu-ref
set -euo pipefail
RUN=${1:-runs/cpu-ref}
: "${COMPRESS_DATA:?set COMPRESS_DATA to the CIFAR-10 copy}"
D="$RUN/deploy"
mkdir -p "$D"

# FP32 ONNX, parity-checked on all 10,000 test images (ONNX Runtime accuracy vs torch accuracy).
compress export "$RUN/baseline" --onnx "$D/baseline.onnx" --data cifar10 | tee "$D/export-baseline.txt"
compress export "$RUN/slim/finetuned" --onnx "$D/slim.onnx" --data cifar10 | tee "$D/export-slim.txt"

# INT8 Q/DQ (symmetric, per-channel weights), accuracy of the Q/DQ graph itself on the full test set.
compress quantize "$D/slim.onnx" --data cifar10 --out "$D/slim-int8.onnx" --method percentile --json > "$D/quantize-slim.json"
compress quantize "$D/baseline.onnx" --data cifar10 --out "$D/baseline-int8.onnx" --method percentile --json > "$D/quantize-baseline.json"

# Deep Compression on the slimmed model: weight pruning, k-means sharing, Huffman.
compress share "$RUN/slim/finetuned" --out "$D/shared" --bits conv=8,fc=5 --prune-weights 0.5 \
    --finetune-epochs 2 --data cifar10 --json > "$D/share.json"

# Latency on ONNX Runtime CPU, batch 1 and 32, ratios against the first artifact.
compress bench "$D/baseline.onnx" "$D/slim.onnx" "$D/slim-int8.onnx" "$D/baseline-int8.onnx" \
    --backend ort-cpu --batch 1,32 --iters 200 --data cifar10 \
    --model-dir "$D/baseline.onnx=$RUN/baseline" --model-dir "$D/slim.onnx=$RUN/slim/finetuned" --report "$D/report"
