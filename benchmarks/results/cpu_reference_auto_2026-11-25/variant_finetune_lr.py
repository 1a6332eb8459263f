"""Fine-tuning peak LR on a losslessly pruned CPU-reference model. Usage: python variant_finetune_lr.py SPARSE_DIR OUT LR"""
import sys
from pathlib import Path
from compress.pipeline import DataOptions, prune_model, finetune_model
from compress.training import Recipe

sparse, out, lr = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3])
data = DataOptions("cifar10")
if not (out / "pruned" / "model.json").exists():
    m = prune_model(sparse, out / "pruned", percent=0.5, data=data)
    print("pruned", m["accuracy"], m["pruning"]["accuracy_uncalibrated"], m["pruning"]["exact_removal"], m["params"])
t = finetune_model(out / "pruned", data, out / "finetuned", Recipe.finetuning("fast", epochs=15, lr=lr), progress=False)
print("finetuned", lr, t["accuracy"], t["params"])
