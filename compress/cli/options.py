"""Options and small helpers shared by several commands."""

from __future__ import annotations

import contextlib
import json

import click

from compress.cli.params import DEVICE, POSITIVE, SEED, FiniteFloat

# How a pruning request's keywords read on the command line, for its conflict messages.
OPTION_NAMES = {"percent": "--percent", "target_macs": "--target-macs", "target_params": "--target-params",
                "target_latency_ms": "--target-latency", "backend": "--backend", "importance='cost'": "--cost-aware",
                "passes": "--passes", "plan_path": "--plan"}


def data_options(f):
    f = click.option("--data-mode", type=click.Choice(["auto", "memory", "stream"]), default="auto",
                     show_default=True, help="memory: decode once into a uint8 cache; stream: read files through "
                                             "DataLoader workers; auto: memory when it fits.")(f)
    f = click.option("--input-size", type=click.IntRange(min=8, max=4096), default=None,
                     help="Train and evaluate at N×N pixels (default: the images' own size, which must be one).")(f)
    f = click.option("--seed", type=SEED, default=0, show_default=True,
                     help="Seed for data order, subsets, init.")(f)
    f = click.option("--test-limit", type=click.IntRange(min=1), default=None,
                     help="Use N test images (stratified).")(f)
    f = click.option("--train-limit", type=click.IntRange(min=1), default=None,
                     help="Use N training images (stratified).")(f)
    f = click.option("--data", "data_spec", default="cifar10", show_default=True,
                     help="cifar10, cifar100, an ImageFolder dir or a .tar/.tar.gz of one. "
                          "Offline, COMPRESS_DATA=path/to/cifar10-jpeg.tar.gz stands in for cifar10.")(f)
    return f


RESUME_HELP = "Start over instead of continuing an interrupted run."


def recipe_options(resume_help: str = RESUME_HELP):
    def deco(f):
        f = click.option("--lr", type=FiniteFloat(min=0, min_open=True), default=None,
                         help="Peak learning rate (recipe default otherwise).")(f)
        f = click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Batch size.")(f)
        f = click.option("--weight-decay", type=FiniteFloat(min=0), default=None,
                         help="Weight decay (recipe default otherwise: 1e-4 paper, 5e-4 fast).")(f)
        f = click.option("--recipe", type=click.Choice(["paper", "fast"]), default=None,
                         help="paper (the default, except where a preset says otherwise): SGD 0.1 Nesterov, wd "
                              "1e-4, batch 64, 160 epochs, ÷10 at 50%/75%; fast: batch 128, wd 5e-4, cosine, 30 "
                              "epochs, for quick runs.")(f)
        f = click.option("--device", type=DEVICE, default=None, help="cpu, cuda, cuda:1 (default: cuda when available).")(f)
        f = click.option("--compile/--no-compile", "compile_", default=False, help="torch.compile the model.")(f)
        f = click.option("--precision", type=click.Choice(["auto", "bf16", "fp32"]), default="auto",
                         show_default=True,
                         help="Training arithmetic: auto is bf16 autocast on a GPU and fp32 on a CPU; bf16 is "
                              "bf16 autocast on either (on a CPU with AVX-512 BF16 or AMX faster for full-width "
                              "networks, not always for pruned ones; slower without them); weights stay fp32.")(f)
        f = click.option("--no-resume", is_flag=True, help=resume_help)(f)
        return f
    return deco


def budget_options(latency_note: str = ""):
    """--target-macs, --target-params, --target-latency and --backend: the budgets `prune` and `slim` share,
    each an alternative to --percent. `latency_note` ends --target-latency's help (e.g. a command's limit)."""
    def deco(f):
        f = click.option("--backend", default=None, metavar="B",
                         help="Runtime that --target-latency is measured with: ort-cpu (default), openvino, "
                              "openvino-bf16.")(f)
        f = click.option("--target-latency", type=POSITIVE, default=None, metavar="MS",
                         help="Instead of --percent: keep the most MACs whose p50 latency at batch 1 on --backend, "
                              f"measured on this machine, is at most MS milliseconds{latency_note}.")(f)
        f = click.option("--target-params", type=FiniteFloat(0, 1, min_open=True, max_open=True), default=None,
                         help="Instead of --percent: keep this fraction of the unpruned parameters.")(f)
        f = click.option("--target-macs", type=FiniteFloat(0, 1, min_open=True, max_open=True), default=None,
                         help="Instead of --percent: keep this fraction of the unpruned MACs.")(f)
        return f
    return deco


