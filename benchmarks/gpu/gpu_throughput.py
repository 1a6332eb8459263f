"""Step 2: training throughput of VGG-19 (CIFAR, full width): plain loops against the toolkit's fit().

Plain loop: one fixed, pre-normalized batch of real CIFAR images on the device; forward, cross-entropy,
backward, SGD step; the floor. Its variants: fp32 (NCHW), fp32 channels_last, bf16 autocast channels_last,
the same under torch.compile, and the same captured whole (forward, backward and SGD step) as one CUDA graph.
fit(): the toolkit's loop on the uint8 images kept on the device, shuffled and augmented there (crop + flip
as batch tensor ops), normalized, with the paper's L1 subgradient on BN γ (λ = 1e-4) and its metric tallies;
img/s of its second epoch (the first pays for warm-up and compiling).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gpu_window import SUB_MARGIN_S, StepOverrun, Window


@dataclass(frozen=True)
class Scale:
    arch: str
    arch_kwargs: dict
    batches: tuple[int, ...]
    seconds: float  # timed part of one plain-loop variant
    warmup: int
    fit_steps: dict  # batch -> steps per fit() epoch
    test_images: int
    compile_backend: str
    compile_estimate_s: float
    compile_first: bool = False  # compile at the first batch size before the other batch sizes' eager variants


FULL = Scale("vgg19", {}, (64, 1024), 2.0, 10, {64: 200, 1024: 24}, 1000, "inductor", 60.0)
# Toy sizes for the CPU dry run. Inductor's C++ code generation alone took 97 s for VGG-11 ×0.125 on the
# 2-core development VM (2026-12-04), so the dry run compiles with aot_eager: the same torch.compile path
# (Dynamo capture, AOTAutograd), without the code generation.
# The dry run compiles first: on a loaded VM its eager variants can use up its budget, and the point of the
# dry run is that every path ran once.
DRY = Scale("vgg19", {"width": 0.0625}, (64, 128), 0.1, 1, {64: 3, 128: 2}, 64, "aot_eager", 8.0, True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, bf16: bool, mode: str):
    # A captured graph must not keep autocast's cast cache across replays. Elsewhere the default, as in
    # fit(): Dynamo guards on the autocast state, so a different cache_enabled would make fit()'s compiled
    # variant compile its graph again instead of reusing the plain loop's.
    if mode == "cudagraph":
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16, cache_enabled=False)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def _model(scale: Scale, device, channels_last: bool):
    from compress.models import create_model

    torch.manual_seed(0)
    model = create_model(scale.arch, num_classes=10, **scale.arch_kwargs).to(device).train()
    return model.to(memory_format=torch.channels_last) if channels_last else model


def _sgd(model, device, fused: bool):
    extra = {"fused": True} if fused and device.type == "cuda" else {"foreach": True}
    return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4, **extra)


def _timed(step, device, warmup: int, seconds: float) -> tuple[int, float]:
    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(3):
        step()
    _sync(device)
    per_step = (time.perf_counter() - t0) / 3
    n = max(5, int(seconds / max(per_step, 1e-6)))
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    _sync(device)
    return n, time.perf_counter() - t0


def plain(scale: Scale, batch_xy, device, *, bf16: bool, channels_last: bool, mode: str) -> dict:
    """One plain-loop variant: mode is eager, compile or cudagraph."""
    x, y = batch_xy
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()
    model = _model(scale, device, channels_last)
    opt = _sgd(model, device, fused=mode != "cudagraph")
    net = torch.compile(model, backend=scale.compile_backend, dynamic=False) if mode == "compile" else model
    out = {"optimizer": "SGD fused" if mode != "cudagraph" and device.type == "cuda" else "SGD foreach"}

    def step():
        with _autocast(device, bf16, mode):
            loss = F.cross_entropy(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if mode == "compile":
        t0 = time.perf_counter()
        step()
        _sync(device)
        out["compile_s"] = round(time.perf_counter() - t0, 2)
        out["compile_backend"] = scale.compile_backend
    if mode == "cudagraph":
        step = _captured(step, device)
    n, seconds = _timed(step, device, scale.warmup, scale.seconds)
    out.update(steps=n, seconds=round(seconds, 4), img_per_s=n * x.shape[0] / seconds)
    return out


def _captured(step, device):
    """The whole training step as one CUDA graph (PyTorch's whole-network capture recipe)."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(3):  # warm-up on a side stream: cuDNN picks its kernels, gradients get allocated
            step()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay


def toolkit(scale: Scale, data, norm, device, batch: int, work, compile_: bool) -> dict:
    """fit() for two epochs of fit_steps[batch] batches; the second epoch's img/s."""
    from compress.models import create_model
    from compress.precision import label
    from compress.training import FitOptions, Recipe, fit

    train, test = data
    mean, std = norm
    torch.manual_seed(0)
    model = create_model(scale.arch, num_classes=10, **scale.arch_kwargs)
    options = FitOptions(sparsity=1e-4, device=str(device), resume=False, compile=scale.compile_backend if compile_
                         else False, desc=f"fit b{batch}", checkpoint_every_s=1e9)
    result = fit(model, train, test, work / f"fit-b{batch}{'-compiled' if compile_ else ''}",
                 Recipe.named("paper", epochs=2, batch_size=batch), mean=mean, std=std, options=options)
    first, second = result["history"]
    out = {"img_per_s": second["img_per_s"], "epoch_time_s": second["epoch_time_s"], "images_per_epoch": len(train),
           "precision": label(result["precision"]),
           "sparsity": "L1 subgradient λ=1e-4", "optimizer": "SGD fused" if device.type == "cuda" else "SGD"}
    if compile_:
        out.update(compile_backend=scale.compile_backend,
                   compile_s=round(max(first["epoch_time_s"] - second["epoch_time_s"], 0.0), 2))
    return out


def _variants(scale: Scale, cuda: bool) -> list[tuple[str, int, dict, float]]:
    """(name, batch, how, estimated seconds) in the order they run: cheap and essential first."""
    eager = scale.seconds + 3

    def basic(b):
        return [(f"plain fp32 NCHW b{b}", b, dict(kind="plain", bf16=False, channels_last=False, mode="eager"), eager),
                (f"plain fp32 channels_last b{b}", b, dict(kind="plain", bf16=False, channels_last=True, mode="eager"),
                 eager),
                (f"plain bf16 channels_last b{b}", b, dict(kind="plain", bf16=True, channels_last=True, mode="eager"),
                 eager),
                (f"fit() bf16 channels_last b{b}", b, dict(kind="fit", compile=False), 8.0)]

    def compiled(b, with_fit):
        out = [(f"plain bf16 channels_last torch.compile b{b}", b,
                dict(kind="plain", bf16=True, channels_last=True, mode="compile"), eager + scale.compile_estimate_s)]
        if with_fit:
            # Same shapes and autocast state as the plain compile just before, so its graph or inductor's cache
            # of its kernels should serve the training step (a quarter of a compile is allowed for it); fit()'s
            # evaluation (eval-mode BN, a last batch of another size) compiles its own graphs. compile_s says
            # what it cost; one that overruns the guard (3x) is listed as failed, not timed.
            out.append((f"fit() bf16 channels_last torch.compile b{b}", b, dict(kind="fit", compile=True),
                        8.0 + scale.compile_estimate_s / 4))
        return out

    graphs = [(f"plain bf16 channels_last CUDA graph b{b}", b,
               dict(kind="plain", bf16=True, channels_last=True, mode="cudagraph"), eager + 2) for b in scale.batches]
    first, rest = scale.batches[0], scale.batches[1:]
    later = [v for b in rest for v in basic(b)]
    if scale.compile_first:
        return basic(first) + compiled(first, True) + later + graphs + [v for b in rest for v in compiled(b, False)]
    return basic(first) + later + graphs + compiled(first, True) + [v for b in rest for v in compiled(b, False)]


def _skip_reason(how: dict, cuda: bool) -> str | None:
    if how.get("mode") == "cudagraph" and not cuda:
        return "CUDA graphs need a CUDA GPU"
    return None


def run(scale: Scale, data, device, window: Window, budget_s: float, work) -> dict:
    """Every variant that fits in `budget_s` (and the window); the others listed with the reason."""
    train_full, test_full = data
    cuda = device.type == "cuda"
    own = Window(min(budget_s, window.left()), SUB_MARGIN_S)
    rows = []
    mean, std = train_full.channel_stats()
    for name, batch, how, estimate in _variants(scale, cuda):
        row = {"name": name, "batch": batch, **{k: v for k, v in how.items() if k != "kind"}}
        reason = _skip_reason(how, cuda)
        fits, why = own.admits(estimate)
        if reason or not fits:
            rows.append({**row, "status": "skipped", "reason": reason or why})
            print(f"throughput: {name}: skipped ({reason or why})", flush=True)
            continue
        try:
            with own.guard(estimate * 3):
                if how["kind"] == "fit":
                    n = scale.fit_steps[batch] * batch
                    subsets = (train_full.subset(range(min(n, len(train_full)))),
                                   test_full.subset(range(min(scale.test_images, len(test_full)))))
                    measured = toolkit(scale, subsets, (mean, std), device, batch, work, how["compile"])
                else:
                    measured = plain(scale, _fixed_batch(train_full, batch, mean, std, device), device,
                                     bf16=how["bf16"], channels_last=how["channels_last"], mode=how["mode"])
            rows.append({**row, "status": "ok", **measured})
            print(f"throughput: {name}: {measured['img_per_s']:.0f} img/s", flush=True)
        except (StepOverrun, Exception) as exc:  # noqa: BLE001 - one variant failing must not lose the others
            rows.append({**row, "status": "failed", "reason": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"})
            print(f"throughput: {name}: failed ({rows[-1]['reason']})", flush=True)
        finally:
            if cuda:
                torch.cuda.empty_cache()
    return {"scale": scale.__dict__, "device": str(device), "variants": rows, "headline": headline(rows)}


def _fixed_batch(train, batch: int, mean, std, device):
    from compress.data import normalize

    pick = torch.arange(batch) % len(train)  # a toy set smaller than the batch is repeated
    return normalize(train.images[pick], mean, std).to(device), train.labels[pick].to(device)


def headline(rows: list[dict]) -> dict:
    """Best bf16 img/s, and fit() over the plain bf16 channels_last eager loop at each batch."""
    ok = [r for r in rows if r["status"] == "ok"]
    bf16 = [r for r in ok if r.get("bf16") or r["name"].startswith("fit()")]
    best = max(bf16, key=lambda r: r["img_per_s"], default=None)
    ratios = {}
    for r in ok:
        if r["name"].startswith("fit() bf16 channels_last b"):
            base = next((p for p in ok if p["name"] == f"plain bf16 channels_last b{r['batch']}"), None)
            if base:
                ratios[str(r["batch"])] = r["img_per_s"] / base["img_per_s"]
    return {"best_bf16": {"name": best["name"], "img_per_s": best["img_per_s"]} if best else None,
            "fit_over_plain": ratios}


def for_row(result: dict | None, batch: int) -> dict:
    """What the paper row plans its schedule with: fit()'s img/s at `batch`, eager and compiled."""
    rows = {r["name"]: r for r in (result or {}).get("variants", []) if r["status"] == "ok"}
    eager = rows.get(f"fit() bf16 channels_last b{batch}")
    compiled = rows.get(f"fit() bf16 channels_last torch.compile b{batch}")
    plain_compile = rows.get(f"plain bf16 channels_last torch.compile b{batch}")
    return {"eager_img_s": eager["img_per_s"] if eager else None,
            "compiled_img_s": compiled["img_per_s"] if compiled else None,
            "compile_s": plain_compile.get("compile_s") if plain_compile else None}


def markdown(result: dict) -> list[str]:
    lines = ["## Training throughput", "",
             f"VGG-19 on CIFAR-10 images ({result['scale']['arch']} {result['scale']['arch_kwargs'] or 'full width'}), "
             f"device {result['device']}. Plain loop: a fixed batch; fit(): the toolkit's loop with the data and its "
             "augmentation on the device. img/s of the timed steps (fit(): its second epoch). fp32 is PyTorch's "
             "default, under which cuDNN convolutions may use TF32 (the environment section records the flags).", "",
             "| variant | status | img/s | note |", "|---|---|---:|---|"]
    for r in result["variants"]:
        note = r.get("reason") or ", ".join(f"{k} {r[k]}" for k in ("optimizer", "compile_s", "precision")
                                             if r.get(k) is not None)
        img = f"{r['img_per_s']:,.0f}" if r.get("img_per_s") else "—"
        lines.append(f"| {r['name']} | {r['status']} | {img} | {note} |")
    h = result["headline"]
    if h["best_bf16"]:
        lines += ["", f"Best bf16: **{h['best_bf16']['img_per_s']:,.0f} img/s** ({h['best_bf16']['name']})."]
    for b, ratio in h["fit_over_plain"].items():
        lines.append(f"fit() / plain loop (bf16, channels_last, eager) at batch {b}: **{ratio:.3f}**.")
    return lines + [""]
