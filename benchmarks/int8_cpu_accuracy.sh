#!/usr/bin/env bash
# Issue 10, INT8 for the CPU target: FP32 vs INT8 accuracy of trained VGG-19 ×0.25 models, measured in
# ONNX Runtime's own optimized CPU session (the int8 kernels that will run the file), on all 10k test
# images, for each instruction-set recipe. The recipe for another ISA is still *run* on this machine's
# kernels: its figure is that recipe's accuracy here, not on a CPU of that kind.
#
#   COMPRESS_DATA=../shared/datasets/cifar10-jpeg.tar.gz bash benchmarks/int8_cpu_accuracy.sh \
#       OUT_DIR NAME=MODEL_DIR [NAME=MODEL_DIR ...]
set -euo pipefail
OUT=$1; shift
: "${COMPRESS_DATA:?set COMPRESS_DATA to the CIFAR-10 copy (e.g. ../shared/datasets/cifar10-jpeg.tar.gz)}"
: "${ISAS:=vnni avx2}"
mkdir -p "$OUT"
{ date -u +%FT%TZ; lscpu | grep -m1 'Model name'; grep -o -w 'avx2\|avx512f\|avx512_vnni\|avx_vnni\|avx512_bf16' /proc/cpuinfo | sort -u | tr '\n' ' '; echo; } > "$OUT/machine.txt"
for pair in "$@"; do
  name=${pair%%=*}; dir=${pair#*=}
  for isa in $ISAS; do
    compress quantize "$dir" --target cpu --cpu-isa "$isa" --data cifar10 --out "$OUT/$name-$isa.onnx" \
      > "$OUT/$name-$isa.log" 2>&1
  done
done
python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = ["| model | recipe (ISA) | FP32 | INT8 (ORT kernels) | drop (pp) | top-1 agreement | images |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
for q in sorted(out.glob("*.quant.json")):
    r = json.loads(q.read_text()); a = r["accuracy"]; name, isa = q.name[:-len(".quant.json")].rsplit("-", 1)
    rows.append(f"| {name} | {isa} | {a['fp32']:.2%} | {a['int8']:.2%} | {100 * a['drop']:+.2f} | "
                f"{a['top1_agreement']:.2%} | {a['images']} |")
(out / "table.md").write_text("\n".join(rows) + "\n")
print("\n".join(rows))
PY
rm -f "$OUT"/*.onnx
