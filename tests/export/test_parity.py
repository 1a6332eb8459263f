"""Parity checks: pass on a faithful export, raise a one-line ParityError beyond tolerance, and
report both accuracies when labels are given."""

import numpy as np
import onnx
import pytest

from compress.exporting.errors import OnnxFileError, ParityError
from compress.exporting.parity import check_parity
from export_helpers import images, scaled_gemm


def test_a_small_drift_beyond_atol_is_an_error(vgg_onnx, tmp_path):
    model, path = vgg_onnx
    bad = scaled_gemm(path, tmp_path / "bad.onnx", 1.01)
    with pytest.raises(ParityError) as err:
        check_parity(model, bad, images(16), atol=1e-3, min_agreement=0.999)
    message = str(err.value)
    assert "\n" not in message and "fails parity" in message and "max |Δlogit|" in message
    result = check_parity(model, bad, images(16), atol=1e-3, raise_on_failure=False)
    assert not result.passed and result.max_abs_diff > 1e-3


def test_top1_disagreement_is_an_error_even_within_atol(vgg_onnx, tmp_path):
    model, path = vgg_onnx
    flipped = scaled_gemm(path, tmp_path / "neg.onnx", -1.0)
    with pytest.raises(ParityError, match="top-1 agreement"):
        check_parity(model, flipped, images(16), atol=1e9, min_agreement=0.999)


def test_reference_can_be_a_callable_or_another_onnx_file(vgg_onnx):
    model, path = vgg_onnx
    x = images(8)
    via_onnx = check_parity(path, path, x)
    assert via_onnx.max_abs_diff == 0.0
    import torch

    def fn(a):
        with torch.no_grad():
            return model(torch.from_numpy(a)).numpy()

    assert check_parity(fn, path, x).passed


def test_accuracies_with_labels(vgg_onnx):
    model, path = vgg_onnx
    x = images(20)
    import torch

    with torch.no_grad():
        labels = model(torch.from_numpy(x)).argmax(1).numpy()
    labels[:5] = (labels[:5] + 1) % 10  # five wrong on purpose: both accuracies must be 75%
    result = check_parity(model, path, x, labels=labels, accuracy_tol=0.0005)
    assert result.accuracy_reference == result.accuracy_onnx == 0.75
    assert "accuracy reference 75.00%" in result.summary()


def test_bad_inputs_and_missing_files(vgg_onnx, tmp_path):
    model, path = vgg_onnx
    with pytest.raises(ValueError, match="N×C×H×W"):
        check_parity(model, path, np.zeros((3, 32, 32), np.float32))
    with pytest.raises(OnnxFileError, match="not found"):
        check_parity(model, tmp_path / "none.onnx", images(2))


# --- every output of a multi-output graph is checked ---------------------------------------------------------

def _two_headed(tmp_path):
    import torch

    from compress.exporting.onnx_export import export_onnx
    from export_helpers import metadata

    class TwoHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = torch.nn.Conv2d(3, 6, 3, padding=1)
            self.cls = torch.nn.Linear(6, 4)
            self.small = torch.nn.Conv2d(6, 2, 1)

        def forward(self, x):
            f = torch.relu(self.conv(x))
            return {"logits": self.cls(f.mean((2, 3))), "feats": self.small(f) * 1e-4}

    model = TwoHeads().eval()
    meta = metadata()
    meta.pop("classes")
    return model, export_onnx(model, tmp_path / "two.onnx", input_size=[3, 32, 32], metadata=meta)


def test_a_wrong_second_output_fails_parity(tmp_path):
    import torch

    model, path = _two_headed(tmp_path)
    assert check_parity(model, path, images(8)).passed
    with torch.no_grad():
        model.small.weight.mul_(1.01)  # only the second output changes, and it is small in value
    with pytest.raises(ParityError) as err:
        check_parity(model, path, images(8))
    assert "beyond tolerance: feats" in str(err.value) and "\n" not in str(err.value)


def test_fp16_tolerance_applies_to_each_output_and_labels_need_a_classifier(tmp_path):
    model, path = _two_headed(tmp_path)
    result = check_parity(path, path, images(4), rel_tol=2e-2)
    assert result.passed and {o["name"] for o in result.outputs} == {"logits", "feats"}
    assert all(o["atol"] == pytest.approx(2e-2 * o["scale"]) for o in result.outputs)
    with pytest.raises(ValueError, match="several outputs"):
        check_parity(model, path, images(4), labels=np.zeros(4, dtype=np.int64))
    assert result.to_dict()["outputs"][0]["name"] == "logits"


