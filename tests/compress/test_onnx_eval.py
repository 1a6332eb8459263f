"""compress.onnx_eval: the accuracy of an ONNX file, only on data whose classes are the file's."""

import pytest
import torch
from export_helpers import CLASSES, MEAN, STD

from compress.data import ImageSet
from compress.errors import CompressError
from compress.exporting.onnx_export import export_onnx
from compress.onnx_eval import evaluate_onnx


@pytest.fixture
def classifier(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, len(CLASSES), 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    meta = {"classes": CLASSES, "mean": MEAN, "std": STD, "input_size": [3, 16, 16], "arch": "net",
            "precision": "fp32", "source_sha256": "0" * 64, "toolkit_version": "0.1.0"}
    return export_onnx(net.eval(), tmp_path / "c.onnx", input_size=[3, 16, 16], metadata=meta)


def _data(classes):
    return ImageSet(torch.zeros(4, 3, 16, 16, dtype=torch.uint8), torch.zeros(4, dtype=torch.long), classes)


def test_the_file_s_own_classes_are_measured(classifier):
    assert evaluate_onnx(classifier, _data(list(CLASSES)))["images"] == 4


def test_data_whose_class_names_differ_is_refused(classifier):
    """Folders renamed x, y, ...: `compress eval FILE.onnx` reported an accuracy on someone else's labels, where
    a model directory was refused."""
    renamed = [f"other{i}" for i in range(len(CLASSES))]
    with pytest.raises(CompressError, match=r"class 0 is 'other0' in the data, .* in the file\); labels would not"):
        evaluate_onnx(classifier, _data(renamed))
    swapped = [CLASSES[1], CLASSES[0], *CLASSES[2:]]
    with pytest.raises(CompressError, match="class 0 is"):
        evaluate_onnx(classifier, _data(swapped))


def test_eval_sizes_images_of_another_size_for_the_file_as_for_a_model_directory(tmp_path, classifier):
    """`compress eval FILE.onnx --data 8-pixel-images` was refused ("the data's images are [3, 8, 8]") where
    `bench` on the same file and `eval` on its model directory sized them."""
    import json

    from click.testing import CliRunner
    from tests_support import make_image_folder

    from compress.cli import main

    folder = make_image_folder(tmp_path / "imgs", classes=tuple(CLASSES), per_class=1, size=8)
    result = CliRunner().invoke(main, ["eval", str(classifier), "--data", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["images"] == len(CLASSES)
