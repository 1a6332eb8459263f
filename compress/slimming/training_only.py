"""Layers that run only in training mode, such as GoogLeNet's and Inception v3's auxiliary classifiers.

Pruning follows the eval-mode forward, so such layers would keep their old widths: the pruned network
would pass its self-check and then fail at the first training step. `modules_run` runs one forward per
input, in training mode where asked (compress.slimming.other_inputs runs the example so, and other inputs
in eval), and leaves the model as it was: buffers such as BN statistics, parameters (a layer
may initialise itself from its first training batch, as Glow's ActNorm does), each module's attributes
that hold plain values (such a layer's "initialized" flag), each module's mode, and the random generators
of the CPU and of the CUDA devices involved (not other accelerators' generators, nor attributes holding
other objects). `not_in_trace` compares what ran with the eval trace.
"""

from __future__ import annotations

import torch
from torch import nn

from compress.slimming.restore import modes_of, put_modes
from compress.slimming.trace import LAYER_TYPES


def modules_run(model: nn.Module, runs: list[tuple[torch.Tensor, bool]]) -> list[set[str]]:
    """Per (input, training) of `runs`, the names of the modules one forward runs, in training mode where
    asked (BNs normalize as in eval), up to an error where it stops; the model is left as it was (the
    module docstring says what that covers). Where a training-mode forward stops with an error, the
    modules that ran until then: an auxiliary head too small for the example still shows, while a forward
    that refuses training mode at its top (a detector that wants targets) shows nothing held against the
    model."""
    names = {m: n for n, m in model.named_modules()}
    ran: set[str] = set()
    found: list[set[str]] = []
    hooks = [m.register_forward_pre_hook(lambda m, _a: ran.add(names[m])) for m in model.modules()]
    modes = modes_of(model)
    # The tensor objects themselves too: a forward may assign a buffer anew instead of writing into it.
    buffers = [(m, key, b, b.detach().clone()) for m in model.modules() for key, b in m._buffers.items()
               if b is not None]
    params = [(m, key, p, p.detach().clone()) for m in model.modules() for key, p in m._parameters.items()
              if p is not None]
    plain = [(m, _plain_attributes(m)) for m in model.modules()]
    devices = sorted({t.device.index or 0 for t in [*(x for x, _ in runs), *model.parameters()] if t.is_cuda})
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            for x, training in runs:
                model.train(training)
                # Which modules run is decided by the model's own flags, and then one image is enough (a
                # training-mode BN after global pooling wants two, which doubled the cost).
                for m in model.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.eval()
                ran.clear()
                try:
                    model(x)
                except Exception:
                    pass
                found.append(set(ran))
    finally:
        for h in hooks:
            h.remove()
        put_modes(model, modes)
        with torch.no_grad():
            for m, key, b, saved in buffers:
                b.copy_(saved)
                m._buffers[key] = b
            for m, key, p, saved in params:
                p.copy_(saved)
                m._parameters[key] = p
        for m, attributes in plain:  # in the instance's own table: no attribute becomes a parameter or module
            for key in set(_plain_attributes(m)) - set(attributes):
                del m.__dict__[key]
            m.__dict__.update(attributes)
    return found


def _plain_attributes(m: nn.Module) -> dict:
    """A module's public attributes that hold plain values (flags, counts, names), which a forward may set."""
    return {k: v for k, v in vars(m).items()
            if not k.startswith("_") and k != "training" and isinstance(v, (bool, int, float, str, type(None)))}


def not_in_trace(model: nn.Module, ran: set[str] | None, eval_scopes) -> list[str]:
    """The outermost modules holding weighted layers that ran (`ran`: in training, or on another input) but
    not in the eval trace (`eval_scopes`: the modules its nodes ran in)."""
    if not ran:
        return []
    in_eval = {""}
    for scope in eval_scopes:
        parts = scope.split(".") if scope else []
        in_eval.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    only = {n for n in ran - in_eval
            if any(isinstance(m, LAYER_TYPES) for m in model.get_submodule(n).modules())}
    return sorted(n for n in only if not any(n.startswith(o + ".") for o in only))


def listed(names: list[str]) -> str:
    """The first three names, and how many more: one line however many layers a refusal names."""
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
