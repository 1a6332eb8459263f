"""The import stage: a model directory from trained weights (a state dict of a registry network or of the
user's own ``package.module:Class``), with class names, normalization and, with data, the test accuracy."""

from __future__ import annotations

from pathlib import Path

from compress.data.options import DataOptions
from compress.errors import CompressError
from compress.importing import (check_input_size, check_statistics, load_strict, logits_width, output_width,
                                read_state_dict)
from compress.labels import placeholder_names
from compress.weights_file import check_finite
from compress.stages._run import MADE_FILES, check_no_training_run, command_line, save_model_into, writing
from compress.stages.train import model_kwargs


def import_weights(weights: str | Path, arch: str, out: str | Path, *, arch_kwargs: dict | None = None,
                   input_size: int | None = None, classes: list[str] | None = None, data: DataOptions | None = None,
                   mean: list[float] | None = None, std: list[float] | None = None, device=None) -> dict:
    """Make the model directory `out` from a trained state dict; returns its model.json.

    `arch` is a registry name or ``package.module:Class``; ``num_classes`` goes to the constructor when
    it takes one and `arch_kwargs` does not set it. Class names come from `data` (a DataOptions) or
    `classes`; normalization from `mean`/`std`, or is measured on `data`'s training split. With `data`,
    the test accuracy is recorded.
    """
    with writing(out, [("WEIGHTS", weights)], data):
        check_no_training_run(Path(out), "import", also=MADE_FILES)
        state = read_state_dict(weights)
        check_finite(state, str(weights))
        train = test = None
        if data is not None:
            data = data.with_input_size(input_size)
            train, test = data.split("train"), data.split("test")
            if classes is not None and list(classes) != list(train.classes):
                raise CompressError("--classes disagree with the dataset's class folders")
            classes = list(train.classes)
            input_size = input_size or int(train.input_size[-1])
        classes = _class_names(classes, state)
        if input_size is None:
            raise CompressError("give --input-size (or --data, whose images set it)")
        mean, std = _normalization(mean, std, train)
        model, kwargs = _built(weights, arch, arch_kwargs, state, classes, input_size)
        accuracy = None
        if test is not None:
            from compress.training import evaluate, pick_device

            accuracy = evaluate(model, test, mean, std, device=pick_device(device))["accuracy"]
            model.cpu()
        meta = {"arch": arch, "arch_kwargs": kwargs, "classes": classes, "input_size": [3, input_size, input_size],
                "normalization": {"mean": [float(v) for v in mean], "std": [float(v) for v in std]},
                "accuracy": accuracy, "imported_from": {"path": str(weights)}, "command": command_line()}
        if data is not None:
            meta["data"] = data.describe()
        return save_model_into(Path(out), model, meta)


def _class_names(classes: list[str] | None, state: dict) -> list[str]:
    if classes is not None:
        return classes
    width = output_width(state)
    if width is None:
        raise CompressError("give the class names (--classes a,b,... or --data)")
    return placeholder_names(width)


def _normalization(mean, std, train) -> tuple[list[float], list[float]]:
    if (mean is None) != (std is None):
        raise CompressError("give both --mean and --std, or neither")
    if mean is None:
        if train is None:
            raise CompressError("give --mean and --std, or --data to measure them on the training images")
        mean, std = train.channel_stats()
    if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
        raise CompressError("--mean and --std take three values each, std > 0")
    return mean, std


def _built(weights, arch: str, arch_kwargs: dict | None, state: dict, classes: list[str], input_size: int):
    """The module `arch` builds, holding `state`, checked to take `input_size` images and to output one
    logit per class; and the constructor arguments that rebuild it."""
    from compress.artifact import construct

    kwargs = _stem_that_fits(arch, arch_kwargs or {}, model_kwargs(arch, dict(arch_kwargs or {}), len(classes),
                                                                   input_size), state, weights)
    model = construct(arch, kwargs)
    load_strict(model, state, str(weights), arch)
    check_statistics(model, str(weights))
    check_input_size(model, arch, input_size)
    out_width = logits_width(model, input_size)
    if out_width != len(classes):
        raise CompressError(f"{arch} outputs {out_width} classes, but {len(classes)} class names were given")
    return model, kwargs


def _stem_that_fits(arch: str, given: dict, kwargs: dict, state: dict, weights) -> dict:
    """A torchvision network's stem, which the registry makes small (stride 1) below 64 px: a checkpoint of
    torchvision's own stem loaded into it computes something else. Where one stem fits the file it is the
    one; where both do (MobileNets' first convolution has one shape either way), the user says which."""
    from compress.artifact import construct
    from compress.importing import fits
    from compress.models import parse_name
    from compress.models.tv import supports_cifar_stem
    from compress.models.user import is_import_path

    if "cifar_stem" in given or not kwargs.get("cifar_stem") or is_import_path(arch):
        return kwargs  # the user's word, torchvision's own stem (64 px and above), or the user's own class
    family, fixed = parse_name(arch)
    if family != "torchvision" or not supports_cifar_stem(fixed["name"]):
        return kwargs
    fitting = [stem for stem in (True, False) if fits(construct(arch, {**kwargs, "cifar_stem": stem}), state)]
    if len(fitting) == 2:
        raise CompressError(f"{weights} fits {arch} with either stem, which compute different things: pass "
                            "--arch-kwargs '{\"cifar_stem\": false}' for torchvision's own (weights trained with "
                            "torchvision), or true for the small CIFAR stem (stride 1; this toolkit's default below "
                            "64 px)")
    return {**kwargs, "cifar_stem": fitting[0]} if fitting else kwargs
