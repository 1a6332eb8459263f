"""compress.parity_review: an FP32 parity failure that is only rounding passes on a second look in float64; an
export that computes something else, however slightly, still fails, and so does any model whose own runs cannot
tell rounding from another computation."""

import copy

import numpy as np
import pytest
import torch
from export_helpers import images, lively, metadata, scaled_gemm
from torch import nn

from compress.exporting.errors import ParityError
from compress.exporting.onnx_export import export_onnx
from compress.exporting.parity import check_parity
from compress.models import create_model
from compress.parity_review import review


def _checked(model, path, x, **kw):
    return check_parity(model, path, x, review=lambda *found: review(model, *found), **kw)


@pytest.fixture(scope="module")
def loud(tmp_path_factory):
    """A small VGG whose classifier is scaled so that its logits run to about 1e6, as an overfit head's or a
    pruned network's can: torch float32 and float64 then differ by far more than the default atol."""
    torch.manual_seed(0)
    model = lively(create_model("vgg11", num_classes=10, width=0.125))
    with torch.no_grad():
        model.classifier.weight.mul_(1e5)
    path = tmp_path_factory.mktemp("loud") / "loud.onnx"
    export_onnx(model, path, input_size=[3, 32, 32], metadata=metadata("vgg11"))
    return model, path


def test_rounding_of_large_logits_passes_on_the_float64_look(loud):
    model, path = loud
    x = images(32)
    assert not check_parity(model, path, x, raise_on_failure=False).passed  # without a review: refused
    result = _checked(model, path, x)
    assert result.max_abs_diff > result.atol and result.passed
    (row,) = result.float64["outputs"]
    assert row["images"] == 8 and 0 < row["torch_fp32_error"]
    assert row["onnx_error"] <= row["tolerance"] == 10 * row["torch_fp32_error"]
    assert row["rerun_error"] <= row["tolerance"]
    assert "reviewed against float64 on the 8 inputs where it differed most" in result.summary()
    assert result.to_dict()["float64"] == result.float64 and result.to_dict()["passed"]
    assert next(model.parameters()).dtype == torch.float32  # the review works on copies


def test_a_slightly_different_computation_still_fails(loud, tmp_path):
    model, path = loud
    with pytest.raises(ParityError, match="reviewed against float64 .* ONNX Runtime is off by"):
        _checked(model, scaled_gemm(path, tmp_path / "tampered.onnx", 1.0001), images(32))  # 0.01%


class Noisy(nn.Module):
    """Draws random numbers in eval: its own runs differ, so they cannot tell rounding from a wrong export."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        y = self.inner(x)
        return y + 0.05 * y.abs().max() * torch.randn_like(y)


class BatchStatistics(nn.Module):
    """Centres over the batch in eval (as BatchNorm without running statistics does): the review's smaller
    batch computes something else than the checked one did."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        y = self.inner(x)
        return y + (y - y.mean(0, keepdim=True))


@pytest.mark.parametrize("wrapper", [Noisy, BatchStatistics])
def test_a_model_whose_own_runs_differ_gets_no_review(loud, tmp_path, wrapper):
    model, _ = loud
    wrapped = wrapper(copy.deepcopy(model)).eval()
    path = tmp_path / "wrapped.onnx"
    export_onnx(wrapped, path, input_size=[3, 32, 32], metadata=metadata("vgg11"))
    wrong = scaled_gemm(path, tmp_path / "wrong.onnx", 1.01)
    result = _checked(wrapped, wrong, images(32), raise_on_failure=False, min_agreement=0.0)
    assert not result.passed and result.float64 is None


class TwoScales(nn.Module):
    """Outputs of very different sizes: the large one fails by rounding, the small one is wrong on a few
    images (those whose first pixel is above 2) when `bug` is set."""

    def __init__(self, bug: bool):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.big, self.small, self.bug = nn.Linear(16, 10), nn.Linear(16, 4), bug
        with torch.no_grad():
            self.big.weight.mul_(1e7)

    def forward(self, x):
        f = torch.relu(self.conv(x)).mean((2, 3))
        small = torch.tanh(self.small(f))
        if self.bug:
            small = small + 0.02 * torch.relu(x[:, :1, 0, 0] - 2.0)
        return self.big(f), small


def test_each_failed_output_is_reviewed_on_its_own_worst_images_and_the_others_keep_their_tolerance(tmp_path):
    torch.manual_seed(0)
    right, wrong = TwoScales(False).eval(), TwoScales(True).eval()
    wrong.load_state_dict(right.state_dict())
    x = np.random.default_rng(1).standard_normal((64, 3, 32, 32)).astype(np.float32)
    for model, name in ((right, "right.onnx"), (wrong, "wrong.onnx")):
        export_onnx(model, tmp_path / name, input_size=[3, 32, 32], metadata=metadata(classes=None))
    ok = _checked(right, tmp_path / "right.onnx", x)
    assert ok.passed and [o["name"] for o in ok.float64["outputs"]] == ["output0"]
    bad = _checked(right, tmp_path / "wrong.onnx", x, raise_on_failure=False)
    assert not bad.passed
    assert {o["name"] for o in bad.float64["outputs"]} == {"output0", "output1"}
    small = next(o for o in bad.float64["outputs"] if o["name"] == "output1")
    assert small["onnx_error"] > small["tolerance"]


def test_a_model_that_cannot_run_in_float64_keeps_its_failure(loud):
    model, path = loud

    class Float32Only(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = copy.deepcopy(model)

        def forward(self, x):
            if x.dtype != torch.float32:
                raise RuntimeError("float32 only")
            return self.inner(x)

    result = _checked(Float32Only(), path, images(32), raise_on_failure=False)
    assert not result.passed and result.float64 is None and "float64" not in result.to_dict()


def test_a_model_sharing_tensors_with_its_copy_is_not_converted(loud):
    """A float64 copy that shared tensors with the model would have turned the caller's model to float64."""
    model, path = loud

    class Shares(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = copy.deepcopy(model)

        def forward(self, x):
            return self.inner(x)

        def __deepcopy__(self, memo):
            return self

    shared = Shares()
    result = _checked(shared, path, images(32), raise_on_failure=False)
    assert not result.passed and result.float64 is None
    assert all(p.dtype == torch.float32 for p in shared.parameters())


def test_a_faithful_export_within_atol_is_not_reviewed(tmp_path):
    model = lively(create_model("vgg11", num_classes=10, width=0.125))
    path = export_onnx(model, tmp_path / "vgg.onnx", input_size=[3, 32, 32], metadata=metadata("vgg11"))
    calls = []
    result = check_parity(model, path, images(16), review=lambda *found: calls.append(found))
    assert result.passed and result.float64 is None and calls == []
