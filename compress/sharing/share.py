"""`compress share`: prune single weights, share them through per-layer k-means codebooks, optionally
fine-tune the centroids, Huffman-code everything into DIR/model.dcz, and report the size at each step.

The output directory is also an ordinary model directory (model.safetensors holds the shared weights
as float32), so it evaluates and exports like any other; model.dcz is the compressed form of the
same weights and `decompress` turns it back into a model directory bit for bit.
"""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from compress.atomic import signals_as_exceptions
from compress.errors import CompressError, one_error_class, write_failure
from compress.labels import check_class_names
from compress.lock import output_lock
from compress.sharing.container import SharedTensor, decode_container, read_container_bytes, write_container
from compress.sharing.kmeans import kmeans_1d
from compress.sharing.sparse import encode_positions, magnitude_mask
from compress.validate import check_finite

DCZ_NAME = "model.dcz"
REPORT_JSON = "share_report.json"
REPORT_MD = "share_report.md"
OUTPUT_FILES = ("model.safetensors", "model.json", DCZ_NAME, REPORT_JSON, REPORT_MD)
DEFAULT_BITS = "conv=8,fc=5"
DEFAULT_OFFSET_BITS = "conv=8,fc=5"  # the paper's widths for convolutional and fully connected layers
MAX_BITS = 12


@dataclass
class BitSpec:
    """Bits per layer: a value per kind (`conv`, `fc`) with exact module-name overrides."""

    conv: int
    fc: int
    layers: dict

    def for_layer(self, name: str, kind: str) -> int:
        return self.layers.get(name, self.conv if kind == "conv" else self.fc)


def parse_bits(spec: str | int, what: str = "--bits", lo: int = 1, hi: int = MAX_BITS,
               default: tuple[int, int] = (8, 5)) -> BitSpec:
    """'conv=8,fc=5', a bare '6' for every layer, or 'features.0=4' overrides mixed in; kinds left
    unnamed keep `default` (conv, fc). A kind or layer given twice (conv=4,conv=5, or a bare '6' with
    conv=4) is refused: which one wins would depend on the order."""
    def value(text: str) -> int:
        if not re.fullmatch(r"\d+", text.strip()) or not lo <= int(text) <= hi:
            raise CompressError(f"{what}: {text!r} is not a whole number of bits in [{lo}, {hi}]")
        return int(text)

    given: dict[str, str] = {}  # key -> the item that set it

    def once(key: str, item: str) -> None:
        if key in given:
            raise CompressError(f"{what}: {key} is given twice ({given[key]!r} and {item!r}) in {spec!r}")
        given[key] = item

    conv, fc = default
    layers = {}
    for item in [p.strip() for p in str(spec).split(",")]:
        if not item:  # "conv=8,,fc=5" was read as conv=8,fc=5: a lost override is a silent change
            raise CompressError(f"{what}: empty item in {spec!r}")
        if "=" not in item:
            once("conv", item)
            once("fc", item)
            conv = fc = value(item)
            continue
        key, val = (s.strip() for s in item.split("=", 1))
        if not key:
            raise CompressError(f"{what}: empty layer name in {spec!r}")
        once(key, item)
        if key == "conv":
            conv = value(val)
        elif key == "fc":
            fc = value(val)
        else:
            layers[key] = value(val)
    return BitSpec(conv, fc, layers)


def weight_masks(model: nn.Module, fraction: float) -> dict[str, np.ndarray]:
    """Per-layer magnitude pruning masks (True = keep) for every Conv2d/Linear weight."""
    return {name: magnitude_mask(m.weight.detach().cpu().numpy(), fraction) for name, _, m in shareable_layers(model)}


def apply_masks(model: nn.Module, masks: dict[str, np.ndarray]) -> None:
    with torch.no_grad():
        for name, _, m in shareable_layers(model):
            if name in masks:
                m.weight.mul_(torch.from_numpy(masks[name]).to(m.weight))


def shareable_layers(model: nn.Module) -> list[tuple[str, str, nn.Module]]:
    """(module name, 'conv' | 'fc', module) for every Conv2d and Linear layer whose weight learns (frozen_layers
    are kept exact)."""
    out = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.requires_grad:
            out.append((name, "conv" if isinstance(m, nn.Conv2d) else "fc", m))
    return out


