"""`compress slim --passes N`: the paper's multi-pass scheme, one resumable run."""

import json
import shutil

import pytest
from click.testing import CliRunner

from compress.cli import main


@pytest.mark.slow
def test_three_passes_prune_further_each_time_and_resume(tmp_path, cifar10_archive, monkeypatch):
    monkeypatch.setenv("COMPRESS_DATA", str(cifar10_archive))
    out = tmp_path / "run"
    args = ["slim", "--arch", "vgg11", "--width", "0.125", "--train-limit", "200", "--test-limit", "100",
            "--pretrain-epochs", "0", "--epochs", "1", "--finetune-epochs", "1", "--percent", "0.3", "--passes", "3",
            "--out", str(out)]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["passes"] == 3
    names = list(summary["stages"])
    assert names == ["sparse", "pruned-1", "finetuned-1", "pruned-2", "finetuned-2", "pruned-3", "finetuned-3"]
    params = [summary["stages"][f"pruned-{k}"]["params"] for k in (1, 2, 3)]
    assert params[0] > params[1] > params[2]
    # Each pass prunes the previous pass's fine-tuned model, and no layer loses more than half per pass.
    for k in (2, 3):
        pruned = json.loads((out / f"pass{k}" / "pruned" / "model.json").read_text())
        tuned_before = json.loads((out / f"pass{k - 1}" / "finetuned" / "model.json").read_text())
        assert pruned["parent"]["sha256"] == tuned_before["weights_sha256"]
        plan = json.loads((out / f"pass{k}" / "pruned" / "plan.json").read_text())
        assert all(g["channels_after"] * 2 >= g["channels_before"] for g in plan["groups"])
    md = (out / "summary.md").read_text()
    assert "3 passes" in md and "finetuned-3" in md
    assert summary["plots"] == ["gamma_histogram.png", "kept_channels-1.png", "kept_channels-2.png",
                                "kept_channels-3.png", "training_curves.png"]
    for name in summary["plots"]:
        assert (out / name).stat().st_size > 1000 and f"]({name})" in md
    # Intermediate fine-tunings keep the sparsity penalty, the last one does not.
    assert json.loads((out / "pass1" / "finetuned" / "metrics.jsonl").read_text().splitlines()[0])[
        "sparsity_lambda"] > 0
    assert json.loads((out / "pass3" / "finetuned" / "metrics.jsonl").read_text().splitlines()[0])[
        "sparsity_lambda"] == 0

    # Interrupted during pass 2's fine-tuning: finished stages are kept, the rest is redone.
    kept = {p: (out / p / "model.json").stat().st_mtime_ns for p in ("sparse", "pass1/finetuned", "pass2/pruned")}
    (out / "pass2" / "finetuned" / "model.json").unlink()
    shutil.rmtree(out / "pass3")
    (out / "summary.json").unlink()
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    for p, stamp in kept.items():
        assert (out / p / "model.json").stat().st_mtime_ns == stamp, p
    assert (out / "pass3" / "finetuned" / "model.json").exists()
    assert json.loads((out / "summary.json").read_text())["stages"]["pruned-3"]["params"] == params[2]
