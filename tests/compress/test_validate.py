"""compress.validate: plans, model.json and loaded tensors are refused when they can't be right, never cast."""

import copy
import json
import math

import numpy as np
import pytest
import torch

from compress.validate import InvalidFileError, check_output_width, check_state, validate_model_meta, validate_plan

PLAN = {
    "format": "compress.plan/1", "percent": 0.5, "threshold": 0.1, "min_keep": 0.2, "min_channels": 1,
    "round_to": 1, "compensated": True, "channels_before": 12, "channels_after": 5, "pruned_fraction": 1 - 5 / 12,
    "groups": [
        {"root": "features.0", "bn_layers": ["features.1"], "channels_before": 4, "channels_after": 2, "kept": [0, 3]},
        {"root": "features.4", "bn_layers": ["features.5"], "channels_before": 8, "channels_after": 3,
         "kept": [1, 2, 7]},
    ],
}


def plan_with(edit):
    plan = copy.deepcopy(PLAN)
    edit(plan)
    return plan


def test_a_valid_plan_passes_unchanged():
    assert validate_plan(copy.deepcopy(PLAN)) == PLAN


@pytest.mark.parametrize("edit,needle", [
    (lambda p: p["groups"][1]["kept"].__setitem__(1, 1), "kept lists channel 1 more than once"),
    (lambda p: p["groups"][0]["kept"].__setitem__(1, 1.5), "1.5, not an integer channel index"),
    (lambda p: p["groups"][0]["kept"].__setitem__(1, "1"), "'1', not an integer channel index"),
    (lambda p: p["groups"][0]["kept"].__setitem__(1, 3.0), "3.0, not an integer"),
    (lambda p: p["groups"][0]["kept"].__setitem__(1, True), "True, not an integer"),
    (lambda p: p["groups"][0]["kept"].__setitem__(1, 4), "outside [0, 4)"),
    (lambda p: p["groups"][0]["kept"].__setitem__(1, -1), "outside [0, 4)"),
    (lambda p: p["groups"][0].__setitem__("kept", []), "keeps no channel"),
    (lambda p: p["groups"][0].__setitem__("channels_after", 3), "channels_after is 3 but kept lists 2"),
    (lambda p: p.__setitem__("channels_after", 6), "channels_after is 6 but the groups add up to 5"),
    (lambda p: p.__setitem__("channels_before", 13), "channels_before is 13 but the groups add up to 12"),
    (lambda p: p.__setitem__("pruned_fraction", 0.5), "pruned_fraction is 0.5"),
    (lambda p: p["groups"][1].__setitem__("root", "features.0"), "layer features.0 appears in two groups"),
    (lambda p: p.__setitem__("threshold", math.nan), "threshold must be a finite number"),
    (lambda p: p.__setitem__("threshold", "0.1"), "threshold must be a finite number"),
    (lambda p: p.__setitem__("percent", 1.0), "percent must lie in (0, 1)"),
    (lambda p: p.__setitem__("format", "other"), "is not a compress pruning plan"),
    (lambda p: p.pop("groups"), "lacks groups"),
    (lambda p: p.__setitem__("groups", []), "groups is empty"),
    (lambda p: p["groups"][0].__setitem__("channels_before", "4"), "channels_before must be an integer"),
    (lambda p: p["groups"][0].__setitem__("bn_layers", [3]), "bn_layers"),
    (lambda p: p.__setitem__("round_to", 0), "round_to must be >= 1"),
    (lambda p: p.__setitem__("shared", "gather"), "shared must be select or narrow, got 'gather'"),
    (lambda p: p.__setitem__("shared", ["narrow"]), "shared must be select or narrow"),
])
def test_plans_that_cannot_be_right(edit, needle):
    with pytest.raises(InvalidFileError) as err:
        validate_plan(plan_with(edit), "runs/x/plan.json")
    text = str(err.value)
    assert needle in text and text.startswith("runs/x/plan.json") and "\n" not in text


