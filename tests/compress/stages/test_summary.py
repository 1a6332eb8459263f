"""summary.json and summary.md of a slimming run, and the words for a recorded pruning budget."""

import pytest

from compress.data.options import DataOptions
from compress.stages.summary import budget_text, build_summary, stage_dirs, summary_markdown


def test_summary_says_when_statistics_were_kept():
    row = {"accuracy": 0.8, "params": 10, "params_reduction": 0.5, "macs": 10, "flops": 20, "macs_reduction": 0.5,
           "wall_time_s": 1.0}
    s = {"arch": "vgg11", "data": {"spec": "cifar10"}, "sparsity": 0.0, "percent": 0.5, "channels_before": 8,
         "channels_after": 4, "stages": {"pruned": row}, "command": "compress slim", "exact_removal": True,
         "bn_recalibration_images": 0}
    assert "kept as trained, without re-estimation" in summary_markdown(s)
    s.update(exact_removal=False, bn_recalibration_images=100)
    assert "re-estimated on 100" in summary_markdown(s)


def _meta(params, macs, accuracy, **extra):
    return {"arch": "vgg11", "arch_kwargs": {"width": 0.125}, "params": params, "macs": macs, "flops": 2 * macs,
            "accuracy": accuracy, **extra}


def test_reductions_are_against_the_sparse_model_and_a_macs_budget_is_met_by_the_final_one():
    pruning = {"channels_before": 100, "channels_after": 40, "accuracy_uncalibrated": 0.5,
               "bn_recalibration_images": 0, "exact_removal": True,
               "budget": {"target": "macs", "asked": 0.5, "full": 1000, "estimated": 0.49, "importance": "|γ|"}}
    stages = {"sparse": _meta(200, 1000, 0.9), "pruned": _meta(50, 480, 0.5, pruning=pruning),
              "finetuned": _meta(50, 480, 0.85, pruning=pruning)}
    s = build_summary(stages, {"sparse": 3.0}, DataOptions("cifar10", 100, 50), None, 1e-4)
    assert s["stages"]["pruned"]["params_reduction"] == 0.75
    assert s["stages"]["finetuned"]["macs_reduction"] == pytest.approx(0.52)
    assert s["stages"]["pruned"]["accuracy_uncalibrated"] == 0.5 and s["stages"]["sparse"]["wall_time_s"] == 3.0
    assert s["budget"]["met"] == 0.48 and s["budget"]["asked"] == 0.5
    assert s["data"] == {"spec": "cifar10", "train_limit": 100, "test_limit": 50, "input_size": None,
                         "fingerprint": DataOptions("cifar10").describe()["fingerprint"]}
    assert (s["channels_before"], s["channels_after"], s["exact_removal"]) == (100, 40, True)
    md = summary_markdown({**s, "passes": 1})
    assert "pruned to a macs budget" in md and "Budget: macs at 50.0% of the sparse model's; met 48.00%" in md


def test_summary_names_the_arithmetic_each_trained_stage_ran_in():
    pruning = {"channels_before": 10, "channels_after": 5}
    stages = {"pretrained": _meta(20, 100, 0.5, training={"precision": "fp32"}),
              "sparse": _meta(20, 100, 0.6, training={"precision": "bf16"}),
              "pruned": _meta(10, 50, 0.6, pruning=pruning),
              "finetuned": _meta(10, 50, 0.7, pruning=pruning, training={"precision": "bf16"})}
    s = build_summary(stages, {}, DataOptions("cifar10", 100, 50), 0.5, 1e-4)
    assert [n for n, r in s["stages"].items() if "precision" in r] == ["pretrained", "sparse", "finetuned"]
    md = summary_markdown({**s, "passes": 1})
    assert "Training arithmetic per stage: pretrained fp32, sparse bf16 autocast, finetuned bf16 autocast" in md
    s["stages"]["pretrained"]["precision"] = "bf16"
    assert "Training arithmetic: bf16 autocast in every trained stage (pretrained, sparse, finetuned)" in \
        summary_markdown({**s, "passes": 1})
    # Stages from before the field existed say nothing rather than a guess.
    for r in s["stages"].values():
        r.pop("precision", None)
    assert "arithmetic" not in summary_markdown({**s, "passes": 1})


def test_budget_text_for_a_macs_and_a_latency_budget():
    assert budget_text({"target": "macs", "asked": 0.5, "met": 0.4981}) == "macs budget 0.5 of the unpruned, met 0.498"
    latency = {"target": "latency_ms", "asked": 2.0, "backend": "ort-cpu", "full": 4.0, "met": 1.9, "macs_met": 0.45}
    assert budget_text(latency) == ("p50 latency budget 2 ms on ort-cpu (unpruned 4.000 ms), met 1.900 ms with "
                                    "45.0% of the MACs")


def test_stage_directories_of_one_and_of_several_passes(tmp_path):
    one = stage_dirs(tmp_path, tmp_path / "sparse", {"pretrained": {}}, 1)
    assert list(one) == ["pretrained", "sparse", "pruned", "finetuned"] and one["pruned"] == tmp_path / "pruned"
    two = stage_dirs(tmp_path, tmp_path / "shared-sparse", {}, 2)
    assert list(two) == ["sparse", "pruned-1", "finetuned-1", "pruned-2", "finetuned-2"]
    assert two["finetuned-2"] == tmp_path / "pass2" / "finetuned" and two["sparse"] == tmp_path / "shared-sparse"
