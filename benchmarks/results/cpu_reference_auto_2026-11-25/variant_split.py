"""Issue 11 CPU reference split variant. Usage: python variant_split.py SPARSE_EPOCHS FT_EPOCHS OUT"""
import sys
from compress.pipeline import DataOptions, slim, summary_markdown
from compress.sparsity import SparsityConfig
from compress.training import Recipe

se, fe, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
s = slim("vgg19", DataOptions("cifar10"), out, percent=0.5, sparsity=SparsityConfig(),
         train_recipe=Recipe.named("fast", epochs=se), finetune_recipe=Recipe.finetuning("fast", epochs=fe),
         arch_kwargs={"width": 0.25}, pretrain_recipe=Recipe.named("fast", epochs=15), progress=False)
print(summary_markdown(s))
