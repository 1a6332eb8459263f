"""What a network does with its tensors, op by op: the record that channel analysis reads.

One forward in eval mode under a `TorchFunctionMode`. Each call of a layer whose weights carry channels
(convolution, linear, normalisation: `LAYER_TYPES`) is one node; inside it nothing is recorded. Every
other torch function or Tensor method called on the way is a node of its own, with its arguments kept
(split sizes, slice bounds, dims), so that the rules in compress.slimming.channels can tell exactly what
happens to each channel, and refuse what they do not know. An in-place op makes a new version of its
tensor; a write into a view of another tensor is recorded as such (nothing may silently bypass it).

Code that reads a tensor's channel count (`B, C, H, W = x.shape`, `x.size(1)`) is noted too: such code
would compute with the pruned count while other tensors keep theirs (an attention's heads, for one), so
those channels must stay.

The forward runs with a batch of two, so that the batch dimension is never confused with a size-1 one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from compress.errors import CompressError

# Layers recorded as one node: their weights are indexed by channel, and their insides are not traced.
LAYER_TYPES = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm,
               nn.modules.instancenorm._InstanceNorm, nn.Embedding, nn.MultiheadAttention)


@dataclass(eq=False)
class Value:
    """One version of one tensor seen during the forward."""

    id: int
    shape: tuple[int, ...]
    kind: str  # "input", "node" (made by a recorded node), "param" or "const" (appeared from elsewhere)
    producer: "Node | None" = None
    readers: list["Node"] = field(default_factory=list)
    name: str = ""  # for a parameter: its name in the model

    @property
    def channels(self) -> int | None:
        return self.shape[1] if len(self.shape) >= 2 else None


@dataclass(eq=False)
class Node:
    """A layer call or a function call; `spec` holds the call's arguments with tensors as Values."""

    id: int
    op: str  # "layer" for a LAYER_TYPES call, otherwise the function's name without underscores
    scope: str  # the innermost module running (the layer itself for a layer call)
    inputs: list[Value]
    outputs: list[Value] = field(default_factory=list)
    spec: tuple = ((), {})
    module: nn.Module | None = None
    inplace: bool = False

    @property
    def where(self) -> str:
        return self.scope or "the model's forward"


@dataclass
class Trace:
    nodes: list[Node]
    values: list[Value]
    inputs: list[Value]
    outputs: list[Value]
    channel_reads: list[tuple[Value, str]]  # (value, scope): code that read the value's channel count
    module_names: dict[nn.Module, str]

    def layer_calls(self) -> dict[str, list[Node]]:
        calls: dict[str, list[Node]] = {}
        for node in self.nodes:
            if node.op == "layer":
                calls.setdefault(node.scope, []).append(node)
        return calls


def _op_name(func) -> str:
    name = getattr(func, "__name__", None) or str(func)
    if name == "__get__":  # a property such as Tensor.shape
        return getattr(getattr(func, "__self__", None), "__name__", "get")
    return name


def _normal(name: str) -> tuple[str, bool]:
    """("add", True) for add_ / __iadd__; ("add", False) for add / __add__ / __radd__."""
    inplace = name.endswith("_") and not name.startswith("__") or name.startswith("__i") and name.endswith("__")
    bare = name.strip("_")
    if name.startswith("__i") and name.endswith("__"):
        bare = name[3:-2]
    elif name.startswith("__r") and name.endswith("__") and name[3:-2] in _REFLECTED:
        bare = name[3:-2]
    return bare, inplace


_REFLECTED = {"add", "sub", "mul", "truediv", "div", "floordiv", "pow", "matmul", "and", "or"}


def _nested(obj, kind: type) -> list:
    """Every `kind` inside lists, tuples and dict values, in order."""
    if isinstance(obj, kind):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _nested(o, kind)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _nested(o, kind)]
    return []


def _leaves(obj) -> list:
    return _nested(obj, torch.Tensor)


class _ReadLog:
    """Where watched shapes report; detached after the trace, so a shape a model keeps (ultralytics'
    Detect caches its input shape) holds nothing of the trace."""

    def __init__(self, reads: list):
        self.reads: list | None = reads

    def note(self, v: "Value", scope: str) -> None:
        if self.reads is not None:
            self.reads.append((v, scope))


