"""Which groups' channels are gated by their BatchNorms: with γ = 0 they reach every consumer as constants.

A channel that also reaches a layer without passing a BN (the residual stream feeding a projection
shortcut of a pre-activation ResNet, a convolution whose output is added in without a BN) keeps carrying
information when its γ are zero, so removing it would change the network: such groups are not pruned.

Most groups show it in their structure, and cost nothing: every layer that makes the group's channels
feeds only BNs of the group, and no op multiplies the channels or adds a tensor broadcast over them; or,
walking back from every consumer, what it reads is computed from the group's BN outputs alone (a
squeeze-and-excitation gate computed from the group itself). The others are checked with one forward
each on a small probe batch, the group's γ zeroed, reading the consumers' inputs with hooks. One forward per group was the
whole cost before (10 to 14 minutes for YOLOv8n on two cores); now only these few pay it.
"""

from __future__ import annotations

import torch
from torch import nn

from compress.slimming import channels as ch

_MULTIPLYING = ch.ELEMENTWISE - {"add", "sub", "rsub"}


def _touched(analysis, nodes) -> set[int]:
    found: set[int] = set()
    for node in nodes:
        for v in [*node.inputs, *node.outputs]:
            found.update(int(c) for c in analysis.classes_of(v))
    return found


def structurally_gated(analysis, units) -> dict[int, bool]:
    """id(group) -> True when the structure alone shows the group is gated."""
    cuts = analysis.cmap.cuts
    bn_modules = {layer.module for layer in analysis.cmap.layers if layer.kind == "bn" and layer.module not in cuts}
    multiplied = _touched(analysis, [n for n in analysis.trace.nodes
                                     if n.op in _MULTIPLYING or n in analysis.cmap.broadcast_nodes])
    producers_ok: dict[int, bool] = {}
    for layer in analysis.cmap.layers:
        if layer.kind not in ("conv", "linear", "grouped"):
            continue
        readers = layer.out_value.readers
        ok = bool(readers) and all(r.op == "layer" and r.module in bn_modules for r in readers)
        for c in set(analysis.classes_of(layer.out_value).tolist()):
            producers_ok[c] = producers_ok.get(c, True) and ok
    result = {}
    for g in units.groups:
        cls = set(g.class_of.tolist())
        result[id(g)] = all(producers_ok.get(c, True) for c in cls) and not cls & multiplied
    return result


def _depends_only_on_group(analysis, classes: set[int], v, bn_outputs: set, memo: dict) -> bool:
    """True when tensor `v` is computed from the group's BN outputs alone (and constants): with those
    silenced it is a constant. A squeeze-and-excitation gate is: it is computed from the group itself."""
    if v.id in memo:
        return memo[v.id]
    memo[v.id] = False  # a cycle cannot occur in a forward, but an unfinished answer must not be True
    if v.id in bn_outputs or v.kind in ("param", "const"):
        result = True
    elif v.kind == "input" or v.producer is None:
        result = False
    else:
        node = v.producer
        ins = node.inputs
        if node.op in ("cat", "concat", "concatenate"):  # only the parts that carry the group's channels
            ins = [u for u in ins if set(analysis.classes_of(u).tolist()) & classes]
        result = bool(ins) and all(_depends_only_on_group(analysis, classes, u, bn_outputs, memo) for u in ins)
    memo[v.id] = result
    return result


def gated_by_structure_and_values(analysis, classes: set[int]) -> bool:
    """Every consumer input carrying these channels is computed from their BNs alone."""
    bn_outputs = {layer.out_value.id for layer in analysis.cmap.layers
                  if layer.kind == "bn" and layer.module not in analysis.cmap.cuts
                  and set(analysis.classes_of(layer.out_value).tolist()) <= classes}
    memo: dict = {}
    for layer in analysis.cmap.layers:
        if layer.kind in ("conv", "linear", "grouped") and set(analysis.classes_of(layer.in_value).tolist()) & classes:
            if not _depends_only_on_group(analysis, classes, layer.in_value, bn_outputs, memo):
                return False
    return True


def consumers_of(analysis, classes: set[int]) -> dict[str, list[int]]:
    """Layers that read `classes` as inputs (not depthwise: those carry them), with the input indices."""
    found = {}
    for layer in analysis.cmap.layers:
        if layer.kind in ("conv", "linear", "grouped"):
            cls = analysis.classes_of(layer.in_value)
            idx = [i for i, c in enumerate(cls.tolist()) if c in classes]
            if idx:
                found[layer.name] = idx
    return found


