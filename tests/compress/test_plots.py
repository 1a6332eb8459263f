import json

import pytest
import torch

from compress.errors import CompressError
from compress.plots import (
    gamma_histogram,
    kept_channels,
    kept_channels_from_plan,
    read_metrics,
    training_curves,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def is_png(path):
    data = path.read_bytes()
    return data[:8] == PNG_MAGIC and len(data) > 2000


def test_gamma_histogram_per_stage_with_exact_zeros(tmp_path):
    sparse = torch.cat([torch.zeros(40), torch.rand(40, generator=torch.Generator().manual_seed(0)) + 0.1])
    out = gamma_histogram({"sparse": sparse, "finetuned": [0.3, 0.5, 0.0, 1e-4]}, tmp_path / "g.png",
                          threshold=0.05)
    assert out == tmp_path / "g.png" and is_png(out)
    assert is_png(gamma_histogram({"layers": [torch.ones(3), torch.zeros(2)]}, tmp_path / "h.png"))
    with pytest.raises(CompressError, match="no γ"):
        gamma_histogram({"sparse": []}, tmp_path / "e.png")
    assert not (tmp_path / "e.png").exists()


def test_kept_channels_and_from_plan(tmp_path):
    assert is_png(kept_channels(["f.0", "f.3", "f.7"], [16, 32, 64], [16, 10, 3], tmp_path / "k.png"))
    plan = {"percent": 0.5, "groups": [{"root": "a", "channels_before": 8, "channels_after": 4},
                                       {"root": "b", "channels_before": 8, "channels_after": 2}]}
    assert is_png(kept_channels_from_plan(plan, tmp_path / "p.png"))
    # A plan made to a budget records percent as null (the quick preset's): it plots all the same.
    budget_plan = {**plan, "percent": None, "budget": {"target": "macs", "asked": 0.5}}
    assert is_png(kept_channels_from_plan(budget_plan, tmp_path / "b.png"))
    with pytest.raises(CompressError, match="equally long"):
        kept_channels(["a"], [1, 2], [1], tmp_path / "bad.png")
    with pytest.raises(CompressError, match="malformed"):
        kept_channels_from_plan({"groups": [{"root": "a"}]}, tmp_path / "bad.png")


def test_training_curves_from_metrics_jsonl(tmp_path):
    lines = [json.dumps({"epoch": e, "test_accuracy": 0.1 * e, "train_loss": 2.0 / e, "gamma_under_1e-3": 0.1 * e})
             for e in range(1, 4)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n{\"epoch\": 4, \"tes")  # torn last line
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2, 3]
    out = training_curves({"sparse": records, "finetuned": records[:2]}, tmp_path / "curves.png")
    assert is_png(out)
    with pytest.raises(CompressError, match="at least one"):
        training_curves({"sparse": []}, tmp_path / "none.png")
