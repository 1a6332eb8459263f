#!/usr/bin/env bash
# Issue 10, INT8 accuracy for the CPU target on a CPU *without* VNNI or AVX-512, when only a VNNI machine
# is at hand. ONNX Runtime picks its kernels from the CPUID instruction at run time, so running the
# accuracy pass under QEMU's user-mode emulator with `-cpu Haswell` (AVX2 and FMA, no AVX-512, no VNNI)
# makes it take the AVX2 int8 kernels, with their arithmetic (vpmaddubsw's int16 saturation included).
# The accuracies are those of the AVX2 kernels; the timings of the emulated run mean nothing and are not
# reported. /proc/cpuinfo is the host's under emulation, so the report header's CPU features are the host's:
# the emulated ISA is recorded separately, from numpy's own CPUID probe.
#
# Needs qemu-user (Debian: `apt-get install qemu-user`), the training extra (to export and quantize) and
# trained model directories. Export and quantization run natively; only the accuracy pass is emulated.
#
#   COMPRESS_DATA=../shared/datasets/cifar10-jpeg.tar.gz bash benchmarks/int8_avx2_emulated.sh \
#       OUT_DIR NAME=MODEL_DIR [NAME=MODEL_DIR ...]
set -euo pipefail
OUT=$1; shift
: "${COMPRESS_DATA:?set COMPRESS_DATA to the CIFAR-10 copy (e.g. ../shared/datasets/cifar10-jpeg.tar.gz)}"
: "${EMULATED_CPU:=Haswell}"
QEMU=$(command -v qemu-x86_64) || { echo "qemu-x86_64 not found: apt-get install qemu-user" >&2; exit 1; }
PY=$(python -c 'import sys; print(sys.executable)')
mkdir -p "$OUT"
{
  date -u +%FT%TZ
  lscpu | grep -m1 'Model name'
  echo "host flags: $(grep -o -w 'avx2\|avx512f\|avx512_vnni\|avx_vnni\|avx512_bf16' /proc/cpuinfo | sort -u | tr '\n' ' ')"
  echo "emulator: $($QEMU --version | head -1), -cpu $EMULATED_CPU"
  echo -n "emulated CPUID as numpy sees it: "
  "$QEMU" -cpu "$EMULATED_CPU" "$PY" -c 'from numpy._core._multiarray_umath import __cpu_features__ as f
print({k: f[k] for k in ("AVX2", "FMA3", "AVX512F", "AVX512_CLX", "AVX512_ICL", "AVX512_SPR")})' 2>/dev/null
  python -c 'import onnxruntime; print("onnxruntime", onnxruntime.__version__)'
} > "$OUT/machine.txt"
cat "$OUT/machine.txt"
for pair in "$@"; do
  name=${pair%%=*}; dir=${pair#*=}
  # an interrupted run resumes: files already written are kept
  [ -f "$OUT/$name-fp32.onnx" ] || compress export "$dir" --onnx "$OUT/$name-fp32.onnx" > "$OUT/$name-export.log" 2>&1
  files=("$OUT/$name-fp32.onnx")
  for target in "cpu --cpu-isa avx2" "cpu --cpu-isa vnni" "trt"; do
    set -- $target; tag=$1${3:+-$3}
    [ -f "$OUT/$name-int8-$tag.onnx" ] || compress quantize "$dir" --target $target --data cifar10 \
      --out "$OUT/$name-int8-$tag.onnx" > "$OUT/$name-int8-$tag.log" 2>&1
    files+=("$OUT/$name-int8-$tag.onnx")
  done
  BENCH=(bench "${files[@]}" --data cifar10 --batch 1 --iters 2 --warmup 1 --threads 1 --json)
  python -m compress.cli "${BENCH[@]}" > "$OUT/$name-native.json"
  "$QEMU" -cpu "$EMULATED_CPU" "$PY" -m compress.cli "${BENCH[@]}" 2>/dev/null > "$OUT/$name-emulated.json"
done
python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = ["| model | file | native kernels (host) | emulated AVX2 kernels | loss vs FP32, emulated (pp) | images |",
        "| --- | --- | ---: | ---: | ---: | ---: |"]
for native in sorted(out.glob("*-native.json")):
    name = native.name[:-len("-native.json")]
    emulated = json.loads((out / f"{name}-emulated.json").read_text())["variants"]
    native = json.loads(native.read_text())["variants"]
    fp32 = emulated[0]["accuracy"]["accuracy"]
    for n, e in zip(native, emulated):
        a, b = n["accuracy"], e["accuracy"]
        rows.append(f"| {name} | {Path(e['artifact']).name} | {a['accuracy']:.2%} | {b['accuracy']:.2%} | "
                    f"{100 * (fp32 - b['accuracy']):+.2f} | {b['images']} |")
(out / "table.md").write_text("\n".join(rows) + "\n")
print("\n".join(rows))
PY
rm -f "$OUT"/*.onnx
