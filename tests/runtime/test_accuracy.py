"""Accuracy is a classifier's figure, from finite logits only."""

import numpy as np
import onnx
import pytest
from onnx_builders import (MEAN, STD, detector_like, probabilities_and_logits, reference_logits, renamed_classifier,
                           tiny_cnn, with_nonfinite_weights)

from compress.runtime.accuracy import classifier_problem, is_probability_pair, logits_in, normalize, onnx_accuracy
from compress.runtime.errors import NonFiniteOutputError, NotAClassifierError

IMAGES = np.random.default_rng(1).integers(0, 256, (9, 3, 8, 8), dtype=np.uint8)


@pytest.mark.parametrize("shapes,classes,words", [
    ([(4, 10)], 10, None),
    ([(4, 10), (4, 4, 8, 8)], 10, "2 outputs"),
    ([(4, 4, 8, 8)], 10, "output is N x 4 x 8 x 8"),
    ([(4, 8)], 10, "8 logits for 10 classes"),
    ([(4, 10)], None, "names no classes"),
    ([(4, 10), (4, 10)], 10, None),  # probabilities and logits: their values are checked when run
    ([(4, 8), (4, 8)], 10, "8 logits for 10 classes"),
    ([(4, 10), (4, 10), (4, 10)], 10, "3 outputs"),
])
def test_what_counts_as_a_classifier(shapes, classes, words):
    problem = classifier_problem(shapes, classes)
    assert problem is None if words is None else words in problem


def test_a_classifier_is_known_by_its_output_not_its_names(tmp_path):
    path = tmp_path / "renamed.onnx"
    onnx.save(renamed_classifier(), str(path))
    labels = reference_logits(tiny_cnn(), normalize(IMAGES, MEAN, STD)).argmax(1)
    assert onnx_accuracy(path, IMAGES, labels, batch_size=4)["accuracy"] == 1.0


def test_a_detector_gets_no_accuracy(tmp_path):
    path = tmp_path / "det.onnx"
    onnx.save(detector_like(), str(path))
    with pytest.raises(NotAClassifierError, match="det.onnx.*2 outputs"):
        onnx_accuracy(path, IMAGES, np.zeros(9, np.int64))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nonfinite_logits_give_no_accuracy(tmp_path, value):
    """argmax over NaN logits picks class 0 for every image: on balanced labels that read as 10.00%."""
    path = tmp_path / "broken.onnx"
    onnx.save(with_nonfinite_weights(tiny_cnn(), value=value), str(path))
    with pytest.raises(NonFiniteOutputError, match="broken.onnx outputs NaN or infinite logits for 4 of 4 images"):
        onnx_accuracy(path, IMAGES, np.arange(9) % 10, batch_size=4)


def test_labels_beyond_the_class_count_are_refused(tiny_onnx):
    with pytest.raises(ValueError, match="labels run from 4 to 12, tiny.onnx has 10 classes"):
        onnx_accuracy(tiny_onnx, IMAGES, np.arange(9) + 4)


def test_the_logits_of_a_pair_are_its_second_output_only_when_the_first_is_their_softmax():
    x = np.random.default_rng(0).standard_normal((6, 5)).astype(np.float32) * 3
    e = np.exp(x - x.max(1, keepdims=True))
    probs = e / e.sum(1, keepdims=True)
    assert logits_in([x]) is x
    assert logits_in([probs, x]) is x
    assert logits_in([probs.astype(np.float16).astype(np.float32), x]) is x  # an fp16 engine's rounding
    for first in (x, probs + 0.05, probs.T.copy().T[:, ::-1], np.full_like(probs, np.nan)):
        assert logits_in([first, x]) is None
    assert logits_in([probs, x, x]) is None
    wide = np.random.default_rng(1).standard_normal((250, 1000)) * 0.5  # every probability under PAIR_TOLERANCE
    unrelated = np.exp(np.random.default_rng(2).standard_normal((250, 1000)))
    for first in (np.zeros_like(wide), unrelated / unrelated.sum(1, keepdims=True)):
        assert logits_in([first, wide]) is None
    assert not is_probability_pair(probs[:, :3], x)
    assert not is_probability_pair(probs.astype(np.int64), x)


def test_an_exported_classifier_with_probabilities_and_logits_gets_the_logits_accuracy(tmp_path):
    path = tmp_path / "pair.onnx"
    onnx.save(probabilities_and_logits(), str(path))
    labels = reference_logits(tiny_cnn(), normalize(IMAGES, MEAN, STD)).argmax(1)
    labels[:3] = (labels[:3] + 1) % 10
    assert onnx_accuracy(path, IMAGES, labels, batch_size=4) == {"accuracy": 6 / 9, "correct": 6, "images": 9}


@pytest.mark.parametrize("first,temperature", [("identity", 1.0), ("softmax", 3.0)])
def test_two_outputs_that_are_not_probabilities_and_logits_get_no_accuracy(tmp_path, first, temperature):
    path = tmp_path / "pair.onnx"
    onnx.save(probabilities_and_logits(first, temperature), str(path))
    with pytest.raises(NotAClassifierError, match="pair.onnx: its first output is not the softmax of its second"):
        onnx_accuracy(path, IMAGES, np.zeros(9, np.int64))


@pytest.mark.parametrize("mean, std", [([0.5] * 3, [1e-45] * 3), ([1e38] * 3, [1e-3] * 3)])
def test_a_normalization_that_overflows_float32_is_named_not_blamed_on_the_model(mean, std):
    with pytest.raises(ValueError, match="makes the input infinite in float32"):
        normalize(np.full((1, 3, 2, 2), 200, np.uint8), mean, std)
