"""Model directories: ``model.safetensors`` + ``model.json``, rebuilt without unpickling anything.

A pruned network is rebuilt by constructing its unpruned architecture, resizing every convolution,
BatchNorm (1-, 2- or 3-d) and Linear to the widths recorded in ``model.json`` (compress.widths), and loading the weights
strictly (compress.weights_file). The code a directory names is imported only when the user trusts it
(compress.models.trust). See docs/ARTIFACTS.md and docs/SECURITY.md.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress import __version__
from compress.atomic import atomic_path, write_json
from compress.attributes import apply_attributes, changed_attributes
from compress.errors import CompressError
from compress.limits import read_json, regular_file
from compress.measure import count_params_macs, layer_widths
from compress.runtime.file_hash import sha256_file as file_sha256
from compress.weights_file import check_finite, read_weights
from compress.widths import apply_widths

FORMAT = "compress.model/1"
WEIGHTS = "model.safetensors"
META = "model.json"
REQUIRED_META = ("arch", "arch_kwargs", "classes", "input_size", "normalization")


def is_model_dir(path: str | Path) -> bool:
    return (Path(path) / META).is_file()


def save_model_dir(model: nn.Module, out_dir: str | Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Write weights and metadata; ``model.json`` goes last, so its presence marks a complete directory.
    A network holding NaN or Inf is refused before anything is written."""
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise ValueError(f"model metadata lacks {', '.join(missing)}")
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise CompressError(f"{out_dir} is a file; a model directory needs a folder")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    check_finite(state, f"the model to save in {out_dir}")
    attributes = _rebuilds(model, meta)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / META).unlink(missing_ok=True)
    with atomic_path(out_dir / WEIGHTS) as tmp:
        save_file(state, str(tmp))
    params, macs = count_params_macs(model, tuple(meta["input_size"]), checked=True)  # _rebuilds bounded it
    full = {
        "format": FORMAT,
        **{k: v for k, v in meta.items() if k not in ("widths", "attributes", "params", "macs", "flops")},
        "widths": layer_widths(model),
        **({"attributes": attributes} if attributes else {}),
        "params": params,
        "macs": macs,
        "flops": 2 * macs,
        "weights_sha256": file_sha256(out_dir / WEIGHTS),
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "toolkit_version": __version__,
    }
    full.setdefault("accuracy", None)
    write_json(out_dir / META, full)
    return full


class RebuildMismatch(CompressError):
    """The architecture model.json would name does not rebuild the model (tensors, widths or outputs)."""


def _rebuilds(model: nn.Module, meta: dict[str, Any]) -> dict[str, dict]:
    """Check, before anything is written, that what model.json will say rebuilds `model`: its architecture
    resized to the model's widths, with the module attributes pruning rewrote (returned, for model.json),
    has the same tensors and, given the model's weights, computes the same outputs on a probe input."""
    arch = meta["arch"]
    with _bounded_construction(f"the architecture {arch}"):
        rebuilt = construct(arch, meta["arch_kwargs"])
    try:
        apply_widths(rebuilt, layer_widths(model))
    except CompressError as exc:  # a layer the rebuilt network does not have: another network
        raise RebuildMismatch(str(exc)) from None
    attributes = changed_attributes(rebuilt, model)
    apply_attributes(rebuilt, attributes, "the model's attributes")
    _check_same_structure(rebuilt, model, arch)
    _check_same_outputs(rebuilt, model, arch, list(meta["input_size"]))
    return attributes


def read_meta(path: str | Path) -> dict[str, Any]:
    """model.json of a model directory, validated completely (types, counts, sizes before allocation)."""
    from compress.validate import validate_model_meta

    path = Path(path)
    if not path.exists():
        raise CompressError(f"model directory not found: {path}")
    if not (path / META).is_file():
        raise CompressError(f"{path} is not a model directory (no {META}; an interrupted run leaves none)")
    meta = read_json(path / META)
    return validate_model_meta(meta, str(path / META))


def build_model(meta: dict[str, Any], *, trust=None, where: str = META) -> nn.Module:
    """The module a model.json (`where`) describes (architecture + recorded widths), with untrained weights.

    Its arch is a file's word: an import path must be a known entry point or one the user trusts (`trust`,
    COMPRESS_TRUSTED_CODE, ``compress --trust``; see docs/SECURITY.md), checked before anything is imported.
    Construction stops once its tensors exceed the memory available."""
    from compress.models import build_from_file

    def build():
        try:
            return build_from_file(meta["arch"], meta["arch_kwargs"], trust=trust, where=where)
        except (ValueError, TypeError) as exc:
            raise CompressError(_first_line(exc)) from None

    what = f"{where}: {meta['arch']}"
    _refuse_oversized(meta["arch"], what, build)
    with _bounded_construction(what):
        model = build()
    apply_widths(model, meta.get("widths") or {})
    apply_attributes(model, meta.get("attributes") or {}, where)
    return model


