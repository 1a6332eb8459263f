"""The `compress` command line. Heavy imports happen inside commands so `--help` stays instant."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import traceback
from pathlib import Path

import click

from compress import __version__
from compress.errors import CompressError

DEBUG_ENV = "COMPRESS_DEBUG"

# Commands that live in their own modules: (module, attribute).
PLUGIN_COMMANDS = {
    "export": ("compress.cli_export", "export"),
    "quantize": ("compress.cli_quantize", "quantize"),
    "share": ("compress.cli_share", "share"),
    "bench": ("compress.cli_bench", "bench"),
}

QUICK = {"arch": "vgg19", "width": 0.25, "train_limit": 10000, "test_limit": 2000, "epochs": 10,
         "finetune_epochs": 5, "recipe": "fast"}


class Main(click.Group):
    """Turns unexpected exceptions into one line unless COMPRESS_DEBUG=1 asks for the traceback."""

    def list_commands(self, ctx):
        present = {n for n, (module, _) in PLUGIN_COMMANDS.items() if importlib.util.find_spec(module)}
        return sorted(set(super().list_commands(ctx)) | present)

    def get_command(self, ctx, name):
        cmd = super().get_command(ctx, name)
        if cmd is None and name in PLUGIN_COMMANDS:
            module, attr = PLUGIN_COMMANDS[name]
            try:
                cmd = getattr(importlib.import_module(module), attr)
            except ImportError as exc:
                raise CompressError(f"command {name!r} is unavailable: {exc}") from None
        return cmd

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.Abort, click.exceptions.Exit, SystemExit):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted; re-run the same command to continue", err=True)
            sys.exit(130)
        except Exception as exc:  # noqa: BLE001 - the last line of defence for a CLI
            if os.environ.get(DEBUG_ENV):
                traceback.print_exc()
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            click.echo(f"Error: {type(exc).__name__}: {first} (set {DEBUG_ENV}=1 for the traceback)", err=True)
            sys.exit(1)


@click.group(cls=Main, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="compress")
def main():
    """Slim, compress, export and benchmark convolutional networks.

    \b
    Quick start (a few minutes on a laptop CPU):
      compress slim
    The paper's VGG-19 recipe (GPU):
      compress slim --preset paper --arch vgg19 --data cifar10 --out runs/vgg19-paper
    """


# --- shared options ---------------------------------------------------------------------------------

def data_options(f):
    f = click.option("--seed", type=int, default=0, show_default=True, help="Seed for data order, subsets, init.")(f)
    f = click.option("--test-limit", type=click.IntRange(min=1), default=None,
                     help="Use N test images (stratified).")(f)
    f = click.option("--train-limit", type=click.IntRange(min=1), default=None,
                     help="Use N training images (stratified).")(f)
    f = click.option("--data", "data_spec", default="cifar10", show_default=True,
                     help="cifar10, cifar100, an ImageFolder dir or a .tar/.tar.gz of one. "
                          "Offline, COMPRESS_DATA=path/to/cifar10-jpeg.tar.gz stands in for cifar10.")(f)
    return f


def recipe_options(prefix: str = ""):
    def deco(f):
        f = click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
                         help="Peak learning rate (recipe default otherwise).")(f)
        f = click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Batch size.")(f)
        f = click.option("--weight-decay", type=click.FloatRange(min=0), default=None)(f)
        f = click.option("--recipe", type=click.Choice(["paper", "fast"]), default=None,
                         help="paper: SGD 0.1 Nesterov, wd 1e-4, batch 64, 160 epochs, ÷10 at 50%/75%; "
                              "fast: batch 128, wd 5e-4, cosine, for quick runs.")(f)
        f = click.option("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available).")(f)
        f = click.option("--compile/--no-compile", "compile_", default=False, help="torch.compile the model.")(f)
        f = click.option("--no-resume", is_flag=True, help="Start over instead of continuing an interrupted run.")(f)
        return f
    return deco


def _data(data_spec, train_limit, test_limit, seed):
    from compress.pipeline import DataOptions

    return DataOptions(data_spec, train_limit, test_limit, seed)


def _recipe(name, epochs, batch_size, lr, weight_decay, default="paper"):
    from compress.train import Recipe

    return Recipe.named(name or default, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay)


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


# --- commands ---------------------------------------------------------------------------------------

@main.command()
@click.option("--arch", required=True, help="vgg11/13/16/19, preresnet<9n+2>, densenet<3n+4>, torchvision names.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Model directory.")
@click.option("--sparsity", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="λ of the L1 penalty on BN γ (paper: 1e-4 VGG, 1e-5 ResNet/DenseNet).")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Epochs (recipe default otherwise).")
@click.option("--width", type=click.FloatRange(min=0, min_open=True), default=None, help="VGG width multiplier.")
@click.option("--bn-init", type=float, default=None, help="Initial BN γ (default 0.5 as in the paper).")
@data_options
@recipe_options()
def train(arch, out, sparsity, epochs, width, bn_init, data_spec, train_limit, test_limit, seed, lr, batch_size,
          weight_decay, recipe, device, compile_, no_resume):
    """Train a network, optionally with the L1 sparsity penalty on BN γ."""
    from compress.pipeline import train_model

    meta = train_model(arch, _data(data_spec, train_limit, test_limit, seed), out,
                       _recipe(recipe, epochs, batch_size, lr, weight_decay), sparsity=sparsity,
                       arch_kwargs=_arch_kwargs(width, bn_init), device=device, seed=seed,
                       resume=not no_resume, compile=compile_)
    click.echo(f"{out}: test accuracy {meta['accuracy']:.2%}, {meta['params']:,} params, {meta['macs']:,} MACs")


@main.command("prune")
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--percent", type=float, default=None, help="Fraction of BN channels to prune, in (0, 1).")
@click.option("--plan", "plan_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Replay the kept channels of an earlier plan.json instead of thresholding.")
@click.option("--min-keep", type=click.FloatRange(0, 1), default=0.2, show_default=True,
              help="Floor: every layer keeps at least this fraction of its channels.")
@click.option("--round-to", type=click.IntRange(min=1), default=1, show_default=True,
              help="Round kept channels up to a multiple (8 suits tensor cores).")
@click.option("--no-compensate", is_flag=True, help="Do not fold removed channels' β into the next layer.")
@click.option("--data", "data_spec", default=None,
              help="Measure accuracy right after pruning, and re-estimate BN statistics, on this data.")
@click.option("--recalibrate", type=click.IntRange(min=0), default=2000, show_default=True,
              help="Training images to re-estimate BN running statistics on after pruning (0: off; needs --data).")
@click.option("--test-limit", type=click.IntRange(min=1), default=None)
@click.option("--device", default=None)
def prune_cmd(model_dir, out, percent, plan_path, min_keep, round_to, no_compensate, data_spec, recalibrate,
              test_limit, device):
    """Remove the channels whose BN |γ| falls under one global threshold."""
    from compress.pipeline import prune_model

    if plan_path is None and percent is None:
        raise click.UsageError("give --percent or --plan")
    if percent is not None:
        _percent(percent)
    data = _data(data_spec, None, test_limit, 0) if data_spec else None
    meta = prune_model(model_dir, out, percent=percent or 0.0, min_keep=min_keep, round_to=round_to,
                       compensate=not no_compensate, plan_path=plan_path, data=data, recalibrate=recalibrate,
                       device=device)
    p = meta["pruning"]
    acc = ""
    if meta["accuracy"] is not None:
        acc = f", accuracy right after pruning {meta['accuracy']:.2%}"
        if p["bn_recalibration_images"]:
            acc += (f" (BN statistics re-estimated on {p['bn_recalibration_images']} training images; "
                    f"{p['accuracy_uncalibrated']:.2%} before)")
    click.echo(f"{out}: channels {p['channels_before']} → {p['channels_after']}, "
               f"params {p['params_before']:,} → {meta['params']:,} ({meta['params'] / p['params_before'] - 1:+.1%}), "
               f"FLOPs (2×MACs) {2 * p['macs_before']:,} → {meta['flops']:,} "
               f"({meta['macs'] / p['macs_before'] - 1:+.1%}){acc}")


@main.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--epochs", type=click.IntRange(min=1), default=None)
@click.option("--distill", "distill_dir", type=click.Path(path_type=Path), default=None,
              help="Teacher model directory: learn from its soft targets too (Hinton et al.).")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=4.0, show_default=True)
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.9, show_default=True,
              help="Weight of the soft-target loss.")
@data_options
@recipe_options()
def finetune(model_dir, out, epochs, distill_dir, temperature, alpha, data_spec, train_limit, test_limit, seed, lr,
             batch_size, weight_decay, recipe, device, compile_, no_resume):
    """Fine-tune a (pruned) model directory."""
    from compress.pipeline import finetune_model

    meta = finetune_model(model_dir, _data(data_spec, train_limit, test_limit, seed), out,
                          _recipe(recipe, epochs, batch_size, lr, weight_decay), distill_dir=distill_dir,
                          temperature=temperature, alpha=alpha, device=device, seed=seed, resume=not no_resume,
                          compile=compile_)
    click.echo(f"{out}: test accuracy {meta['accuracy']:.2%}")


@main.command()
@click.option("--preset", type=click.Choice(["quick", "paper"]), default="quick", show_default=True,
              help="quick: VGG-19 ×0.25 on 10k images, 10+5 epochs (minutes on a CPU); "
                   "paper: full data, paper recipe, 160+160 epochs.")
@click.option("--arch", default=None, help="Architecture (preset: vgg19).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run directory (default runs/slim-ARCH).")
@click.option("--percent", type=float, default=None, help="Fraction of channels to prune (default 0.5 quick, 0.7 paper).")
@click.option("--sparsity", type=click.FloatRange(min=0), default=None,
              help="λ (default 1e-4 for VGG, 1e-5 otherwise).")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Sparse-training epochs.")
@click.option("--finetune-epochs", type=click.IntRange(min=1), default=None)
@click.option("--finetune-lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Fine-tuning peak learning rate (default: the recipe's).")
@click.option("--width", type=click.FloatRange(min=0, min_open=True), default=None)
@click.option("--min-keep", type=click.FloatRange(0, 1), default=0.2, show_default=True)
@click.option("--round-to", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--distill", is_flag=True, help="Fine-tune with the sparse model as teacher.")
@data_options
@recipe_options()
def slim(preset, arch, out, percent, sparsity, epochs, finetune_epochs, finetune_lr, width, min_keep, round_to,
         distill, data_spec, train_limit, test_limit, seed, lr, batch_size, weight_decay, recipe, device, compile_,
         no_resume):
    """Sparse training → pruning → fine-tuning, in one resumable run."""
    from compress.pipeline import slim as run_slim

    if preset == "quick":
        arch = arch or QUICK["arch"]
        if width is None and arch.startswith("vgg"):
            width = QUICK["width"]
        train_limit = train_limit or QUICK["train_limit"]
        test_limit = test_limit or QUICK["test_limit"]
        epochs = epochs or QUICK["epochs"]
        finetune_epochs = finetune_epochs or QUICK["finetune_epochs"]
        recipe = recipe or QUICK["recipe"]
        percent = 0.5 if percent is None else percent
    else:
        arch = arch or "vgg19"
        epochs = epochs or 160
        finetune_epochs = finetune_epochs or 160
        recipe = recipe or "paper"
        percent = 0.7 if percent is None else percent
    _percent(percent)
    if sparsity is None:
        sparsity = 1e-4 if arch.startswith("vgg") else 1e-5
    out = out or Path("runs") / f"slim-{arch}"
    if no_resume and Path(out).exists():
        raise click.UsageError(f"--no-resume would mix with the stages already in {out}; choose another --out")
    train_recipe = _recipe(recipe, epochs, batch_size, lr, weight_decay)
    ft_recipe = _recipe(recipe, finetune_epochs, batch_size, finetune_lr, weight_decay)
    summary = run_slim(arch, _data(data_spec, train_limit, test_limit, seed), out, percent=percent,
                       sparsity=sparsity, train_recipe=train_recipe, finetune_recipe=ft_recipe,
                       arch_kwargs=_arch_kwargs(width, None), min_keep=min_keep, round_to=round_to,
                       distill=distill, device=device, seed=seed, compile=compile_, resume=not no_resume)
    from compress.pipeline import summary_markdown

    click.echo(summary_markdown(summary))
    click.echo(f"Wrote {out}/sparse, {out}/pruned, {out}/finetuned, {out}/summary.json")
    if preset == "quick":
        click.echo("Next: the paper's full recipe on a GPU:\n  compress slim --preset paper --arch vgg19 "
                   "--data cifar10 --out runs/vgg19-paper")


@main.command("eval")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--data", "data_spec", default="cifar10", show_default=True)
@click.option("--test-limit", type=click.IntRange(min=1), default=None)
@click.option("--device", default=None)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def eval_cmd(model, data_spec, test_limit, device, as_json):
    """Accuracy of a model directory or an .onnx file (run in ONNX Runtime) on the test split."""
    if not model.exists():
        raise CompressError(f"model not found: {model}")
    data = _data(data_spec, None, test_limit, 0)
    if model.suffix == ".onnx":
        from compress.onnx_eval import evaluate_onnx

        result = evaluate_onnx(model, data.split("test"))
    else:
        from compress.pipeline import evaluate_model_dir

        result = evaluate_model_dir(model, data, device=device)
    result = {"model": str(model), "data": data_spec, **result}
    _emit(result, as_json, f"{model}: accuracy {result['accuracy']:.2%} on {result['images']} images")


@main.command()
@click.argument("model_or_arch")
@click.option("--num-classes", type=click.IntRange(min=1), default=10, show_default=True,
              help="For an architecture name.")
@click.option("--width", type=click.FloatRange(min=0, min_open=True), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def info(model_or_arch, num_classes, width, as_json):
    """Parameters, MACs, FLOPs (= 2 × MACs) and per-layer widths of a model dir, .onnx file or arch name."""
    from compress.info import describe

    result = describe(model_or_arch, num_classes=num_classes, width=width)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"{result['name']}: {result['params']:,} params, {result['macs']:,} MACs, "
               f"{result['flops']:,} FLOPs (FLOPs = 2 × MACs; Conv and Linear only)")
    if result.get("accuracy") is not None:
        click.echo(f"accuracy: {result['accuracy']:.2%}")
    for name, w in (result.get("widths") or {}).items():
        if w["type"] == "Conv2d":
            click.echo(f"  {name}: {w['in_channels']} → {w['out_channels']}" + (f" (groups {w['groups']})" if w["groups"] > 1 else ""))
        elif w["type"] == "Linear":
            click.echo(f"  {name}: {w['in_features']} → {w['out_features']}")


if __name__ == "__main__":
    main()