def frozen_layers(model: nn.Module) -> list[str]:
    """Conv2d/Linear layers whose weight does not learn: a constant of the computation, such as YOLO's DFL
    (box-bin weights 0..15). Clustering or pruning it moved a detector's boxes by up to 112 px, and centroid
    fine-tuning cannot repair what has no gradient, so it is stored exact."""
    return [name for name, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and not m.weight.requires_grad]


def share_weights(model: nn.Module, bits: BitSpec, offset_bits: BitSpec | None = None,
                  masks: dict[str, np.ndarray] | None = None) -> list[SharedTensor]:
    """k-means-share every Conv2d/Linear weight (only the kept ones where `masks` prunes; those layers are
    stored sparse with `offset_bits`); writes the shared values into `model`."""
    layers = shareable_layers(model)
    known = {name for name, _, _ in layers}
    named = set(bits.layers) | (set(offset_bits.layers) if offset_bits else set())
    unknown = sorted(named - known)
    frozen = sorted(set(unknown) & set(frozen_layers(model)))
    if frozen:
        raise CompressError(f"{', '.join(frozen)} does not learn (requires_grad is False): it is kept exact, not shared")
    if unknown:
        raise CompressError(f"no Conv2d/Linear layer named {', '.join(unknown)}; layers are {', '.join(sorted(known))}")
    if masks and offset_bits is None:
        raise ValueError("pruned layers need offset bits for their sparse storage")
    shared = []
    for name, kind, m in layers:
        w = m.weight.detach().cpu().numpy().astype(np.float32).ravel()
        b = bits.for_layer(name, kind)
        keep = masks[name].ravel() if masks and name in masks else None
        codebook, labels = kmeans_1d(w if keep is None else w[keep], 1 << b)
        index = np.full(w.size, -1, dtype=np.int64)
        index[slice(None) if keep is None else keep] = labels
        t = SharedTensor(f"{name}.weight", tuple(m.weight.shape), codebook, index, b,
                         None if keep is None else offset_bits.for_layer(name, kind), {"kind": kind})
        with torch.no_grad():
            m.weight.copy_(torch.from_numpy(t.values()).to(m.weight.device, m.weight.dtype))
        shared.append(t)
    return shared


def _entries(t: SharedTensor) -> int:
    """Stored entries: every weight when dense; non-zeros plus filler zeros when sparse."""
    if t.offset_bits is None:
        return int(t.index.size)
    offsets, _ = encode_positions(np.flatnonzero(t.index >= 0), t.offset_bits)
    return int(offsets.size)


def layer_table(shared: list[SharedTensor]) -> list[dict]:
    rows = []
    for t in shared:
        nnz = int((t.index >= 0).sum())
        entries = _entries(t)
        row = {"name": t.name, "kind": t.stats.get("kind"), "shape": list(t.shape), "bits": t.bits, "k": t.k,
               "weights": int(t.index.size), "nonzero": nnz, "fillers": entries - nnz if t.offset_bits else 0,
               "offset_bits": t.offset_bits, "distinct_values": int(np.unique(t.values()).size)}
        rows.append(row)
    return rows


