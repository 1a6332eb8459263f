"""Files written before the structural step of issue 16 (commit a5f4821: compress/pipeline.py, top-level
models/export/runtime packages, torch-pruning's graph) still load and mean the same: a pruned
pre-activation ResNet's model directory (consumer-side selections included) and its plan.json.
The fixture was written by that commit's code: `compress.prune` on a preresnet20 ×0.25 with seeded BN,
`plan.save`, `compress.save_model`, and the logits of a seeded probe batch."""

import json
from pathlib import Path

import torch

import compress
from compress.measure import layer_widths
from compress.models import create_model

FIXTURE = Path(__file__).parent / "fixtures" / "before_issue16"


def _probe():
    expected = json.loads((FIXTURE / "expected.json").read_text())
    probe = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(expected["probe_seed"]))
    return probe, torch.tensor(expected["logits"])


def test_a_model_directory_written_before_loads_and_computes_the_same():
    model, meta = compress.load_model(FIXTURE / "model")
    probe, logits = _probe()
    with torch.no_grad():
        torch.testing.assert_close(model(probe), logits, rtol=0, atol=1e-5)
    assert meta["classes"] == ["a", "b", "c", "d"]


def test_a_plan_written_before_replays_to_the_same_widths():
    saved, _ = compress.load_model(FIXTURE / "model")
    fresh = create_model("preresnet20", num_classes=4, width=0.25).eval()
    compress.Plan.load(FIXTURE / "plan.json").apply(fresh, torch.zeros(1, 3, 32, 32))
    assert layer_widths(fresh) == layer_widths(saved)
