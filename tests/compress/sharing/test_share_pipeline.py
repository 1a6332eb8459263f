"""`compress share` end to end on a tiny VGG: codebook sizes, sparsity, fine-tuning, size report,
and decompression back to an identical model directory."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from compress.artifact import load_model_dir, save_model_dir
from compress.errors import CompressError
from compress.sharing.share import ShareOptions, decompress, parse_bits, share_model

ARCH_KWARGS = {"num_classes": 4, "width": 0.125}


@pytest.fixture
def model_dir(tmp_path):
    from compress.models import create_model

    torch.manual_seed(0)
    model = create_model("vgg11", **ARCH_KWARGS)
    meta = {"arch": "vgg11", "arch_kwargs": ARCH_KWARGS, "classes": ["c0", "c1", "c2", "c3"], "input_size": [3, 32, 32],
            "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}, "accuracy": 0.5,
            "origin": {"path": "unpruned", "params": 1_000_000, "accuracy": 0.6}}
    save_model_dir(model, tmp_path / "src", meta)
    return tmp_path / "src"


@pytest.fixture
def image_folder(tmp_path, monkeypatch):
    """A tiny ImageFolder with train/ and test/, four classes of 32x32 PNGs."""
    from PIL import Image

    monkeypatch.setenv("COMPRESS_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("test", 4)):
        for c in range(4):
            d = tmp_path / "data" / split / f"c{c}"
            d.mkdir(parents=True)
            for i in range(n):
                img = np.clip(rng.normal(60 * c, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i}.png")
    return tmp_path / "data"


def layer_weights(model):
    return {n: m.weight.detach().numpy() for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}


def test_parse_bits():
    spec = parse_bits("conv=6,fc=3,features.0=2")
    assert (spec.conv, spec.fc, spec.layers) == (6, 3, {"features.0": 2})
    assert (parse_bits("4").conv, parse_bits("4").fc) == (4, 4)
    assert parse_bits("fc=2").conv == 8
    for bad in ("conv=0", "conv=x", "=3", "conv=13"):
        with pytest.raises(CompressError):
            parse_bits(bad)


def test_share_limits_distinct_values_and_round_trips(model_dir, tmp_path):
    report = share_model(model_dir, tmp_path / "shared", ShareOptions(bits="conv=3,fc=2"))
    model, meta = load_model_dir(tmp_path / "shared")
    for name, w in layer_weights(model).items():
        assert np.unique(w).size <= (4 if name == "classifier" else 8), name
    assert meta["sharing"]["bits"] == {"conv": 3, "fc": 2}
    steps = {s["step"]: s for s in report["steps"]}
    assert steps["fp32 baseline (unpruned parent)"]["bytes"] == 4_000_000
    assert steps["fp32 baseline (unpruned parent)"]["accuracy"] == 0.6
    huff = steps["after Huffman coding (model.dcz file)"]
    assert huff["bytes"] == (tmp_path / "shared" / "model.dcz").stat().st_size
    assert huff["ratio"] > steps["after slimming"]["ratio"]
    on_disk = json.loads((tmp_path / "shared" / "share_report.json").read_text())
    assert on_disk["steps"] == report["steps"]
    assert "| after Huffman coding" in (tmp_path / "shared" / "share_report.md").read_text()

    restored_meta = decompress(tmp_path / "shared" / "model.dcz", tmp_path / "restored")
    restored, _ = load_model_dir(tmp_path / "restored")
    for (k, a), (k2, b) in zip(model.state_dict().items(), restored.state_dict().items()):
        assert k == k2 and a.dtype == b.dtype and torch.equal(a, b), k
    assert restored_meta["weights_sha256"] == meta["weights_sha256"]


def test_pruned_sharing_keeps_sparsity(model_dir, tmp_path):
    options = ShareOptions(bits="conv=4,fc=3", prune=0.6, offset_bits="conv=4,fc=3")
    report = share_model(model_dir, tmp_path / "shared", options)
    model, _ = load_model_dir(tmp_path / "shared")
    for name, w in layer_weights(model).items():
        assert (w == 0).mean() >= 0.6 - 1 / w.size, name
        assert np.unique(w[w != 0]).size <= (8 if name == "classifier" else 16)
    assert any(row["fillers"] > 0 for row in report["layers"])  # 4-bit offsets need fillers at 60% sparsity
    assert [s["step"] for s in report["steps"]][2] == "after weight pruning"
    decompress(tmp_path / "shared" / "model.dcz", tmp_path / "restored")
    restored, _ = load_model_dir(tmp_path / "restored")
    for a, b in zip(model.state_dict().values(), restored.state_dict().values()):
        assert torch.equal(a, b)


def test_finetuning_moves_centroids_but_keeps_codebook_and_mask(model_dir, image_folder, tmp_path):
    from compress.data.options import DataOptions

    data = DataOptions(str(image_folder))
    share_model(model_dir, tmp_path / "plain", ShareOptions(bits="conv=3,fc=2", prune=0.5))
    report = share_model(model_dir, tmp_path / "tuned",
                         ShareOptions(bits="conv=3,fc=2", prune=0.5, finetune_epochs=2, lr=0.01, batch_size=8),
                         data=data)
    plain, _ = load_model_dir(tmp_path / "plain")
    tuned, meta = load_model_dir(tmp_path / "tuned")
    moved = False
    for (name, a), b in zip(layer_weights(plain).items(), layer_weights(tuned).values()):
        assert np.array_equal(a == 0, b == 0), name  # the pruning mask survives fine-tuning
        assert np.unique(b).size <= (4 if name == "classifier" else 8) + 1  # + the pruned zero
        moved |= not np.array_equal(a, b)
    assert moved
    assert len(report["finetune_history"]) == 2
    assert {"slimmed", "pruned", "quantized", "finetuned"} <= set(report["accuracy"])
    assert meta["accuracy"] == report["accuracy"]["finetuned"]


def test_cli_share_and_decompress(model_dir, tmp_path):
    from compress.cli.share import share

    runner = CliRunner()
    result = runner.invoke(share, [str(model_dir), "--out", str(tmp_path / "s"), "--bits", "4", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["steps"][-1]["ratio"] > 1
    result = runner.invoke(share, ["--decompress", str(tmp_path / "s" / "model.dcz"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r" / "model.json").exists()


def test_cli_rejects_a_damaged_file_in_one_line(model_dir, tmp_path):
    from compress.cli import main

    share_model(model_dir, tmp_path / "s", ShareOptions(bits="4"))
    dcz = tmp_path / "s" / "model.dcz"
    blob = bytearray(dcz.read_bytes())
    blob[len(blob) // 2] ^= 1
    dcz.write_bytes(bytes(blob))
    result = CliRunner().invoke(main, ["share", "--decompress", str(dcz), "--out", str(tmp_path / "r")])
    assert result.exit_code != 0
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "checksum" in lines[0]
    assert not (tmp_path / "r" / "model.json").exists()


def test_cli_needs_data_for_finetuning(model_dir, tmp_path):
    from compress.cli.share import share

    result = CliRunner().invoke(share, [str(model_dir), "--out", str(tmp_path / "s"), "--finetune-epochs", "1"])
    assert result.exit_code != 0 and "--data" in result.output


def test_fine_tuning_on_batches_of_one_image_is_refused_before_the_k_means(model_dir, image_folder, tmp_path):
    """--batch-size 1 with --finetune-epochs crashed in BatchNorm after the k-means had run."""
    from compress.data.options import DataOptions

    with pytest.raises(CompressError, match=r"batch size \(--batch-size\) 1: BatchNorm needs at least 2 images"):
        share_model(model_dir, tmp_path / "out", ShareOptions(finetune_epochs=1, batch_size=1),
                    data=DataOptions(str(image_folder)), device="cpu")
    assert not (tmp_path / "out").exists()


def test_an_empty_item_in_a_bits_list_is_refused(model_dir, tmp_path):
    """--bits conv=8,,fc=5 (and --offset-bits alike) was accepted, the empty item dropped."""
    from compress.cli import main

    for bad in ("conv=8,,fc=5", "6,", ""):
        with pytest.raises(CompressError, match=r"--bits: empty item in"):
            parse_bits(bad)
    result = CliRunner().invoke(main, ["share", str(model_dir), "--out", str(tmp_path / "o"),
                                       "--offset-bits", "conv=8,,fc=5"])
    assert result.exit_code == 2
    assert result.output.strip() == "Error: --offset-bits: empty item in 'conv=8,,fc=5'"
    assert not (tmp_path / "o").exists()


def test_data_under_other_class_names_is_refused_before_any_work(model_dir, tmp_path):
    """The accuracies and the centroids' fine-tuning read labels as indices into the model's classes."""
    from compress.data.options import DataOptions
    from tests_support import make_image_folder

    other = make_image_folder(tmp_path / "other", classes=("c1", "c2", "c3", "x0"), per_class=2, size=32)
    with pytest.raises(CompressError, match="class 0 is 'c1' in the data, 'c0' in the model"):
        share_model(model_dir, tmp_path / "out", ShareOptions(bits="4"), data=DataOptions(str(other)), device="cpu")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("left,needle", [("metrics.jsonl", "a training run"), ("plan.json", "another model's files")])
def test_decompress_into_a_folder_of_another_models_files_is_refused(model_dir, tmp_path, left, needle):
    """Restored into a trained (or pruned) model's folder, the new model.* replaced that model's while its
    metrics.jsonl or plan.json stayed beside them, describing a network no longer there."""
    share_model(model_dir, tmp_path / "s", ShareOptions(bits=4))
    target = tmp_path / "other"
    target.mkdir()
    (target / left).write_text("{}\n")
    with pytest.raises(CompressError, match=f"holds {needle} \\({left}\\).*choose a new folder"):
        decompress(tmp_path / "s" / "model.dcz", target)
    assert [p.name for p in target.iterdir()] == [left]
    decompress(tmp_path / "s" / "model.dcz", tmp_path / "restored")
    decompress(tmp_path / "s" / "model.dcz", tmp_path / "restored")  # its own output is replaced


def test_share_into_a_pruned_models_folder_is_refused(model_dir, tmp_path):
    target = tmp_path / "pruned"
    target.mkdir()
    (target / "plan.json").write_text("{}\n")
    with pytest.raises(CompressError, match=r"holds another model's files \(plan.json\)"):
        share_model(model_dir, target, ShareOptions(bits=4))


def test_a_layer_that_does_not_learn_is_kept_exact():
    """YOLO's DFL is a Conv2d of fixed weights 0..15 with requires_grad False: sharing or pruning it moved
    a detector's boxes by up to 112 px, and centroid fine-tuning cannot repair what has no gradient."""
    from compress.sharing.share import apply_masks, frozen_layers, share_weights, weight_masks

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 16, 1, bias=False))
    fixed = model[1].weight
    fixed.requires_grad_(False)
    with torch.no_grad():
        fixed.copy_(torch.arange(fixed.numel(), dtype=torch.float32).view_as(fixed))
    before = fixed.clone()
    masks = weight_masks(model, 0.5)
    apply_masks(model, masks)
    shared = share_weights(model, parse_bits(2), parse_bits("conv=8,fc=5", "--offset-bits"), masks)
    assert frozen_layers(model) == ["1"] and [t.name for t in shared] == ["0.weight"] and set(masks) == {"0"}
    assert torch.equal(model[1].weight, before) and len(torch.unique(model[0].weight)) <= 5
    with pytest.raises(CompressError, match="^1 does not learn .*kept exact, not shared$"):
        share_weights(model, parse_bits("1=4"))


def test_a_folder_that_holds_another_model_is_not_replaced(model_dir, tmp_path):
    """`share --decompress S/model.dcz --out MODEL` replaced MODEL's full-precision weights with the 2-bit
    ones it was shared from, and `share A --out B` replaced B, with no flag and no word."""
    import hashlib
    import shutil

    plain = tmp_path / "plain"
    plain.mkdir()
    for name in ("model.json", "model.safetensors"):
        shutil.copy(model_dir / name, plain / name)
    before = hashlib.sha256((plain / "model.safetensors").read_bytes()).hexdigest()
    share_model(model_dir, tmp_path / "s", ShareOptions(bits=2))
    with pytest.raises(CompressError, match="holds another model \\(model.json\\); share --decompress would"):
        decompress(tmp_path / "s" / "model.dcz", plain)
    with pytest.raises(CompressError, match="holds another model \\(model.json\\); share would replace it"):
        share_model(model_dir, plain, ShareOptions(bits=2))
    assert hashlib.sha256((plain / "model.safetensors").read_bytes()).hexdigest() == before
    share_model(model_dir, tmp_path / "s", ShareOptions(bits=3))  # its own earlier output is replaced