def test_a_single_output_without_a_class_axis_is_compared_without_agreement(tmp_path):
    import torch

    from compress.exporting.onnx_export import export_onnx
    from export_helpers import metadata

    class Score(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 1, 3)

        def forward(self, x):
            return self.conv(x).mean((1, 2, 3))

    model = Score().eval()
    path = export_onnx(model, tmp_path / "s.onnx", input_size=[3, 32, 32], metadata=metadata())
    result = check_parity(model, path, images(4))
    assert result.passed and result.top1_agreement is None and "agreement" not in result.summary()


def test_a_forward_that_scales_its_input_in_place_changes_nothing_of_the_callers(tmp_path):
    """The reference ran on the caller's own memory: a forward with `x.mul_(0.5)` changed the caller's
    array, and ONNX Runtime then ran on the halved inputs, failing a faithful export."""
    import torch

    from compress.exporting.onnx_export import export_onnx

    class HalvesItsInput(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = torch.nn.Conv2d(3, 4, 3), torch.nn.Linear(4, 5)

        def forward(self, x):
            x.mul_(0.5)
            return self.fc(self.conv(x).mean((2, 3)))

    torch.manual_seed(0)
    model = HalvesItsInput().eval()
    meta = {"mean": [0, 0, 0], "std": [1, 1, 1], "arch": "halves", "source_sha256": "0" * 64, "toolkit_version": "0"}
    path = export_onnx(model, tmp_path / "halves.onnx", input_size=[3, 8, 8], metadata=meta)
    x = np.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(np.float32)
    before = x.copy()
    assert check_parity(model, path, x).passed
    assert np.array_equal(x, before)


def test_a_non_finite_reference_is_refused_not_compared(vgg_onnx):
    """With a tolerance relative to the reference's largest value, one infinite logit made the bound
    infinite and a reference 50x off passed on top-1 agreement alone."""
    import onnxruntime as ort

    _, path = vgg_onnx
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def wrong(a):
        out = 50 * session.run(None, {session.get_inputs()[0].name: a})[0]
        out[0, out[0].argmax()] = np.inf
        return out

    with pytest.raises(ParityError, match="the reference produced non-finite logits"):
        check_parity(wrong, path, images(8), rel_tol=2e-2)


def test_run_onnx_gives_the_logits_of_a_pair_and_refuses_two_outputs_that_are_not_one(tmp_path):
    """quantize compares files by run_onnx: one file's logits were compared with another's probabilities."""
    from onnx_builders import probabilities_and_logits, tiny_cnn

    from compress.exporting.errors import ExportError
    from compress.exporting.parity import onnx_session, run_onnx

    x = np.random.default_rng(0).standard_normal((5, 3, 8, 8)).astype(np.float32)
    for name, model in (("one.onnx", tiny_cnn()), ("pair.onnx", probabilities_and_logits()),
                        ("not.onnx", probabilities_and_logits("identity", 3.0))):
        onnx.save(model, str(tmp_path / name))
    logits = run_onnx(onnx_session(tmp_path / "one.onnx"), x)
    assert np.array_equal(run_onnx(onnx_session(tmp_path / "pair.onnx"), x), logits)
    with pytest.raises(ExportError, match="two outputs of one shape, and the first is not the softmax"):
        run_onnx(onnx_session(tmp_path / "not.onnx"), x)


def _precision_flags():
    import torch

    return torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision


@pytest.mark.parametrize("user_sets", ["new", "legacy"])
def test_the_torch_reference_runs_without_tf32_and_gives_the_settings_back(vgg_onnx, user_sets):
    """CUDA runs float32 convolutions in TF32 by default: a reference computed so is 1e-3 off. A user may have
    turned TF32 on with either of torch's two settings; reading the older one raises once the newer is set."""
    import torch

    model, path = vgg_onnx
    seen = []
    hook = model.register_forward_hook(lambda *_: seen.append(_precision_flags()))
    before = _precision_flags()
    if user_sets == "new":
        torch.backends.cuda.matmul.fp32_precision = torch.backends.cudnn.conv.fp32_precision = "tf32"
    else:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        assert check_parity(model, path, images(4)).passed
        assert seen and set(seen) == {("ieee", "ieee")}
        assert _precision_flags() == ("tf32", "tf32")
        if user_sets == "legacy":  # still readable the old way
            assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        hook.remove()
        torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = before
