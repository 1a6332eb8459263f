"""Prototype for the ablation: at equal MACs, keep channels where this machine runs MACs fastest.

The default decides on |γ| alone. At equal MACs its VGG-19 ×0.25 keeps more of the 16×16 and 8×8 layers,
which ONNX Runtime runs at 96–122 GMAC/s on the project's CPU, and fewer of the 4×4 and 2×2 ones (128–134),
so it is about 2% slower than the peers (results/layer_profiles_2026-12-05). This importance scales each
channel's |γ| by the speed, relative to the network's mean, of the convolutions it touches:

    score = |γ| · (s_c / s̄)^β,   s_c = (Σ MACs) / (Σ MACs / s_layer) over the channel's convolutions

where s_layer is the measured GMAC/s of each convolution of the default's pruned network (ONNX Runtime,
CPU, batch 32, 2 threads): a layer's speed depends on its widths, and the plain network's are not the
pruned one's (on VGG-19 ×0.25 its 2×2 layers run at ~100 GMAC/s, the pruned ones' at 128–134). Unlike the cost-aware importance, it does not divide by what a channel costs:
the MACs budget already does that; it only prefers, among channels of equal |γ|, those whose MACs run
faster. It lives in the benchmark, not in compress/, until it is measured.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

from torch import nn


def measure_speeds(model_dir: Path, batch: int = 32, threads: int = 2, warmup: int = 10, iters: int = 100,
                   rounds: int = 4) -> dict:
    """{conv module name: GMAC/s} of a model directory's convolutions, matched in graph order: the fastest of
    `rounds` profiles per layer, since this VM flips between speed states 1.2-2x apart."""
    import compress
    from compress.benchmarking import export_model_dir
    from layer_profile import conv_rows, kernel_times_us

    model, _ = compress.load_model(model_dir)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    widths = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_model_dir(model_dir, Path(tmp) / "plain.onnx", lambda _msg: None)
        rows = conv_rows(onnx_path)
        passes = [kernel_times_us(onnx_path, batch, threads, warmup, iters, Path(tmp))[0] for _ in range(rounds)]
    times = [min(column) for column in zip(*passes)] if all(len(p) == len(passes[0]) for p in passes) else []
    if not (len(names) == len(rows) == len(times)) or [r["channels"] for r in rows] != widths:
        raise SystemExit(f"{model_dir}: {len(names)} convolutions, {len(rows)} Conv nodes and {len(times)} "
                         "Conv kernels do not match one to one; no speeds")
    return {n: r["macs"] * batch / t / 1e3 for n, r, t in zip(names, rows, times)}


def speeds_for(where: Path) -> dict:
    """The speeds of a seed's convolutions at the widths |γ| chose: measured on the default's final network
    (the same layer names as the plain one) and kept in `NET/conv_speeds_SEED.json`. Measure them on a quiet
    machine (`python latency_aware.py SEED_DIR`), since the decision reads them."""
    path = where.parent / f"conv_speeds_{where.name}.json"
    source = where / "toolkit" / "finetuned"
    weights = json.loads((source / "model.json").read_text())["weights_sha256"]
    if not path.exists() or json.loads(path.read_text()).get("weights_sha256") != weights:  # absent or stale
        from common import atomic_json

        atomic_json(path, {"source": str(source), "weights_sha256": weights, "gmac_per_s": measure_speeds(source)})
    return json.loads(path.read_text())["gmac_per_s"]


def importance(model: nn.Module, speeds: dict, input_size, beta: float = 1.0):
    """The callable importance (compress.slimming.importance) for `model`, whose convolutions are named as
    in `speeds`."""
    from common import conv_positions

    positions = conv_positions(model, input_size)
    missing = set(positions) - set(speeds)
    if missing:
        raise SystemExit(f"no measured speed for {sorted(missing)[:3]}")
    mean = sum(speeds.values()) / len(speeds)

    def latency_aware(unit):
        macs = time = 0.0
        for layer in unit.layers:
            if layer.role == "bn" or layer.name not in speeds:
                continue
            m = layer.module
            per = math.prod(m.kernel_size) * positions[layer.name] * \
                (m.in_channels // m.groups if layer.role == "out" else m.out_channels)
            macs += per
            time += per / speeds[layer.name]
        factor = macs / time / mean if time else 1.0
        return unit.gamma * factor ** beta

    return latency_aware


if __name__ == "__main__":
    import sys

    for arg in sys.argv[1:]:
        speeds = speeds_for(Path(arg))
        print(arg, " ".join(f"{v:.0f}" for v in speeds.values()))
