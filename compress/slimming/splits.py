"""Splits along channels whose sizes must follow the pruning (torch-pruning's graph gets these wrong).

After pruning, the network's own code splits again. Where the sizes come from the tensor itself
(`x.chunk(2, 1)` in ultralytics' C2f and C3k2), equal parts stay right as long as every part keeps as
many channels as the others: a constraint on the decision. Where the code passes sizes it keeps in a
module attribute (timm's `MixedConv2d.splits`, `C2PSA.c` in `x.split((self.c, self.c), 1)`, Res2Net's
`width`, or their sum: timm's CSP stages split by `self.expand_chs // 2`), that attribute is found once, on the module that called the split, and rewritten after
pruning. A split whose sizes come from anywhere else (a constant in the code, an expression) keeps its
channels, and the plan says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from compress.slimming.channels import ChannelMap, SplitPart


@dataclass
class SplitBinding:
    split: SplitPart
    module_name: str
    attribute: str | None  # None: the sizes follow the tensor (chunk)
    parts_per_unit: int = 1  # the attribute holds this many parts' worth (timm's CSP: expand_chs // 2)


def _attribute_for(module: nn.Module, sizes: list[int]) -> tuple[str | None, int]:
    """The one plain attribute of `module` that holds `sizes` (a list or tuple), or their common size, or
    (failing both) their sum (timm's CSP stages split by `self.expand_chs // 2`); and how many parts it holds."""
    listed = [k for k, v in vars(module).items()
              if isinstance(v, (list, tuple)) and not isinstance(v, bool) and list(v) == sizes]
    if len(listed) == 1:
        return listed[0], 1
    if len(set(sizes)) == 1:
        for parts in (1, len(sizes)):
            ints = [k for k, v in vars(module).items()
                    if isinstance(v, int) and not isinstance(v, bool) and not k.startswith("_") and v == sizes[0] * parts]
            if len(ints) == 1:
                return ints[0], parts
            if ints:
                break  # ambiguous: which one the code uses cannot be told
    return None, 1


def bind_splits(cm: ChannelMap, modules: dict[str, nn.Module]) -> list[SplitBinding]:
    """How each split's sizes follow the pruning; splits that cannot follow freeze their channels."""
    bindings = []
    for sp in cm.splits:
        node = sp.node
        sizes = [len(p) for p in sp.parts]
        if node.op == "chunk" and sp.equal:
            bindings.append(SplitBinding(sp, node.scope, None))
            continue
        owner = modules.get(node.scope)
        attribute, parts = _attribute_for(owner, sizes) if owner is not None else (None, 1)
        if attribute is None:
            cm.freeze(node.inputs[0], f"the split sizes {sizes} in {node.where} are fixed in its code")
            continue
        sp.owner, sp.attribute = node.scope, attribute
        if isinstance(getattr(owner, attribute), int):
            sp.equal = True  # one size for every part: they must stay equal
        bindings.append(SplitBinding(sp, node.scope, attribute, parts))
    return bindings


def rewrite_split_sizes(model: nn.Module, bindings: list[SplitBinding], kept_per_part) -> None:
    """Set each bound attribute to the sizes its split must now produce (`kept_per_part(split)`)."""
    modules = dict(model.named_modules())
    for b in bindings:
        if b.attribute is None:
            continue
        sizes = kept_per_part(b.split)
        owner = modules[b.module_name]
        old = getattr(owner, b.attribute)
        if isinstance(old, int):
            new = sizes[0] * b.parts_per_unit
        else:
            new = type(old)(sizes)
        setattr(owner, b.attribute, new)
