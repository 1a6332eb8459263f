"""compress.logits: one tensor of logits, or a (probabilities, logits) pair whose values are checked."""

import copy

import pytest
import torch
from torch import nn

from compress.errors import CompressError
from compress.logits import check_classifier, logits_of

from tests_support import make_image_folder


def _pair(logits: torch.Tensor):
    return logits.softmax(1), logits


def test_one_tensor_of_logits_is_taken_as_it_is():
    x = torch.randn(4, 10)
    assert logits_of(x) is x


@pytest.mark.parametrize("output", [torch.randn(4, 10, 2), torch.zeros(4, 10, dtype=torch.long), {"logits": 1}])
def test_outputs_that_are_not_logits_are_refused(output):
    with pytest.raises(CompressError, match="not one batch × classes tensor of float logits"):
        logits_of(output)


def test_probabilities_and_logits_give_the_logits():
    x = torch.randn(5, 7) * 4
    assert logits_of(_pair(x)) is x
    assert logits_of(list(_pair(x))) is x
    assert logits_of((x.softmax(1).to(torch.bfloat16), x)) is x  # probabilities rounded by autocast


@pytest.mark.parametrize("make", [
    lambda x: (x.softmax(1) + 0.01, x),  # not the softmax of the logits
    lambda x: (torch.zeros_like(x).to(torch.bfloat16), x),  # within the loose bf16 tolerance of many small values
    lambda x: (torch.randn_like(x).softmax(1).to(torch.bfloat16), x),
    lambda x: (x, x),
    lambda x: (x.softmax(1), x, x),
    lambda x: (x.softmax(0), x),  # softmax over the batch
    lambda x: ((x / 2).softmax(1), x),  # another temperature
    lambda x: (x.softmax(1)[:, :3], x),
], ids=["shifted", "zeros-bf16", "unrelated-bf16", "logits-twice", "three", "over-batch", "temperature",
        "other-shape"])
def test_a_pair_that_is_not_probabilities_and_their_logits_is_refused(make):
    x = torch.randn(6, 1000) * 0.5  # 1000 classes: every probability is under the bf16 tolerance
    with pytest.raises(CompressError, match="nor the pair of their softmax and them"):
        logits_of(make(x))


def test_nan_logits_in_a_pair_are_passed_on_for_the_caller_to_refuse():
    from compress.data import ImageSet
    from compress.training import NonFiniteOutput, evaluate

    class NanPair(nn.Module):
        def forward(self, x):
            logits = torch.zeros(len(x), 2)
            logits[0] = float("nan")
            return logits.softmax(1), logits

    data = ImageSet(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]), ["a", "b"])
    with pytest.raises(NonFiniteOutput, match="NaN or infinite logits for 1 of 4"):
        evaluate(NanPair(), data, [0.5] * 3, [0.25] * 3)


class ProbabilitiesInEval(nn.Module):
    """Logits in training, (probabilities, logits) in eval mode, as ultralytics' Classify head returns them."""

    def __init__(self, classes: int = 2):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes))

    def forward(self, x):
        logits = self.body(x)
        return logits if self.training else (logits.softmax(1), logits)


class FeatureMap(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x)


def test_training_and_accuracy_take_the_logits_of_the_pair(tmp_path):
    from compress.data import load_dataset
    from compress.training import Recipe, evaluate, fit

    root = make_image_folder(tmp_path / "imgs", per_class=4)
    train, test = load_dataset(str(root), "train"), load_dataset(str(root), "test")
    model = ProbabilitiesInEval()
    recipe = Recipe(epochs=1, batch_size=4, lr=0.01)
    teacher = ProbabilitiesInEval().eval()
    from compress.training import Distill

    result = fit(model, train, test, tmp_path / "run", recipe, mean=[0.5] * 3, std=[0.25] * 3, progress=False,
                 distill=Distill(teacher=teacher, temperature=2.0, alpha=0.5))
    measured = evaluate(model, test, [0.5] * 3, [0.25] * 3)
    assert measured["accuracy"] == result["last"]["test_accuracy"]

    class LogitsOnly(nn.Module):  # the same network, returning its logits alone
        def forward(self, x):
            return model.body(x)

    assert evaluate(LogitsOnly(), test, [0.5] * 3, [0.25] * 3) == measured


def test_a_model_without_logits_is_refused_before_any_training(tmp_path):
    from compress.data import load_dataset
    from compress.training import Recipe, fit

    root = make_image_folder(tmp_path / "imgs", per_class=2)
    train, test = load_dataset(str(root), "train"), load_dataset(str(root), "test")
    with pytest.raises(CompressError, match=r"the model returns torch.float32 \[2, 4, 6, 6\], not one batch"):
        fit(FeatureMap(), train, test, tmp_path / "run", Recipe(epochs=1, batch_size=2), mean=[0.5] * 3,
            std=[0.25] * 3, progress=False)
    assert not (tmp_path / "run").exists()


