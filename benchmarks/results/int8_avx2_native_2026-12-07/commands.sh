set -euo pipefail
export COMPRESS_DATA=../shared/datasets/cifar10-jpeg.tar.gz
C=compress
R=runs/peers-quick-avx2/vgg19x0.25/seed0
{ date -u +%FT%TZ; lscpu | grep -m1 'Model name'; echo "flags: $(grep -o -w 'avx2\|avx512f\|avx512_vnni\|avx_vnni\|avx512_bf16\|amx_int8' /proc/cpuinfo | sort -u | tr '\n' ' ')"; python -c 'import onnxruntime, openvino; print("onnxruntime", onnxruntime.__version__, "openvino", openvino.__version__)'; } > machine.txt
for pair in plain=$R/pretrained slimmed=$R/toolkit/finetuned; do
  name=${pair%%=*}; dir=${pair#*=}
  [ -f $name-fp32.onnx ] || $C export $dir --onnx $name-fp32.onnx > $name-export.log 2>&1
  files=($name-fp32.onnx)
  for target in "cpu --cpu-isa avx2" "cpu --cpu-isa vnni" "trt"; do
    set -- $target; tag=$1${3:+-$3}
    [ -f $name-int8-$tag.onnx ] || $C quantize $dir --target $target --data cifar10 --out $name-int8-$tag.onnx > $name-int8-$tag.log 2>&1
    files+=($name-int8-$tag.onnx)
  done
  $C bench "${files[@]}" --data cifar10 --batch 1,32 --iters 200 --paired 30 --json > $name-bench.json 2> $name-bench.log
done
date -u +%FT%TZ >> machine.txt