class _WatchedShape(tuple):
    """A tensor's shape that reports when code reads its channel count (dim 1)."""

    def __new__(cls, size, dims=(), log=None, value=None, scope=""):
        obj = super().__new__(cls, size)
        obj._dims, obj._log, obj._value, obj._scope = tuple(dims), log, value, scope
        return obj

    def _read(self) -> None:
        if self._log is not None:
            self._log.note(self._value, self._scope)

    def __getitem__(self, i):
        got = super().__getitem__(i)
        if isinstance(i, slice):
            return _WatchedShape(got, self._dims[i], self._log, self._value, self._scope)
        if self._dims[i] == 1:
            self._read()
        return got

    def __iter__(self):
        if 1 in self._dims:
            self._read()
        return super().__iter__()

    def __reduce__(self):
        return torch.Size, (tuple(self),)

    def numel(self) -> int:
        return torch.Size(self).numel()


class _Recorder(TorchFunctionMode):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.names = {m: n for n, m in model.named_modules()}
        self.params = {id(p): n for n, p in model.named_parameters()}
        self.values: dict[int, Value] = {}
        self.all_values: list[Value] = []
        self.alive: list[torch.Tensor] = []  # ids stay unique while the trace holds every tensor
        self.nodes: list[Node] = []
        self.scopes: list[str] = [""]
        self.layer_depth = 0
        self.pending: list[list[Value]] = []
        self.channel_reads: list[tuple[Value, str]] = []
        self.read_log = _ReadLog(self.channel_reads)
        self.busy = False  # our own bookkeeping runs under the mode too: not the model's code

    # -- values ---------------------------------------------------------------------------------------
    def value(self, t: torch.Tensor) -> Value:
        v = self.values.get(id(t))
        if v is None:
            kind = "param" if id(t) in self.params else "const"
            v = self._new(t, kind, None)
            v.name = self.params.get(id(t), "")
        return v

    def _new(self, t: torch.Tensor, kind: str, producer: Node | None) -> Value:
        v = Value(len(self.all_values), tuple(t.shape), kind, producer)
        self.values[id(t)] = v
        self.all_values.append(v)
        self.alive.append(t)
        return v

    def _spec(self, obj):
        if isinstance(obj, torch.Tensor):
            return self.value(obj)
        if isinstance(obj, (list, tuple)):
            return type(obj)(self._spec(o) for o in obj) if not isinstance(obj, _WatchedShape) else tuple(obj)
        if isinstance(obj, dict):
            return {k: self._spec(o) for k, o in obj.items()}
        return obj

    # -- nodes ----------------------------------------------------------------------------------------
    def add_node(self, op: str, inputs: list[Value], outs: list[torch.Tensor], spec=((), {}),
                 module: nn.Module | None = None, inplace: bool = False) -> Node:
        node = Node(len(self.nodes), op, self.scopes[-1], inputs, spec=spec, module=module, inplace=inplace)
        for v in inputs:
            v.readers.append(node)
        for t in outs:
            node.outputs.append(self._new(t, "node", node))
        self.nodes.append(node)
        return node

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.layer_depth or self.busy:
            return out
        name = _op_name(func)
        self.busy = True
        try:
            if name in ("shape", "size") and args and isinstance(args[0], torch.Tensor):
                return self._watch(args[0], args[1:], kwargs, out)
            outs = _leaves(out)
            if name == "__setitem__" and args and isinstance(args[0], torch.Tensor):
                outs = [args[0]]
            if outs:
                self._record_call(name, args, kwargs, outs)
            return out
        finally:
            self.busy = False

    def _record_call(self, name: str, args, kwargs, outs: list[torch.Tensor]) -> None:
        op, inplace = _normal(name)
        spec = self._spec((args, kwargs))
        ins = _leaves((args, kwargs))
        inplace = inplace or any(o is i for o in outs for i in ins) or op == "setitem"
        base = getattr(outs[0], "_base", None) if inplace else None
        self.add_node(op, [self.value(t) for t in ins], outs, spec, inplace=inplace)
        if base is not None and id(base) in self.values:
            # A write into a view changes the tensor it views: record that, so it cannot go unseen.
            self.add_node("write_into_view", [self.values[id(base)], self.values[id(outs[0])]], [base])

    def _watch(self, t: torch.Tensor, args, kwargs, out):
        v = self.value(t)
        scope = self.scopes[-1]
        if isinstance(out, int):
            dim = (args[0] if args else kwargs.get("dim"))
            if dim is not None and dim % max(t.dim(), 1) == 1:
                self.channel_reads.append((v, scope))
            return out
        return _WatchedShape(out, range(len(out)), self.read_log, v, scope)

    # -- module hooks ---------------------------------------------------------------------------------
    def pre_hook(self, module, args):
        self.busy = True
        try:
            self._enter(module, args)
        finally:
            self.busy = False

    def post_hook(self, module, args, output):
        self.busy = True
        try:
            self._leave(module, output)
        finally:
            self.busy = False

    def _enter(self, module, args):
        name = self.names.get(module, "?")
        if isinstance(module, LAYER_TYPES) and self.layer_depth == 0:
            self.pending.append([self.value(t) for t in _leaves(args)])
        if isinstance(module, LAYER_TYPES):
            self.layer_depth += 1
        self.scopes.append(name)

    def _leave(self, module, output):
        self.scopes.pop()
        if isinstance(module, LAYER_TYPES):
            self.layer_depth -= 1
            if self.layer_depth == 0:
                ins = self.pending.pop()
                self.scopes.append(self.names.get(module, "?"))
                self.add_node("layer", ins, _leaves(output), module=module)
                self.scopes.pop()