def test_plan_values_are_not_cast():
    plan = plan_with(lambda p: p["groups"][0].__setitem__("kept", [0, "3"]))
    with pytest.raises(InvalidFileError):
        validate_plan(plan)
    assert plan["groups"][0]["kept"] == [0, "3"]  # left as read, not converted


def model_meta(**over):
    meta = {"format": "compress.model/1", "arch": "vgg11", "arch_kwargs": {"num_classes": 3, "width": 0.25},
            "classes": ["a", "b", "c"], "input_size": [3, 32, 32],
            "normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
            "widths": {"features.0": {"type": "Conv2d", "in_channels": 3, "out_channels": 16, "groups": 1},
                       "features.1": {"type": "BatchNorm2d", "num_features": 16},
                       "classifier": {"type": "Linear", "in_features": 16, "out_features": 3, "bias": True}},
            "accuracy": 0.5, "params": 100, "macs": 50, "flops": 100}
    meta.update(over)
    return meta


def test_a_valid_model_json_passes():
    meta = model_meta()
    assert validate_model_meta(copy.deepcopy(meta)) == meta


def widths_with(name, **over):
    widths = copy.deepcopy(model_meta()["widths"])
    widths[name] = {**widths[name], **over}
    return widths


@pytest.mark.parametrize("over,needle", [
    ({"classes": ["a", "b"]}, "arch_kwargs.num_classes is 3 but classes lists 2"),
    ({"arch_kwargs": {"width": 0.25}, "classes": ["a", "b"]}, "classifier has 3 outputs but classes lists 2"),
    ({"classes": ["a", "a", "b"]}, "class 'a' is listed twice"),
    # The last of 50k names repeated: the first repeat was found by counting each name (quadratic, ~1 min).
    ({"classes": [f"c{i}" for i in range(50_000)] + ["c49999"], "arch_kwargs": {"num_classes": 50_001}},
     "class 'c49999' is listed twice"),
    ({"classes": []}, "classes is empty"),
    ({"classes": ["a", 2, "c"]}, "classes must be strings"),
    ({"input_size": [3, "32", 32]}, "input_size[1]"),
    ({"input_size": [3, 32.0, 32]}, "input_size[1]"),
    ({"input_size": [3, 32]}, "input_size must be [C, H, W]"),
    ({"input_size": [3, 10 ** 6, 32]}, "input_size[1]"),
    ({"normalization": {"mean": [0.5, 0.5], "std": [0.25] * 3}}, "normalization.mean has 2 values for 3"),
    ({"normalization": {"mean": [0.5] * 3, "std": [0.25, 0.0, 0.25]}}, "normalization.std must be > 0"),
    ({"normalization": {"mean": [0.5, math.nan, 0.5], "std": [0.25] * 3}}, "normalization.mean"),
    ({"widths": widths_with("features.0", out_channels=10 ** 9)}, "widths.features.0.out_channels"),
    ({"widths": widths_with("features.0", out_channels=16.0)}, "widths.features.0.out_channels"),
    ({"widths": widths_with("features.0", type="ConvTranspose2d")}, "widths.features.0.type"),
    ({"widths": widths_with("features.0", groups=5)}, "not divisible by groups 5"),
    ({"widths": widths_with("classifier", bias="yes")}, "bias must be true or false"),
    ({"arch_kwargs": {"num_classes": 3, "width": math.inf}}, "arch_kwargs.width"),
    ({"arch_kwargs": {"num_classes": 3.0}}, "arch_kwargs.num_classes"),
    ({"accuracy": 2.0}, "accuracy must be <= 1.0"),
    ({"accuracy": math.nan}, "accuracy must be a finite number"),
    ({"params": -1}, "params must be >= 0"),
    ({"flops": 99}, "flops is 99 but macs is 50"),
    ({"format": "compress.model/0"}, "is not a compress.model/1 file"),
    ({"arch": ""}, "arch must be a non-empty string"),
])
def test_model_json_that_cannot_be_right(over, needle):
    with pytest.raises(InvalidFileError) as err:
        validate_model_meta(model_meta(**over), "d/model.json")
    text = str(err.value)
    assert needle in text and text.startswith("d/model.json") and "\n" not in text


