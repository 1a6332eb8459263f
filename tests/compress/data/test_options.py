"""compress.data.options: one rule sizes data for a model, on a typed error; DataOptions never changes; the
dataset a spec reads (COMPRESS_DATA included) is known in one place."""

import dataclasses

import pytest
import torch

import compress.data.options as options
from compress.data.options import DataOptions, data_source, load_dataset_for, sized_for
from compress.errors import CompressError, MixedImageSizes
from tests_support import make_image_folder, make_mixed_folder


class _Data:
    def __init__(self, side):
        self.input_size = (3, side, side)


def _loader(own):
    """A load(size) that records its calls; at its own size it gives `own` (a side, or an exception)."""
    calls = []

    def load(size):
        calls.append(size)
        if size is None and isinstance(own, Exception):
            raise own
        return _Data(own if size is None else size)

    return load, calls


def test_the_rule_uses_the_images_own_size_when_it_is_the_models():
    load, calls = _loader(32)
    assert sized_for(load, 32).input_size == (3, 32, 32) and calls == [None]
    load, calls = _loader(48)
    assert sized_for(load, 32).input_size == (3, 32, 32) and calls == [None, 32]


def test_mixed_sizes_are_resized_and_any_other_error_is_raised():
    load, calls = _loader(MixedImageSizes("a.png is 40x30, b.png is 50x70"))
    assert sized_for(load, 64).input_size == (3, 64, 64) and calls == [None, 64]
    load, calls = _loader(CompressError("dataset not found: /nowhere"))
    with pytest.raises(CompressError, match="not found"):
        sized_for(load, 64)
    assert calls == [None]  # not retried at another size: the data is missing at every size


def test_a_folder_of_mixed_sizes_is_resized_for_the_model(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESS_CACHE", str(tmp_path / "cache"))
    folder = make_mixed_folder(tmp_path / "mixed")
    with pytest.raises(MixedImageSizes):
        options.load_dataset(str(folder), "test", mode="memory")
    assert load_dataset_for(str(folder), "test", [3, 40, 40], mode="memory").input_size == (3, 40, 40)
    data = DataOptions(str(folder), mode="memory").for_model({"input_size": [3, 40, 40]})
    assert data.split("train").input_size == (3, 40, 40)


def test_for_model_returns_a_copy_and_leaves_the_callers_options_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESS_CACHE", str(tmp_path / "cache"))
    folder = make_image_folder(tmp_path / "imgs", size=16)
    calls = []
    real = options.load_dataset
    monkeypatch.setattr(options, "load_dataset", lambda *a, **k: calls.append(k["input_size"]) or real(*a, **k))
    data = DataOptions(str(folder))
    sized = data.for_model({"input_size": [3, 16, 16]})
    assert (data.model_size, sized.model_size) == (None, 16) and sized is not data
    assert data.describe()["input_size"] is None and sized.describe()["input_size"] == 16
    assert data.split("test") is sized.split("test")  # own size is the model's: loaded once, shared
    bigger = data.for_model({"input_size": [3, 24, 24]})
    assert bigger.split("test").input_size == (3, 24, 24)
    assert calls == [None, 24]
    assert DataOptions(str(folder), input_size=20).for_model({"input_size": [3, 24, 24]}).model_size is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.input_size = 32


def test_an_own_size_that_fails_is_tried_once_per_split(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESS_CACHE", str(tmp_path / "cache"))
    folder = make_mixed_folder(tmp_path / "mixed")
    calls = []
    real = options.load_dataset
    monkeypatch.setattr(options, "load_dataset", lambda *a, **k: calls.append(k["input_size"]) or real(*a, **k))
    data = DataOptions(str(folder), mode="memory").for_model({"input_size": [3, 40, 40]})
    for _ in range(2):
        assert isinstance(data.split("test").labels, torch.Tensor)
    assert calls == [None, 40]  # the own-size attempt failed once and is not decoded again


def test_the_data_source_resolves_compress_data(tmp_path, monkeypatch):
    folder = make_image_folder(tmp_path / "imgs", size=8)
    monkeypatch.setenv("COMPRESS_DATA", str(folder))
    assert data_source("cifar10") == folder and DataOptions("cifar10").source() == folder
    assert data_source(str(folder)) == folder
    assert data_source("cifar100") is None and data_source(str(tmp_path / "none")) is None and data_source(None) is None
    monkeypatch.delenv("COMPRESS_DATA")
    assert data_source("cifar10") is None