def _batch(example_input: torch.Tensor, n: int) -> torch.Tensor:
    x = example_input[:1].expand(n, *example_input.shape[1:]).clone()
    if n > 1 and x.is_floating_point():  # distinct samples
        x = x + torch.randn(x.shape, generator=torch.Generator().manual_seed(1)).to(x)
    return x


def _record(model: nn.Module, x: torch.Tensor) -> Trace:
    rec = _Recorder(model)
    hooks = []
    try:
        for m in model.modules():
            hooks.append(m.register_forward_pre_hook(rec.pre_hook))
            hooks.append(m.register_forward_hook(rec.post_hook))
        inp = rec._new(x, "input", None)
        with torch.no_grad(), rec:
            out = model(x)
    finally:
        rec.read_log.reads = None
        for h in hooks:
            h.remove()
    from compress.slimming.reference import flatten_outputs

    flatten_outputs(out)  # refuses outputs the check could not compare, before any work
    outputs = [rec.values[id(t)] for t in _leaves(out) if id(t) in rec.values]
    return Trace(rec.nodes, rec.all_values, [inp], outputs, rec.channel_reads, rec.names)


def trace(model: nn.Module, example_input: torch.Tensor) -> Trace:
    """Record one eval-mode forward of `model` on a batch of two shaped like `example_input` (of one, for
    a model that only takes one)."""
    was_training = model.training
    model.eval()
    try:
        try:
            return _record(model, _batch(example_input, 2))
        except CompressError:
            raise
        except Exception:
            return _record(model, _batch(example_input, 1))
    except CompressError:
        raise
    except Exception as exc:  # the user's forward failed on its own example input
        first = str(exc).strip().splitlines()
        raise CompressError(f"{type(model).__name__}'s forward failed on a batch shaped like the example input "
                            f"{tuple(example_input.shape)}: {type(exc).__name__}: {first[0] if first else ''}"
                            f"{_unbatched_hint(model, example_input)}") from None
    finally:
        model.train(was_training)


def _unbatched_hint(model: nn.Module, example_input: torch.Tensor) -> str:
    """One image given where a batch of them is expected: the first dimension was read as the batch."""
    if example_input.dim() == 3 and any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return (f" (example_input is a batch, its first dimension the batch: for one image of "
                f"{tuple(example_input.shape)}, give example_input.unsqueeze(0))")
    return ""


def spec_tensors(spec: Any) -> list[Value]:
    """The Values inside a node's recorded arguments, in order."""
    return _nested(spec, Value)