def test_widths_that_pass_the_per_layer_bound_are_checked_against_memory():
    from compress.limits import TooLargeError

    widths = widths_with("features.0", in_channels=1 << 20, out_channels=1 << 20)
    with pytest.raises(TooLargeError, match="d/model.json: the widths needs 4.0 TiB"):
        validate_model_meta(model_meta(widths=widths), "d/model.json")
    assert validate_model_meta(model_meta(widths=widths), "d/model.json", check_memory=False)


def test_missing_keys_and_format_rules():
    meta = model_meta()
    del meta["normalization"]
    with pytest.raises(InvalidFileError, match="lacks normalization"):
        validate_model_meta(meta)
    embedded = model_meta()
    del embedded["format"]  # a .dcz embeds model.json before the format key is added
    validate_model_meta(embedded, require_format=False)
    with pytest.raises(InvalidFileError):
        validate_model_meta(embedded)


def test_output_width_must_match_the_classes():
    check_output_width(3, ["a", "b", "c"])
    with pytest.raises(InvalidFileError, match="network has 10 outputs but classes lists 3"):
        check_output_width(10, ["a", "b", "c"])


def test_check_state_refuses_cast_and_misshapen_tensors():
    expected = {"w": torch.zeros(2, 3), "n": torch.zeros((), dtype=torch.int64)}
    check_state({"w": torch.ones(2, 3), "n": torch.tensor(1)}, expected, "m.safetensors")
    cases = [({"w": torch.ones(2, 3, dtype=torch.int8), "n": torch.tensor(1)}, "w is stored as int8, the model needs float32"),
             ({"w": torch.ones(2, 3, dtype=torch.float64), "n": torch.tensor(1)}, "stored as float64"),
             ({"w": torch.ones(3, 2), "n": torch.tensor(1)}, "w has shape [3, 2], the model needs [2, 3]"),
             ({"w": torch.ones(2, 3)}, "lacks tensor n"),
             ({"w": torch.ones(2, 3), "n": torch.tensor(1), "x": torch.ones(1)}, "holds tensor x")]
    for state, needle in cases:
        with pytest.raises(InvalidFileError) as err:
            check_state(state, expected, "m.safetensors")
        assert needle in str(err.value) and str(err.value).startswith("m.safetensors")


def test_check_state_works_on_numpy_arrays():
    with pytest.raises(InvalidFileError, match="int8"):
        check_state({"w": np.zeros(2, np.int8)}, {"w": np.zeros(2, np.float32)}, "x")