def size_steps(meta: dict, model: nn.Module, shared: list[SharedTensor], file_bytes: int,
               accuracy: dict) -> list[dict]:
    """Bytes (and accuracy) at each compression step, with the ratio against the fp32 baseline.

    Parameters only count (BN running statistics are excluded except in the real file's size)."""
    total_params = sum(p.numel() for p in model.parameters())
    other = 4 * (total_params - sum(int(t.index.size) for t in shared))
    origin = meta.get("origin") or meta.get("parent") or {}
    steps = []
    if origin.get("params") and int(origin["params"]) != total_params:
        steps.append({"step": "fp32 baseline (unpruned parent)", "bytes": 4 * int(origin["params"]),
                      "params": int(origin["params"]), "accuracy": origin.get("accuracy")})
        steps.append({"step": "after slimming", "bytes": 4 * total_params, "params": total_params,
                      "accuracy": accuracy.get("slimmed")})
    else:
        steps.append({"step": "fp32 baseline", "bytes": 4 * total_params, "params": total_params,
                      "accuracy": accuracy.get("slimmed")})
    entries = {t.name: _entries(t) for t in shared}
    if any(t.offset_bits is not None for t in shared):
        # Each surviving weight as float32 plus its relative offset (filler zeros included).
        nbits = sum(entries[t.name] * (32 + (t.offset_bits or 0)) for t in shared)
        steps.append({"step": "after weight pruning", "bytes": other + -(-nbits // 8),
                      "nonzero": sum(int((t.index >= 0).sum()) for t in shared), "accuracy": accuracy.get("pruned")})
    nbits = sum(entries[t.name] * (t.bits + (t.offset_bits or 0)) + 32 * t.k for t in shared)
    quant = {"step": "after quantization (weight sharing)", "bytes": other + -(-nbits // 8),
             "accuracy": accuracy.get("quantized")}
    if "finetuned" in accuracy:
        quant["accuracy_after_finetuning"] = accuracy["finetuned"]
    steps.append(quant)
    steps.append({"step": "after Huffman coding (model.dcz file)", "bytes": int(file_bytes),
                  "accuracy": accuracy.get("finetuned", accuracy.get("quantized"))})
    base = steps[0]["bytes"]
    for s in steps:
        s["ratio"] = round(base / s["bytes"], 2) if s["bytes"] else None
    return steps


def _evaluate(model, data, meta, device) -> float | None:
    if data is None:
        return None
    from compress.training import evaluate

    test = data.split("test")
    norm = meta["normalization"]
    return evaluate(model, test, norm["mean"], norm["std"], device=device)["accuracy"]


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ShareOptions:
    """What `compress share` does: codebook bits per layer kind ('conv=4,fc=3' or one number), the bits of
    the sparse offsets, the share of each layer's weights to prune first (None: none), and the epochs,
    learning rate and batch size of centroid fine-tuning (0 epochs: none; fine-tuning needs data)."""

    bits: str = DEFAULT_BITS
    offset_bits: str = DEFAULT_OFFSET_BITS
    prune: float | None = None
    finetune_epochs: int = 0
    lr: float = 1e-4
    batch_size: int = 128


@one_error_class
def share_model(model_dir: str | Path, out_dir: str | Path, options: ShareOptions = ShareOptions(), *,
                data=None, device: str | None = None, seed: int = 0, command: str | None = None) -> dict:
    """Run the sharing pipeline; `data` is a compress.DataOptions (needed for accuracy and fine-tuning)."""
    o = options
    bit_spec = parse_bits(o.bits, "--bits")
    off_spec = parse_bits(o.offset_bits, "--offset-bits", 1, 16, default=(8, 5))
    if o.prune is not None and not 0.0 <= o.prune < 1.0:
        raise CompressError(f"--prune-weights must be a fraction in [0, 1), got {o.prune}")
    if o.finetune_epochs and data is None:
        raise CompressError("--finetune-epochs needs --data")
    if not o.prune and str(o.offset_bits) != DEFAULT_OFFSET_BITS:
        raise CompressError("--offset-bits applies to layers pruned by --prune-weights; give --prune-weights too")
    from compress.limits import check_float32, check_seed

    check_seed(seed, "--seed")
    check_float32(o.lr, "--lr", positive=True)
    from compress.guard import check_outputs

    out_dir = Path(out_dir)
    inputs = [("MODEL_DIR", Path(model_dir))]
    if data is not None and data.spec and Path(data.spec).exists():
        inputs.append(("--data", Path(data.spec)))
    check_outputs(inputs=inputs, out_dirs=[("--out", out_dir)], dir_files=OUTPUT_FILES)
    from compress.stages._run import check_no_training_run, check_not_another_model

    check_no_training_run(out_dir, "share", also=("plan.json",))
    check_not_another_model(out_dir, "share", same_kind="sharing")
    with output_lock(out_dir, command or "compress share", directory=True), signals_as_exceptions():
        try:
            return _share(Path(model_dir), out_dir, _Request(bit_spec, off_spec, o.prune, o.finetune_epochs, data,
                                                             o.lr, o.batch_size, device, seed, command))
        except Exception as exc:  # noqa: BLE001 - a full disk, a read-only directory: one line naming the file
            line = write_failure(exc, out_dir)
            if line is None:
                raise
            raise CompressError(line) from None


@dataclass(frozen=True)
class _Request:
    """share_model's checked settings, handed to the work as one value."""

    bit_spec: BitSpec
    off_spec: BitSpec
    prune: float | None
    finetune_epochs: int
    data: object
    lr: float
    batch_size: int
    device: str | None
    seed: int
    command: str | None


def _share(model_dir: Path, out_dir: Path, req: _Request) -> dict:
    from compress.artifact import derived_meta, save_model_dir
    from compress.atomic import move_into, scratch_dir, write_json, write_text
    from compress.info import load_checked
    from compress.measure import layer_widths
    from compress.training import check_batch_norm_batches, pick_device

    bit_spec, off_spec, prune, finetune_epochs, data = req.bit_spec, req.off_spec, req.prune, req.finetune_epochs, req.data
    lr, batch_size, seed, command = req.lr, req.batch_size, req.seed, req.command
    dev = pick_device(req.device)
    model, meta = load_checked(model_dir)
    check_finite(model.state_dict(), str(model_dir / "model.safetensors"))
    train = data.split("train") if finetune_epochs else None
    for split in (data.split("test") if data is not None else None, train):
        if split is not None:  # before any work: accuracies and centroid fine-tuning follow the labels
            check_class_names(list(meta["classes"]), list(split.classes))
    if train is not None:
        check_batch_norm_batches(model, len(train), batch_size)  # before the k-means, not after it
    model = model.to(dev)
    accuracy = {"slimmed": _evaluate(model, data, meta, dev) if data is not None else meta.get("accuracy")}
    prune = prune or None
    masks = None
    if prune:
        masks = weight_masks(model, prune)
        apply_masks(model, masks)
        accuracy["pruned"] = _evaluate(model, data, meta, dev)
        _log(f"pruned {prune:.0%} of the weights of every layer" + (
            f": accuracy {accuracy['pruned']:.2%}" if accuracy["pruned"] is not None else ""))
    shared = share_weights(model, bit_spec, off_spec, masks)
    frozen = frozen_layers(model)
    if frozen:
        _log(f"kept exact, as they do not learn: {', '.join(frozen)}")
    accuracy["quantized"] = _evaluate(model, data, meta, dev)
    if accuracy["quantized"] is not None:
        _log(f"shared weights: accuracy {accuracy['quantized']:.2%}")
    history = []
    if finetune_epochs:
        from compress.sharing.finetune import finetune_centroids

        history = finetune_centroids(model, shared, train, meta["normalization"],
                                     epochs=finetune_epochs, lr=lr, batch_size=batch_size, device=dev, seed=seed,
                                     log=_log)
        # A learning rate that overflows the centroids must not ship as a complete-looking model.
        check_finite({k: v.detach().cpu() for k, v in model.state_dict().items()},
                     f"the centroids after {finetune_epochs} fine-tuning epoch(s) at lr {lr}")
        accuracy["finetuned"] = _evaluate(model, data, meta, dev)
    final_acc = accuracy.get("finetuned", accuracy["quantized"])

    sharing = {"bits": {"conv": bit_spec.conv, "fc": bit_spec.fc, **bit_spec.layers},
               "prune_weights": prune, "offset_bits": ({"conv": off_spec.conv, "fc": off_spec.fc, **off_spec.layers}
                                                       if prune else None),
               "finetune_epochs": finetune_epochs, "finetune_lr": lr if finetune_epochs else None,
               "compressed_file": DCZ_NAME}
    new_meta = derived_meta(meta, model_dir, accuracy=final_acc, sharing=sharing,
                            command=command or "compress share")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    shared_names = {t.name for t in shared}
    raw = {k: v for k, v in state.items() if k not in shared_names}
    embedded = {**new_meta, "widths": layer_widths(model)}

    # Everything is written and checked in a hidden work directory inside OUT, then renamed into place
    # with model.json last: a failure (a full disk, say) or an interruption leaves no model.dcz behind.
    with scratch_dir(out_dir / DCZ_NAME) as work:
        sizes = write_container(work / DCZ_NAME, embedded, shared, raw)
        _verify_roundtrip(work / DCZ_NAME, state)
        steps = size_steps(meta, model, shared, sizes["file"], accuracy)
        report = {"schema": "compress.share/1", "source": str(model_dir), "output": str(out_dir), "kept_exact": frozen,
                  "compressed_file": str(out_dir / DCZ_NAME), "settings": sharing, "steps": steps,
                  "file_breakdown_bytes": sizes, "accuracy": accuracy, "finetune_history": history,
                  "layers": layer_table(shared), "data": data.describe() if data is not None else None}
        write_json(work / REPORT_JSON, report)
        write_text(work / REPORT_MD, report_markdown(report))
        save_model_dir(model, work, new_meta)
        move_into(work, out_dir)
    return report


def _verify_roundtrip(path: Path, state: dict) -> None:
    """Decode the file just written and insist on bit-identical tensors: a codec bug must not ship."""
    _, shared, raw = decode_container(path.read_bytes(), str(path))
    for t in shared:
        if not np.array_equal(t.values().view(np.uint32), state[t.name].numpy().astype(np.float32).view(np.uint32)):
            raise RuntimeError(f"{path}: {t.name} does not decode to the shared weights")
    for k, v in raw.items():
        if not torch.equal(v, state[k]):
            raise RuntimeError(f"{path}: {k} does not decode to the stored tensor")


def restore_state(shared: list[SharedTensor], raw: dict) -> dict:
    state = dict(raw)
    for t in shared:
        state[t.name] = torch.from_numpy(t.values().copy())
    return state


@one_error_class
def decompress(path: str | Path, out_dir: str | Path, command: str | None = None) -> dict:
    """Turn a .dcz file back into an ordinary model directory; returns its model.json."""
    from compress.artifact import build_model, save_model_dir
    from compress.atomic import move_into, scratch_dir
    from compress.guard import OutputOverlapError, check_outputs, is_model_dir
    from compress.validate import validate_model_meta
    from compress.weights_file import load_state

    path, out_dir = Path(path), Path(out_dir)
    inputs = [("--decompress", path)]
    if is_model_dir(path.parent):  # the shared model directory the file belongs to
        if out_dir.resolve() == path.parent.resolve():
            raise OutputOverlapError(f"--out {out_dir} is the shared model directory that holds --decompress "
                                     f"{path}; restoring into it would overwrite that model: choose another --out")
        inputs.append((None, path.parent))
    check_outputs(inputs=inputs, out_dirs=[("--out", out_dir)], dir_files=("model.safetensors", "model.json"))
    from compress.stages._run import MADE_FILES, check_no_training_run, check_not_another_model

    check_no_training_run(out_dir, "share --decompress", also=MADE_FILES)
    check_not_another_model(out_dir, "share --decompress", same_kind="decompressed_from")
    blob = read_container_bytes(path)  # read once: the recorded hash is of the bytes decoded
    meta, shared, raw = decode_container(blob, str(path))
    validate_model_meta(meta, f"{path}: the embedded model.json", require_format=False)
    model = build_model(meta, where=f"{path}: the embedded model.json")
    state = restore_state(shared, raw)
    load_state(model, state, str(path), "its own model description")
    digest = hashlib.sha256(blob).hexdigest()
    meta = {**meta, "decompressed_from": {"path": str(path), "sha256": digest}}
    with output_lock(out_dir, command or "compress share --decompress", directory=True), signals_as_exceptions():
        try:
            with scratch_dir(out_dir / "model.json") as work:
                full = save_model_dir(model.eval(), work, meta)
                move_into(work, out_dir)
        except Exception as exc:  # noqa: BLE001 - re-raised unless it is a failed write
            line = write_failure(exc, out_dir)
            if line is None:
                raise
            raise CompressError(line) from None
    return full


def _mb(n: int) -> str:
    return f"{n / 1e6:.3f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def report_markdown(report: dict) -> str:
    lines = ["| step | size | ratio | accuracy |", "| --- | ---: | ---: | ---: |"]
    for s in report["steps"]:
        acc = "" if s.get("accuracy") is None else f"{s['accuracy']:.2%}"
        if s.get("accuracy_after_finetuning") is not None:
            acc += f" ({s['accuracy_after_finetuning']:.2%} after fine-tuning)"
        lines.append(f"| {s['step']} | {_mb(s['bytes'])} | {s['ratio']}× | {acc} |")
    lines += ["", "Sizes count parameters (BatchNorm running statistics excluded) at 32 bits, shared weights at "
              "their index width plus float32 codebooks, pruned layers with their relative offsets; the last "
              "row is the real file (header, Huffman tables, BN statistics included)."]
    return "\n".join(lines) + "\n"
