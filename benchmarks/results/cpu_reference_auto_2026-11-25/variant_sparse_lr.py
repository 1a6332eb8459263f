"""Issue 11 CPU reference variant: sparse-fine-tuning peak LR. Usage: python variant_sparse_lr.py LR OUT"""
import sys
from compress.pipeline import DataOptions, slim
from compress.sparsity import SparsityConfig
from compress.training import Recipe

lr, out = float(sys.argv[1]), sys.argv[2]
pre = Recipe.named("fast", epochs=15)
sparse = Recipe.named("fast", epochs=15, lr=lr)
ft = Recipe.finetuning("fast", epochs=15)
s = slim("vgg19", DataOptions("cifar10"), out, percent=0.5, sparsity=SparsityConfig(), train_recipe=sparse,
         finetune_recipe=ft, arch_kwargs={"width": 0.25}, pretrain_recipe=pre, progress=False)
from compress.pipeline import summary_markdown
print(summary_markdown(s))