def test_a_real_model_json_passes(tmp_path):
    from compress.artifact import save_model_dir
    from compress.models import create_model

    save_model_dir(create_model("vgg11", width=0.0625), tmp_path,
                   {"arch": "vgg11", "arch_kwargs": {"num_classes": 10, "width": 0.0625},
                    "classes": [str(i) for i in range(10)], "input_size": [3, 32, 32],
                    "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}})
    validate_model_meta(json.loads((tmp_path / "model.json").read_text()))


# --- exact messages for every branch (the message is the user's only clue) --------------------------------

PLAN_MESSAGES = [
    (lambda p: [], "p must be an object, got list"),
    (lambda p: {}, "p is not a compress pruning plan (format None)"),
    (lambda p: {**p, "format": "x"}, "p is not a compress pruning plan (format 'x')"),
    (lambda p: {k: v for k, v in p.items() if k != "threshold"}, "p lacks threshold"),
    (lambda p: {k: v for k, v in p.items() if k != "percent"}, "p lacks percent"),
    (lambda p: {**p, "percent": 0}, "p: percent must lie in (0, 1), got 0.0"),
    (lambda p: {**p, "percent": "0.5"}, "p: percent must be a finite number, got '0.5'"),
    (lambda p: {**p, "min_keep": 1.5}, "p: min_keep must be <= 1.0, got 1.5"),
    (lambda p: {**p, "min_keep": -0.1}, "p: min_keep must be >= 0.0, got -0.1"),
    (lambda p: {**p, "min_channels": -1}, "p: min_channels must be >= 0, got -1"),
    (lambda p: {**p, "round_to": 0}, "p: round_to must be >= 1, got 0"),
    (lambda p: {**p, "groups": {}}, "p: groups must be a list, got dict"),
    (lambda p: {**p, "groups": [3]}, "p: groups[0] must be an object, got int"),
    (lambda p: {**p, "groups": [{}]}, "p: groups[0].root must be a non-empty string, got None"),
    (lambda p: {**p, "groups": [{**p["groups"][0], "channels_before": 0}]},
     "p: group features.0 channels_before must be [1, 1048576], got 0"),
    (lambda p: {**p, "groups": [{**p["groups"][0], "channels_before": 1 << 21}]},
     "p: group features.0 channels_before must be [1, 1048576], got 2097152"),
    (lambda p: {**p, "groups": [{**p["groups"][0], "kept": "0,3"}]}, "p: group features.0 kept must be a list, got str"),
    (lambda p: {**p, "groups": [p["groups"][0], {**p["groups"][1], "kept": [2, 1, 2, 7]}]},
     "p: group features.4 kept lists channel 2 more than once"),
    (lambda p: {**p, "groups": [{**p["groups"][0], "bn_layers": "features.1"}]},
     "p: group features.0 bn_layers must be a list, got str"),
    (lambda p: {**p, "groups": [{**p["groups"][0], "channels_after": "2"}]},
     "p: group features.0 channels_after must be an integer, got '2'"),
    (lambda p: {**p, "channels_after": -1}, "p: channels_after must be >= 0, got -1"),
    (lambda p: {**p, "pruned_fraction": 1.5}, "p: pruned_fraction must be <= 1.0, got 1.5"),
    (lambda p: {**p, "pruned_fraction": -0.5}, "p: pruned_fraction must be >= 0.0, got -0.5"),
]


@pytest.mark.parametrize("edit,message", PLAN_MESSAGES)
def test_plan_messages(edit, message):
    with pytest.raises(InvalidFileError) as err:
        validate_plan(edit(copy.deepcopy(PLAN)), "p")
    assert str(err.value) == message


def test_optional_plan_fields_and_the_default_name():
    lean = {k: v for k, v in PLAN.items() if k not in ("min_keep", "min_channels", "round_to",
                                                       "channels_before", "channels_after", "pruned_fraction")}
    assert validate_plan(copy.deepcopy(lean)) == lean
    edge = {**copy.deepcopy(PLAN), "min_keep": 1.0, "min_channels": 0}
    assert validate_plan(edge) == edge
    with pytest.raises(InvalidFileError, match=r"^plan.json is not"):
        validate_plan({})


META_MESSAGES = [
    (lambda m: [], "d must be an object, got list"),
    (lambda m: {**m, "arch_kwargs": {"num_classes": 3, "width": 0}}, "d: arch_kwargs.width must be > 0.0, got 0"),
    (lambda m: {**m, "arch_kwargs": {"num_classes": 3, "width": 65}}, "d: arch_kwargs.width must be <= 64.0, got 65"),
    (lambda m: {**m, "accuracy": -0.1}, "d: accuracy must be >= 0.0, got -0.1"),
    (lambda m: {**m, "input_size": [65, 32, 32], "normalization": {"mean": [0.5] * 65, "std": [0.5] * 65}},
     "d: input_size[0] (channels) must be [1, 64], got 65"),
    (lambda m: {**m, "input_size": [3, 32, 0]}, "d: input_size[2] (width) must be [1, 16384], got 0"),
    (lambda m: {**m, "normalization": {"mean": [0.5] * 3, "std": [0.25, 0, 0.25]}},
     "d: normalization.std must be > 0.0, got 0"),
    (lambda m: {**m, "normalization": []}, "d: normalization must be an object, got list"),
    (lambda m: {**m, "widths": {"features.0": {"type": "ConvTranspose2d"}}},
     "d: widths.features.0.type must be one of Conv1d, Conv2d, Conv3d, BatchNorm1d, BatchNorm2d, BatchNorm3d, "
     "SelectBatchNorm2d, Linear, got 'ConvTranspose2d'"),
    (lambda m: {**m, "widths": {"f": {"type": "Conv2d", "in_channels": 3, "out_channels": 16, "groups": 2}}},
     "d: widths.f has 3 → 16 channels, not divisible by groups 2"),
    (lambda m: {**m, "classes": "abc"}, "d: classes must be a list, got str"),
    (lambda m: {**m, "arch": None}, "d: arch must be a non-empty string, got None"),
    (lambda m: {**m, "format": None}, "d is not a compress.model/1 file (format None)"),
    (lambda m: {k: v for k, v in m.items() if k not in ("arch", "classes")}, "d lacks arch, classes"),
]


@pytest.mark.parametrize("edit,message", META_MESSAGES)
def test_model_json_messages(edit, message):
    with pytest.raises(InvalidFileError) as err:
        validate_model_meta(edit(model_meta()), "d")
    assert str(err.value) == message


def test_model_json_edges_that_pass():
    for over in ({"accuracy": 0.0}, {"accuracy": 1.0}, {"accuracy": None}, {"params": 0, "macs": 0, "flops": 0},
                 {"widths": None}, {"arch_kwargs": {"num_classes": 3, "width": 64}}):
        validate_model_meta(model_meta(**over))
    with pytest.raises(InvalidFileError, match=r"^model.json: accuracy"):
        validate_model_meta(model_meta(accuracy=3))


def test_check_state_exact_messages():
    expected = {"a": torch.zeros(1), "b": torch.zeros(1), "c": torch.zeros(1)}
    for state, message in [({"a": torch.zeros(1)}, "m lacks tensor b (and 1 more)"),
                           ({"a": torch.zeros(1), "b": torch.zeros(1)}, "m lacks tensor c"),
                           ({**expected, "x": torch.zeros(1), "y": torch.zeros(1)},
                            "m holds tensor x that the model does not have (and 1 more)"),
                           ({**expected, "a": torch.zeros(1, dtype=torch.int8)},
                            "m: tensor a is stored as int8, the model needs float32"),
                           ({**expected, "b": torch.zeros(2)}, "m: tensor b has shape [2], the model needs [1]")]:
        with pytest.raises(InvalidFileError) as err:
            check_state(state, expected, "m")
        assert str(err.value) == message


def test_check_finite_names_the_first_non_finite_tensor():
    from compress.validate import check_finite

    good = {"a": torch.ones(3), "steps": torch.tensor(5), "n": np.arange(4)}
    check_finite(good, "m")
    with pytest.raises(InvalidFileError, match=r"^m: tensor b holds NaN or infinity \(2 of 4 values\)"):
        check_finite({**good, "b": torch.tensor([1.0, math.nan, math.inf, 0.0])}, "m")
    with pytest.raises(InvalidFileError, match="tensor c holds NaN"):
        check_finite({"c": np.array([np.inf], dtype=np.float16)}, "m")


def test_class_names_must_not_be_empty():
    meta = model_meta()
    meta["classes"] = ["", *meta["classes"][1:]]
    with pytest.raises(InvalidFileError, match="classes holds an empty name"):
        validate_model_meta(meta, "model.json", check_memory=False)