def bn_channels_of(analysis, classes: set[int]) -> dict[str, list[int]]:
    """BN layers (selections' too) whose output channels lie in `classes`, with the channel indices."""
    found = {}
    for layer in analysis.cmap.layers:
        if layer.kind == "bn" or layer.module in analysis.cmap.cuts:
            cls = analysis.classes_of(layer.out_value)
            idx = [i for i, c in enumerate(cls.tolist()) if c in classes]
            if idx:
                found[layer.name] = idx
    return found


@torch.no_grad()
def varying_consumers(model: nn.Module, analysis, classes: set[int], probe: torch.Tensor) -> list[str]:
    """The consumers of `classes` whose inputs at them still vary when the γ of `classes` are zero."""
    modules = dict(model.named_modules())
    consumers = consumers_of(analysis, classes)
    saved = {}
    for name, idx in bn_channels_of(analysis, classes).items():
        bn = modules[name]
        if bn.affine:
            saved[bn] = bn.weight.detach().clone()
            bn.weight[torch.as_tensor(idx)] = 0.0
    varying = []

    def check(mod, inputs):
        x = inputs[0]
        idx = torch.as_tensor(consumers[names[mod]], device=x.device)
        sel = x.index_select(1, idx).transpose(0, 1).reshape(idx.numel(), -1)
        spread = sel.max(dim=1).values - sel.min(dim=1).values
        if bool((spread > 1e-5 * (1 + sel.abs().max(dim=1).values)).any()):
            varying.append(names[mod])

    names = {modules[n]: n for n in consumers}
    hooks = [modules[n].register_forward_pre_hook(check) for n in consumers]
    try:
        model(probe)
    finally:
        for h in hooks:
            h.remove()
        for bn, w in saved.items():
            bn.weight.copy_(w)
    return varying


def _weight_gated(model: nn.Module, names: list[str]) -> bool:
    """Layers whose input weights can stand in for a BN gate: zeroing the weights of an input channel
    removes it from the output (a plain convolution or linear layer, not a grouped one)."""
    modules = dict(model.named_modules())
    return bool(names) and all(
        (isinstance(modules[n], nn.Conv2d) and modules[n].groups == 1) or isinstance(modules[n], nn.Linear)
        for n in names)


def _components(analysis, groups: list) -> list[list]:
    """Groups joined by a BN that scales channels of both (timm's MixedConv2d splits one expansion into
    several groups; one BN and one squeeze-and-excitation gate then read them all): silenced together,
    as one pruning silences them, their gate is a constant too."""
    owner = {int(c): i for i, g in enumerate(groups) for c in g.class_of.tolist()}
    parent = list(range(len(groups)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for layer in analysis.cmap.layers:
        if layer.kind == "bn" and layer.module not in analysis.cmap.cuts:
            hit = sorted({owner[c] for c in analysis.classes_of(layer.out_value).tolist() if c in owner})
            for j in hit[1:]:
                parent[find(j)] = find(hit[0])
    found: dict[int, list] = {}
    for i, g in enumerate(groups):
        found.setdefault(find(i), []).append(g)
    return list(found.values())


def keep_gated(model: nn.Module, units, probe: torch.Tensor) -> None:
    """Drop the groups whose channels are not gated by their BNs, checking by forward only where needed.

    A shared tensor narrowed as a group (`shared="narrow"`) may also feed plain convolutions without a
    BN (a pre-activation ResNet's projection shortcut reads the raw stream): their input weights then
    join the gate (`raw_readers`); removing a channel means its γ and those weights are zero."""
    analysis = units.analysis
    structural = structurally_gated(analysis, units)
    verdict = {id(g): True for g in units.groups if structural[id(g)]}
    for component in _components(analysis, [g for g in units.groups if not structural[id(g)]]):
        classes = {int(c) for g in component for c in g.class_of.tolist()}
        if gated_by_structure_and_values(analysis, classes):
            verdict.update({id(g): True for g in component})
            continue
        varying = varying_consumers(model, analysis, classes, probe)
        narrowed = any(set(g.bn_names) & analysis.narrowed_bns for g in component)
        if varying and narrowed and _weight_gated(model, varying):
            reads = {n: set(analysis.classes_of(analysis.layers[n].in_value).tolist()) for n in varying}
            for g in component:
                own = {int(c) for c in g.class_of.tolist()}
                g.raw_readers = [n for n in varying if own & reads[n]]
            varying = []
        verdict.update({id(g): not varying for g in component})
    kept = []
    for g in units.groups:
        if verdict[id(g)]:
            kept.append(g)
        else:
            units.skipped.append({"layers": [g.root_name], "channels": int(g.scores.numel()),
                                  "reason": "with γ = 0 their channels still carry information to a later layer "
                                            "(not gated by their BatchNorms)"})
    units.groups = kept
