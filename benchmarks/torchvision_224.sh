#!/usr/bin/env bash
# Issue 8's torchvision journey at 224 px: a torchvision ResNet-18 state_dict saved with torch.save goes
# through import → slim --from → export → quantize → bench, on CIFAR-10 images resized to 224 px
# (written to a temporary folder, never committed). The checkpoint is torchvision's own initialization
# (no pretrained weights can be downloaded here), so the accuracies only show the journey works.
#
#   COMPRESS_DATA=../shared/datasets/cifar10-jpeg.tar.gz bash benchmarks/torchvision_224.sh [WORK_DIR]
set -euo pipefail
WORK=${1:-$(mktemp -d)}
: "${COMPRESS_DATA:?set COMPRESS_DATA to the CIFAR-10 copy}"
mkdir -p "$WORK"
cd "$WORK"
python - <<'PY'
import io, os, tarfile
from pathlib import Path
from PIL import Image
import torch, torchvision

# 3 classes x (40 train + 20 test) CIFAR-10 images, upscaled to 256 px JPEGs: an ImageNet-sized folder.
keep = {"cat": 0, "dog": 0, "ship": 0}
limits = {"train": 40, "test": 20}
with tarfile.open(os.environ["COMPRESS_DATA"]) as tar:
    for m in tar:
        parts = Path(m.name).parts
        if not m.isfile() or len(parts) < 3 or parts[-2] not in keep:
            continue
        split, cls = parts[-3], parts[-2]
        out = Path("imgs") / split / cls
        if split not in limits or (out.exists() and len(list(out.iterdir())) >= limits[split]):
            continue
        out.mkdir(parents=True, exist_ok=True)
        img = Image.open(io.BytesIO(tar.extractfile(m).read())).convert("RGB").resize((256, 256), Image.BICUBIC)
        img.save(out / Path(m.name).name, quality=90)
torch.manual_seed(0)
torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), "resnet18.pth")
PY
set -x
compress import resnet18.pth --arch resnet18 --input-size 224 --data imgs --mean 0.485,0.456,0.406 \
    --std 0.229,0.224,0.225 --out r18
# 1 epoch of 120 images is 8 steps: far too few for the quick preset's pull budget, so the paper's λ.
compress slim --from r18 --data imgs --percent 0.3 --sparsity 1e-4 --epochs 1 --finetune-epochs 1 --batch-size 16 --out run
compress export run/finetuned --onnx r18-slim.onnx --data imgs
compress export r18 --onnx r18.onnx --data imgs
compress quantize r18-slim.onnx --target cpu --data imgs --calib-images 32 --out r18-slim-int8.onnx
compress bench r18.onnx r18-slim.onnx r18-slim-int8.onnx --batch 1 --iters 30 --data imgs --report report
