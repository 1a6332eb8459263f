"""The pruning stage: BN re-estimation skipped exactly when pruning removed only channels at zero; `round_to="auto"`;
one request or a plan, never both."""

import json

import pytest
import torch

from compress.artifact import save_model_dir
from compress.data import load_dataset
from compress.data.options import DataOptions
from compress.models import create_model
from compress.request import PruneRequest
from compress.stages.prune import prune


def trained_like(tmp_path, dead_fraction: float, classes=None):
    """A VGG-11 ×0.125 whose first `dead_fraction` of channels per BN have γ exactly 0 (or tiny but not)."""
    torch.manual_seed(0)
    model = create_model("vgg11", width=0.125)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.0)
            m.weight.data[: int(dead_fraction * m.num_features)] = 0.0
    classes = classes or load_dataset("cifar10", "test", limit=10).classes
    meta = {"arch": "vgg11", "arch_kwargs": {"num_classes": 10, "width": 0.125}, "classes": classes,
            "input_size": [3, 32, 32], "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    save_model_dir(model, tmp_path / "base", meta)
    return tmp_path / "base"


@pytest.mark.parametrize("dead, exact", [(0.6, True), (0.0, False)])
def test_bn_statistics_are_re_estimated_only_when_pruning_changed_the_function(tmp_path, cifar10_archive,
                                                                                monkeypatch, dead, exact):
    monkeypatch.setenv("COMPRESS_DATA", str(cifar10_archive))
    base = trained_like(tmp_path, dead)
    data = DataOptions("cifar10", train_limit=200, test_limit=100)
    meta = prune(base, tmp_path / "pruned", PruneRequest(percent=0.5), data=data, recalibrate=100)
    pruning = meta["pruning"]
    assert pruning["exact_removal"] is exact
    assert pruning["bn_recalibration_images"] == (0 if exact else 100)
    if exact:
        # Nothing re-estimated: the accuracy is the one measured right after pruning.
        assert meta["accuracy"] == pruning["accuracy_uncalibrated"]


def test_a_removal_without_compensation_is_never_called_exact():
    """Without β folded, the removed channels' act(β) is dropped (logits moved 11% on a reviewer's model),
    so the statistics are re-estimated however small the removed γ were."""
    from compress.stages.prune import exact_removal

    request = PruneRequest(percent=0.5)
    assert exact_removal({"removed_gamma_max": 0.0, "compensated": True}, request)
    assert not exact_removal({"removed_gamma_max": 0.0, "compensated": False}, request)
    assert not exact_removal({"removed_gamma_max": 0.0}, PruneRequest(percent=0.5, compensate=False))


def test_round_to_auto_rounds_to_this_cpus_convolution_block(tmp_path, monkeypatch):
    import compress.runtime.cpu_features
    from compress.errors import CompressError

    monkeypatch.setattr(compress.runtime.cpu_features, "nchwc_block", lambda: 4)
    base = trained_like(tmp_path, 0.0, classes=[str(i) for i in range(10)])
    assert prune(base, tmp_path / "pruned", PruneRequest(percent=0.5, round_to="auto"))["pruning"]["round_to"] == 4
    plan = json.loads((tmp_path / "pruned" / "plan.json").read_text())
    assert plan["round_to"] == 4
    widths = [g["channels_after"] for g in plan["groups"]]
    assert all(w % 4 == 0 for w in widths) and any(w % 8 for w in widths)
    for bad in ("8", True, 2.0):
        with pytest.raises(CompressError, match="round_to must be a whole number"):
            prune(base, tmp_path / f"bad-{bad}", PruneRequest(percent=0.5, round_to=bad))
        assert not (tmp_path / f"bad-{bad}").exists()


def test_a_plan_and_a_target_exclude_each_other_and_one_is_needed(tmp_path):
    from compress.errors import CompressError

    base = trained_like(tmp_path, 0.0, classes=[str(i) for i in range(10)])
    first = prune(base, tmp_path / "pruned", PruneRequest(percent=0.5))
    plan = tmp_path / "pruned" / "plan.json"
    with pytest.raises(CompressError, match="target_latency_ms or plan_path, not plan_path and target_macs"):
        prune(base, tmp_path / "both", PruneRequest(target_macs=0.5), plan_path=plan)
    # --cost-aware is no target: it is named as doing nothing with a plan, not as a second target.
    with pytest.raises(CompressError, match="^importance='cost' does nothing with plan_path: a plan replays"):
        prune(base, tmp_path / "both", PruneRequest(importance="cost"), plan_path=plan)
    with pytest.raises(CompressError, match="give one of percent, target_macs, target_params, target_latency_ms or "
                                            "plan_path$"):
        prune(base, tmp_path / "neither")
    assert not (tmp_path / "both").exists() and not (tmp_path / "neither").exists()
    replayed = prune(base, tmp_path / "replayed", plan_path=plan)
    assert replayed["widths"] == first["widths"]


def test_a_backend_latency_cannot_be_measured_on_is_refused_before_anything_is_written(tmp_path):
    from compress.errors import CompressError

    base = trained_like(tmp_path, 0.0, classes=[str(i) for i in range(10)])
    with pytest.raises(CompressError, match="got backend 'ort-cuda'"):
        prune(base, tmp_path / "p", PruneRequest(target_latency_ms=1.0, backend="ort-cuda"))
    assert not (tmp_path / "p").exists()


def test_bn_statistics_are_re_estimated_on_augmented_images(tmp_path, cifar10_archive, monkeypatch):
    """The network was trained under the statistics of augmented images; plain ones shift them (−4.7 pp on a
    trained PreResNet-56 with no channel removed, benchmarks/bn_recalibration.py)."""
    import compress
    from compress.data import stratified_subset

    monkeypatch.setenv("COMPRESS_DATA", str(cifar10_archive))
    base = trained_like(tmp_path, 0.0)
    data = DataOptions("cifar10", train_limit=200, test_limit=50)
    prune(base, tmp_path / "pruned", PruneRequest(percent=0.5), data=data, recalibrate=100)
    model, meta = compress.load_model(tmp_path / "pruned")
    conv, bn = model.features[0], model.features[1]
    assert isinstance(conv, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d)
    calib = stratified_subset(data.for_model(meta).split("train"), 100, seed=data.seed)
    norm = meta["normalization"]

    def first_layer_mean(train: bool) -> torch.Tensor:
        with torch.no_grad():
            x = torch.cat([x for x, _ in calib.batches(250, norm["mean"], norm["std"], train=train, seed=data.seed)])
            return conv(x).mean(dim=(0, 2, 3))

    off_augmented = (bn.running_mean - first_layer_mean(True)).abs().max()
    off_plain = (bn.running_mean - first_layer_mean(False)).abs().max()
    assert off_augmented < off_plain / 5, (off_augmented, off_plain)


def test_a_folder_holding_a_training_run_is_refused_and_prune_s_own_output_is_replaced(tmp_path):
    """Pruned into a finished fine-tuning folder, the new model.* sat beside the old run's best.safetensors
    and metrics.jsonl, which described another network."""
    from compress.errors import CompressError

    base = trained_like(tmp_path, 0.0, classes=[str(i) for i in range(10)])
    trained = tmp_path / "trained"
    save_model_dir(create_model("vgg11", width=0.125), trained, json.loads((base / "model.json").read_text()))
    (trained / "metrics.jsonl").write_text("{}\n")
    before = sorted((p.name, p.read_bytes()) for p in trained.iterdir())
    with pytest.raises(CompressError, match=r"holds a training run \(metrics.jsonl\).*choose a new folder"):
        prune(base, trained, PruneRequest(percent=0.5))
    assert sorted((p.name, p.read_bytes()) for p in trained.iterdir()) == before
    first = prune(base, tmp_path / "pruned", PruneRequest(percent=0.5))
    again = prune(base, tmp_path / "pruned", PruneRequest(percent=0.25))
    assert again["macs"] > first["macs"]


def test_bn_recalibration_never_trains_on_a_batch_of_one_image(tmp_path, cifar10_archive, monkeypatch):
    """--recalibrate 251 ended in a batch of one image, which a BN on a 1x1 map (ResNet-18's last block at
    32 px) cannot normalize in training mode: the prune crashed after its work. 1 is refused at once."""
    from compress.errors import CompressError

    monkeypatch.setenv("COMPRESS_DATA", str(cifar10_archive))
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=10)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.0)
    classes = load_dataset("cifar10", "test", limit=10).classes
    save_model_dir(model, tmp_path / "base", {"arch": "resnet18", "arch_kwargs": {"num_classes": 10},
                                             "classes": classes, "input_size": [3, 32, 32],
                                             "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}})
    data = DataOptions("cifar10", train_limit=251, test_limit=20)
    with pytest.raises(CompressError, match="at least 2 training images, got 1"):
        prune(tmp_path / "base", tmp_path / "one", PruneRequest(percent=0.3), data=data, recalibrate=1)
    assert not (tmp_path / "one").exists()
    meta = prune(tmp_path / "base", tmp_path / "pruned", PruneRequest(percent=0.3), data=data, recalibrate=251)
    assert meta["pruning"]["bn_recalibration_images"] == 250
