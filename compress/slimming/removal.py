"""What a decision removes, layer by layer, in each layer's own channel numbering (before pruning).

Everything downstream reads this one record: β compensation (which inputs each consumer loses), the
physical removal, the self-check's silenced reference, and the plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Removal:
    classes: set[int]
    out: dict[str, list[int]] = field(default_factory=dict)  # conv/linear/depthwise/BN: output channels removed
    inputs: dict[str, list[int]] = field(default_factory=dict)  # consumers (not depthwise): input channels removed
    bn: dict[str, list[int]] = field(default_factory=dict)  # BN (selections too): channels removed
    selections: dict[str, list[int]] = field(default_factory=dict)  # selecting BN -> features kept
    split_sizes: dict[int, list[int]] = field(default_factory=dict)  # id(split) -> sizes after pruning
    raw: dict[str, list[int]] = field(default_factory=dict)  # layers whose input weights gate removed channels

    @property
    def empty(self) -> bool:
        return not self.classes


def removal_of(units) -> Removal:
    analysis = units.analysis
    removed: set[int] = set()
    for u in [*units.groups, *units.selections]:
        kept = {int(u.class_of[i]) for i in u.keep}
        removed.update(int(c) for c in u.class_of.tolist() if int(c) not in kept)
    r = Removal(removed)
    if not removed:
        return r
    mask = np.zeros(analysis.cmap.size, dtype=bool)
    mask[list(removed)] = True
    cuts = analysis.cmap.cuts
    for layer in analysis.cmap.layers:
        if layer.kind == "frozen":
            continue
        gone_out = np.flatnonzero(mask[analysis.classes_of(layer.out_value)]).tolist()
        gone_in = np.flatnonzero(mask[analysis.classes_of(layer.in_value)]).tolist()
        if layer.kind == "bn":
            if gone_out:
                r.bn[layer.name] = gone_out
            if layer.module in cuts and gone_out:
                r.selections[layer.name] = sorted(set(range(layer.out_value.channels)) - set(gone_out))
            continue
        if gone_out:
            r.out[layer.name] = gone_out
        if gone_in and layer.kind != "depthwise":
            r.inputs[layer.name] = gone_in
    for sp in analysis.cmap.splits:
        src = analysis.classes_of(sp.node.inputs[0])
        r.split_sizes[id(sp)] = [int((~mask[src[p.start:p.stop]]).sum()) for p in sp.parts]
    raw_readers = {n for g in units.groups for n in g.raw_readers}
    r.raw = {n: idx for n, idx in r.inputs.items() if n in raw_readers}
    return r