def test_a_teacher_without_logits_is_named():
    from compress.data import ImageSet

    data = ImageSet(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 1]), ["a", "b"])
    student = ProbabilitiesInEval().train()
    with pytest.raises(CompressError, match="the teacher returns"):
        check_classifier(student, data, [0.5] * 3, [0.25] * 3, teacher=FeatureMap())
    assert student.training  # the check leaves each network in the mode it found it in


def test_an_ultralytics_classifier_fine_tunes_and_gets_one_accuracy_in_torch_and_onnx(tmp_path):
    """YOLOv8n-cls returns (probabilities, logits) in eval mode and exports both as outputs."""
    tasks = pytest.importorskip("ultralytics.nn.tasks", reason="ultralytics is optional (AGPL; the dev extra has it)")
    import compress
    from hostile_support import invoke

    root = make_image_folder(tmp_path / "imgs", per_class=4, size=32)
    torch.manual_seed(0)
    model = tasks.ClassificationModel("yolov8n-cls.yaml", nc=2, verbose=False)
    compress.save_model(model, tmp_path / "cls", input_size=(3, 32, 32), classes=["cat", "dog"], mean=(0.5,) * 3,
                        std=(0.25,) * 3)
    result = invoke(["finetune", tmp_path / "cls", "--data", root, "--epochs", "1", "--out", tmp_path / "ft"])
    assert result.exit_code == 0, result.output
    torch_line = invoke(["eval", tmp_path / "ft", "--data", root])
    exported = invoke(["export", tmp_path / "ft", "--onnx", tmp_path / "ft.onnx", "--data", root])
    assert exported.exit_code == 0, exported.output  # parity on the labelled images: accuracy from the logits
    assert ": 2 outputs; worst" in exported.output and "; accuracy reference" in exported.output
    onnx_line = invoke(["eval", tmp_path / "ft.onnx", "--data", root])
    assert torch_line.exit_code == onnx_line.exit_code == 0, torch_line.output + onnx_line.output
    accuracy = [line.split(": ", 1)[1] for line in torch_line.output.splitlines() + onnx_line.output.splitlines()
                if "accuracy" in line]
    assert len(accuracy) == 2 and accuracy[0] == accuracy[1] and accuracy[0].endswith("on 8 images")


class WithAux(nn.Module):
    """An auxiliary classifier run in training mode only, as torchvision's GoogLeNet and Inception v3 have."""

    def __init__(self, fails: bool = False):
        super().__init__()
        self.body = ProbabilitiesInEval().body
        self.aux_head = nn.Linear(3 * 8 * 8, 2)
        self.fails = fails

    def forward(self, x):
        logits = self.body(x)
        if not self.training:
            return logits
        if self.fails:  # a head too small for the images, as Inception v3's at 80 px
            raise RuntimeError("Given input size: (768x3x3). Calculated output size: (768x0x0)\nmore")
        return logits, self.aux_head(x.flatten(1))


@pytest.mark.parametrize("fails,words", [
    (False, r"the model in training mode returns a tuple of 2 \(torch.float32 \[2, 2\], torch.float32 \[2, 2\]\)"),
    (True, r"the model in training mode fails on 2 images of the data \(RuntimeError: Given input size: "
           r"\(768x3x3\). Calculated output size: \(768x0x0\)\)"),
])
def test_an_auxiliary_classifier_is_refused_before_any_training_with_the_way_out(tmp_path, fails, words):
    from compress.data import ImageSet
    from compress.training import Recipe, fit

    data = ImageSet(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]), ["a", "b"])
    model = WithAux(fails)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(CompressError, match=words + r".*auxiliary classifiers aux_head\? turn them off"):
        fit(model, data, data, tmp_path / "run", Recipe(epochs=1, batch_size=2), mean=[0.5] * 3, std=[0.25] * 3,
            progress=False)
    assert not (tmp_path / "run").exists()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics did not move


def test_a_model_that_cannot_be_copied_still_trains(tmp_path):
    """The training-mode check runs on a copy; a model holding a lock cannot be copied and trained anyway."""
    import threading

    from compress.data import ImageSet
    from compress.training import Recipe, fit

    class Locked(ProbabilitiesInEval):
        def __init__(self):
            super().__init__()
            self.lock = threading.Lock()

    data = ImageSet(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]), ["a", "b"])
    result = fit(Locked(), data, data, tmp_path / "run", Recipe(epochs=1, batch_size=2), mean=[0.5] * 3,
                 std=[0.25] * 3, progress=False)
    assert result["last"]["test_accuracy"] == 0.5