def shared_option(default: str | None):
    """--shared: how channels that several BNs read (a pre-activation ResNet's residual stream) are pruned."""
    shown = f" [default: {default}]" if default else " [default: the preset's]"
    from compress.request import SHARED

    return click.option("--shared", type=click.Choice(SHARED), default=default,
                        help="Channels that several BatchNorms read (a pre-activation ResNet's residual stream, a "
                             "DenseNet's concatenations): select prunes them per reader with channel-selection "
                             "layers (the paper's way); narrow removes them from the shared tensor and every "
                             "reader at once (scored by the readers' mean |γ|), leaving no gather in the exported "
                             "network." + shown)


def resolved_round_to(value: int | str) -> int:
    """--round-to as a number; `auto` is resolved here so that the run says what it chose."""
    if value != "auto":
        return value
    from compress.slimming import resolve_round_to

    block = resolve_round_to("auto")
    say_round_to(value, block)
    return block


def say_round_to(value: int | str, block: int, whose: str = "") -> None:
    """The number `--round-to auto` stands for here; `whose` names a default's owner ("the quick preset's ")."""
    if value == "auto":
        click.echo(f"{whose}--round-to auto: {block} (ONNX Runtime's CPU convolution block on this machine)", err=True)


def arch_options(f):
    f = click.option("--arch-kwargs", "arch_kwargs_json", default=None, metavar="JSON",
                     help="Constructor arguments as a JSON object, e.g. '{\"width\": 0.5}'.")(f)
    return f


def parse_arch_kwargs(text: str | None) -> dict:
    from compress.errors import CompressError
    from compress.limits import parse_json

    if not text:
        return {}
    try:  # strict and bounded, as for a file: 100k levels of nesting would end in RecursionError
        value = parse_json(text, "the value")
    except CompressError as exc:
        raise click.BadParameter(str(exc), param_hint="--arch-kwargs") from None
    if not isinstance(value, dict):
        raise click.BadParameter(f"must be a JSON object, got {type(value).__name__}", param_hint="--arch-kwargs")
    return value


def _data(data_spec, train_limit, test_limit, seed, input_size=None, data_mode="auto"):
    from compress.data.options import DataOptions

    return DataOptions(data_spec, train_limit, test_limit, seed, input_size=input_size, mode=data_mode)


def _run(device, seed, no_resume, compile_, precision="auto"):
    from compress.stages._run import RunOptions

    return RunOptions(device=device, seed=seed, resume=not no_resume, compile=compile_, precision=precision)


@contextlib.contextmanager
def as_usage():
    """A pruning request's conflicting options, refused as a usage error in the CLI's own option names."""
    from compress.request import RequestConflict

    try:
        yield
    except RequestConflict as exc:
        raise click.UsageError(exc.spelled(OPTION_NAMES)) from None


def _recipe(name, epochs, batch_size, lr, weight_decay, default="paper", finetuning=False):
    from compress.training import Recipe

    make = Recipe.finetuning if finetuning else Recipe.named
    return make(name or default, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay)


def _arch_kwargs(width, bn_init):
    kwargs = {}
    if width is not None:
        kwargs["width"] = width
    if bn_init is not None:
        kwargs["bn_init"] = bn_init
    return kwargs


def _percent(value):
    if not 0.0 < value < 1.0:
        raise click.BadParameter(f"must be a fraction in (0, 1), got {value}", param_hint="--percent")
    return value


def _emit(obj: dict, as_json: bool, human: str) -> None:
    if as_json:
        click.echo(json.dumps(obj, indent=2))
    else:
        click.echo(human)


def only_with(needed: str, given, *options: str) -> None:
    """Refuse options given on the command line (not left at their default) that do nothing without
    `needed` (`given` is its value): an option silently ignored reads as one that worked."""
    if given:
        return
    for flag in _given(options):
        raise click.UsageError(f"{flag} only applies with {needed}: add {needed}, or drop {flag}")


def only_without(other: str, given, *options: str) -> None:
    """Refuse options given on the command line that do nothing with `other` (`given` is its value)."""
    if not given:
        return
    for flag in _given(options):
        raise click.UsageError(f"{flag} does nothing with {other}: drop {flag}")


def _given(options) -> list[str]:
    """The flags of `options` (parameter names) given on the command line rather than left at their default,
    as the user writes them (`data_spec` is --data)."""
    ctx = click.get_current_context()
    flags = {p.name: _spelling(p, ctx.params.get(p.name)) for p in ctx.command.params if p.opts}
    sources = [(name, ctx.get_parameter_source(name)) for name in options]
    return [flags.get(name, "--" + name.replace("_", "-")) for name, source in sources
            if source is not None and source != click.core.ParameterSource.DEFAULT]


def _spelling(param, value) -> str:
    """The flag as given: an on/off pair's second spelling (--static-batch of --dynamic-batch/--static-batch)
    when it set the value off."""
    opts = param.secondary_opts if getattr(param, "secondary_opts", None) and value is False else param.opts
    return next((o for o in opts if o.startswith("--")), opts[0])