def construct(arch: str, arch_kwargs: dict) -> nn.Module:
    """The unpruned architecture from a name and constructor arguments the user gave (typed or in code),
    exactly: a user's class gets only the recorded arguments."""
    from compress.models import create_model
    from compress.models.user import is_import_path

    if not isinstance(arch_kwargs, dict):
        raise CompressError(f"arch_kwargs must be a JSON object, got {type(arch_kwargs).__name__}")
    kwargs = dict(arch_kwargs)
    try:
        if is_import_path(arch):
            return create_model(arch, **{"num_classes": None, **kwargs})
        return create_model(arch, **kwargs)
    except (ValueError, TypeError) as exc:
        raise CompressError(_first_line(exc)) from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _import_outside_meta(arch: str, import_path: bool) -> None:
    """Import what the build will import, before the meta-device build: tensors a module makes when first
    imported (class attributes: ultralytics' Detect.anchors) would otherwise be made on the meta device."""
    import importlib

    from compress.models import parse_name

    if import_path:
        module = arch.partition(":")[0]
    else:
        try:
            family = parse_name(arch)[0]
        except Exception:  # noqa: BLE001 - an unknown name: the build refuses it in its own words
            return
        # This toolkit's CIFAR families import nothing that makes tensors; the rest is torchvision's, which
        # the build imports anyway (1.8 s the first time: not worth paying for a VGG).
        if family in ("vgg", "preresnet", "densenet"):
            return
        module = "torchvision.models"
    try:
        importlib.import_module(module)
    except ImportError:  # not installed: the build says so in its own words
        pass


def _refuse_oversized(arch: str, what: str, build) -> None:
    """Build a registry network or a known entry point's once on the meta device (shapes only, nothing
    allocated) and refuse it when its tensors exceed the memory available: the registration bound stops a
    real build only after every earlier layer's weights were initialized (a DenseNet-40 of growth rate 1024
    reached 9 GB first). A user's own class is built once, as its code expects, and a constructor that
    cannot run on the meta device (it reads values) is left to that bound too."""
    from compress.limits import available_memory, human_bytes
    from compress.models.factories import is_known_entry
    from compress.models.user import is_import_path

    import_path = is_import_path(arch)
    if import_path and not is_known_entry(arch):
        return
    _import_outside_meta(arch, import_path)
    try:
        with torch.device("meta"):
            shadow = build()
    except Exception:  # noqa: BLE001 - a constructor that computes on values (ultralytics' stride probe), or a
        return         # refusal the real build below raises again
    total = sum(t.numel() * t.element_size() for t in [*shadow.parameters(), *shadow.buffers()])
    limit = available_memory()
    if total > limit:
        raise CompressError(f"{what} builds tensors of {human_bytes(total)}, beyond the {human_bytes(limit)} of "
                            "memory available")


@contextlib.contextmanager
def _bounded_construction(what: str):
    """Count every parameter and buffer registered while a model is built; refuse (before its values are
    initialized) once they exceed the memory available, so that a crafted model.json cannot make the
    toolkit allocate without bound."""
    from torch.nn.modules import module as _module

    from compress.limits import available_memory, human_bytes

    limit = available_memory()
    total = 0

    def count(_module_obj, _name, tensor):
        nonlocal total
        if tensor is not None:
            total += tensor.numel() * tensor.element_size()
            if total > limit:
                raise CompressError(f"{what} builds tensors of more than {human_bytes(total)}, beyond the "
                                    f"{human_bytes(limit)} of memory available")
        return None

    handles = [_module.register_module_parameter_registration_hook(count),
               _module.register_module_buffer_registration_hook(count)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def arch_name(model: nn.Module) -> str:
    """``package.module:Class`` for a model whose class can be imported again."""
    cls = type(model)
    if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
        raise CompressError(f"{cls.__qualname__} is defined in a script or a function; move it into an importable "
                            "module so the saved model can be rebuilt, or pass arch='package.module:Class'")
    return f"{cls.__module__}:{cls.__qualname__}"


def guess_arch(model: nn.Module) -> tuple[str, dict]:
    """(arch, arch_kwargs) that rebuild `model` when the caller names none: timm and ultralytics models by
    their factory and recorded arguments, any other model by its class."""
    from compress.models.factories import describe

    try:
        found = describe(model)
    except ValueError as exc:
        raise CompressError(_first_line(exc)) from None
    return found if found is not None else (arch_name(model), {})


def save_model(model: nn.Module, path: str | Path, *, classes: list[str] | None = None, input_size, mean, std,
               arch: str | None = None, arch_kwargs: dict | None = None, accuracy: float | None = None,
               **extra) -> dict[str, Any]:
    """Save any model (pruned or not) as a model directory that ``load_model`` and every command read.

    `arch` is a registry name, ``package.module:Class`` or a factory (default: timm's ``create_model`` for a
    timm model, the ultralytics task model with its cfg for an ultralytics one, else the model's own
    class); `arch_kwargs` are the JSON constructor arguments that rebuild the unpruned network (added to
    those read off a timm or ultralytics model). The pruned widths are read off the model. Before
    ``model.json`` is written, the directory is checked to rebuild the model: the same tensors, and the
    same outputs on a probe input. `classes` defaults to an ultralytics model's `names`.
    """
    if isinstance(input_size, int):
        input_size = [3, input_size, input_size]
    input_size = [int(v) for v in input_size]
    if len(input_size) != 3 or min(input_size) < 1:
        raise CompressError(f"input_size must be N or (C, H, W), got {input_size}")
    from compress.models import resolved_kwargs

    by_class = False  # rebuilt from the model's class with its constructor's defaults
    if arch is None:
        arch, guessed = guess_arch(model)
        by_class = not guessed and not arch_kwargs
        arch_kwargs = {**guessed, **(arch_kwargs or {})}
    classes = _classes_of(model, classes)
    given = dict(arch_kwargs or {})
    try:
        arch_kwargs = resolved_kwargs(arch, given)
    except ValueError as exc:
        raise CompressError(str(exc)) from None
    added = {k: v for k, v in arch_kwargs.items() if k not in given}
    try:
        json.dumps(arch_kwargs, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise CompressError(f"arch_kwargs must be JSON-serializable: {exc}") from None
    meta = {"arch": arch, "arch_kwargs": arch_kwargs, "classes": [str(c) for c in classes],
            "input_size": input_size, "normalization": {"mean": [float(v) for v in mean],
                                                        "std": [float(v) for v in std]},
            "accuracy": accuracy, **extra}
    from compress.validate import validate_model_meta

    validate_model_meta({**meta, "widths": layer_widths(model)}, "the model's metadata", check_memory=False,
                        require_format=False)
    check_finite(model.state_dict(), "the model to save")
    try:
        return save_model_dir(model, path, meta)
    except RebuildMismatch as exc:
        if added and not by_class:
            # The registry's defaults (its CIFAR ResNets' stem, say) are not the arguments a model of the same
            # name from elsewhere was built with; the mismatch alone named a tensor and not why.
            raise CompressError(f"{exc}; the registry's {arch} adds "
                                f"{', '.join(f'{k}={v!r}' for k, v in added.items())} unless arch_kwargs give "
                                "them: pass the arguments the model was built with, or leave arch out to rebuild "
                                "it from its own class") from None
        if not by_class:
            raise
        raise CompressError(f"{exc}; {arch} was rebuilt with its constructor's defaults, since no arch or arch_kwargs "
                            "were given: pass the arguments the model was built with as arch_kwargs, or a registry "
                            "name as arch") from None


def _classes_of(model: nn.Module, classes) -> list[str]:
    if classes is not None:
        return list(classes)
    names = getattr(model, "names", None)  # ultralytics: {index: name}
    if isinstance(names, dict) and sorted(names) == list(range(len(names))) and names:
        return [str(names[i]) for i in range(len(names))]
    raise CompressError("give the class names (classes=[...]): the model does not list them")


def _check_same_structure(rebuilt: nn.Module, model: nn.Module, arch: str) -> None:
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    for key in list(ours) + [k for k in theirs if k not in ours]:
        if ours.get(key) != theirs.get(key):
            raise RebuildMismatch(f"{arch} with these arch_kwargs does not rebuild the model: tensor {key} is "
                                f"{theirs.get(key, 'absent')} there and {ours.get(key, 'absent')} in the model")


PROBE_IMAGES = 2  # the rebuild check's batch


@torch.no_grad()
def _check_same_outputs(rebuilt: nn.Module, model: nn.Module, arch: str, input_size: list[int]) -> None:
    """The rebuilt network, given the model's weights, computes what the model computes (in eval mode):
    arguments that change behaviour but no shape (an activation, a pooling type) are caught here."""
    from compress.exporting.outputs import flatten_outputs
    from compress.measure import check_forward_memory

    check_forward_memory(model, input_size, images=PROBE_IMAGES)
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    rebuilt.to(device).eval()
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    x = torch.randn(PROBE_IMAGES, *input_size, generator=torch.Generator().manual_seed(0)).to(device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        want = flatten_outputs(model(x))
        got = flatten_outputs(rebuilt(x))
    except Exception as exc:  # noqa: BLE001 - a user's forward may raise anything
        raise CompressError(f"the model does not run on a {input_size} input: {type(exc).__name__}: "
                            f"{_first_line(exc)}") from None
    finally:
        model.train(was_training)
    if [n for n, _ in want] != [n for n, _ in got]:
        raise RebuildMismatch(f"{arch} with these arch_kwargs returns {[n for n, _ in got]}, the model "
                            f"{[n for n, _ in want]}")
    for (name, a), (_, b) in zip(want, got):
        if not (a.is_floating_point() or a.is_complex()):  # a mask, an index: equal or not
            if not torch.equal(a, b):
                raise RebuildMismatch(f"{arch} with these arch_kwargs rebuilds the model's tensors but not its output "
                                      f"{name}; pass the arguments it was built with in arch_kwargs")
            continue
        if not bool(torch.isfinite(a).all()):
            raise CompressError(f"the model's output {name} holds NaN or infinity on a random input of "
                                f"{input_size}: a broken network is not saved")
        scale = float(a.abs().max()) if a.numel() else 0.0
        diff = float((a.float() - b.float()).abs().max()) if a.shape == b.shape and a.numel() else 0.0
        if a.shape != b.shape or not diff <= 1e-5 * max(scale, 1e-6):
            raise RebuildMismatch(f"{arch} with these arch_kwargs rebuilds the model's tensors but not its output "
                                  f"{name} (differs by {diff:.3g}); pass the arguments it was built with in arch_kwargs")


def load_model(path: str | Path, device: str | torch.device = "cpu", *, trust=None) -> tuple[nn.Module, dict[str, Any]]:
    """The model saved in a model directory, in eval mode, and its metadata.

    `trust` names modules (``"pkg"``, ``"pkg.mod"``, ``"pkg.mod:Class"``, a list, or True for any) whose code
    the directory may import when its arch is an import path; see docs/SECURITY.md."""
    return load_model_dir(path, device, trust=trust)


def load_model_dir(path: str | Path, device: str | torch.device = "cpu", *,
                   trust=None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model in eval mode from its directory alone (weights checked: header, names, dtypes,
    shapes, finite values)."""
    path = Path(path)
    meta = read_meta(path)
    weights = weights_of(path)
    model = build_model(meta, trust=trust, where=str(path / META))
    read_weights(weights, model, device, where=f"{meta['arch']} with the widths in {META}")
    return model.to(device).eval(), meta


def weights_of(path: Path) -> Path:
    """The weights file of a model directory, refused when missing or not a regular file (a FIFO
    would block the reader forever)."""
    weights = path / WEIGHTS
    try:
        regular_file(weights)
    except FileNotFoundError:
        raise CompressError(f"{path} has {META} but no {WEIGHTS}") from None
    return weights


def derived_meta(parent_meta: dict[str, Any], parent_dir: str | Path | None, **updates) -> dict[str, Any]:
    """Metadata for a model made from another: same arch and data description, new numbers."""
    keep = ("arch", "arch_kwargs", "classes", "input_size", "normalization", "data")
    meta = {k: parent_meta[k] for k in keep if k in parent_meta}
    if parent_dir is not None:
        parent_dir = Path(parent_dir)
        meta["parent"] = {"path": str(parent_dir), "sha256": parent_meta.get("weights_sha256"),
                          "params": parent_meta.get("params"), "macs": parent_meta.get("macs"),
                          "accuracy": parent_meta.get("accuracy")}
        # The unpruned ancestor stays reachable so reports can state reductions against it.
        meta["origin"] = parent_meta.get("origin") or meta["parent"]
    meta.update(updates)
    return meta
