"""compress.export: one function for an nn.Module, a model directory or an ONNX file; parity-checked, guarded,
with the ONNX metadata built once."""

import re

import pytest
import torch

import compress
from compress.errors import CompressError
from compress.exporting.metadata import read_metadata
from compress.models import create_model
from compress.stages.export import OnnxShape, Parity, export_metadata, state_sha256
from tests_support import lively, make_image_folder

MEAN, STD = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]


def _vgg():
    return lively(create_model("vgg11", num_classes=10, width=0.0625))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("md") / "vgg"
    compress.save_model(_vgg(), out, arch="vgg11", arch_kwargs={"num_classes": 10, "width": 0.0625},
                        classes=[f"c{i}" for i in range(10)], input_size=32, mean=MEAN, std=STD)
    return out


def test_a_module_is_exported_with_its_description_and_checked(tmp_path):
    model = _vgg().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lines = []
    report = compress.export(model, tmp_path / "m.onnx", example=torch.zeros(2, 3, 32, 32),
                             meta={"classes": [f"k{i}" for i in range(10)], "mean": MEAN, "std": STD},
                             check=Parity(limit=8), log=lines.append)
    assert report["onnx"]["path"] == str(tmp_path / "m.onnx") and report["onnx"]["parity"]["passed"]
    assert report["onnx"]["parity"]["images"] == 8 and report["onnx"]["dynamic_batch"]
    meta = read_metadata(tmp_path / "m.onnx")
    assert meta["classes"][0] == "k0" and meta["mean"] == MEAN and meta["arch"] == "VGG"
    assert meta["precision"] == "fp32" and meta["input_size"] == [3, 32, 32]
    assert meta["source_sha256"] == state_sha256(model)
    assert model.training  # put back as it was, its BN statistics untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert any(line.startswith(f"wrote {tmp_path / 'm.onnx'} (fp32, opset 17, dynamic batch") for line in lines)
    assert any("parity ONNX Runtime vs torch on 8 random images" in line for line in lines)


def test_a_module_without_a_description_gets_neutral_metadata_and_a_static_batch(tmp_path):
    compress.export(_vgg(), tmp_path / "m.onnx", example=torch.zeros(4, 3, 32, 32), check=False,
                    onnx=OnnxShape(opset=13, dynamic_batch=False), log=lambda _m: None)
    import onnx

    proto = onnx.load(str(tmp_path / "m.onnx"))
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 4  # the example's batch
    assert proto.opset_import[0].version == 13
    meta = read_metadata(tmp_path / "m.onnx")
    assert meta["classes"] == [f"class{i}" for i in range(10)]
    assert meta["mean"] == [0.0] * 3 and meta["std"] == [1.0] * 3


def test_a_model_directory_to_fp16_beside_fp32(model_dir, tmp_path):
    from compress.artifact import file_sha256

    report = compress.export(model_dir, tmp_path / "v.onnx", precision="fp16", check=Parity(limit=16),
                             log=lambda _m: None)
    fp32 = tmp_path / "v.fp32.onnx"
    assert report["onnx"]["path"] == str(fp32) and report["fp16"]["path"] == str(tmp_path / "v.onnx")
    assert report["onnx"]["parity"]["passed"] and report["fp16"]["parity"]["passed"]
    meta32, meta16 = read_metadata(fp32), read_metadata(tmp_path / "v.onnx")
    assert meta32["precision"] == "fp32" and meta16["precision"] == "fp16"
    assert meta32["source_sha256"] == file_sha256(model_dir / "model.safetensors") and meta32["arch"] == "vgg11"
    # An ONNX source to FP16 only: nothing else is written.
    again = compress.export(fp32, tmp_path / "h.onnx", precision="fp16", check=Parity(limit=4), log=lambda _m: None)
    assert set(again) == {"fp16"} and read_metadata(tmp_path / "h.onnx")["precision"] == "fp16"


def test_the_metadata_is_built_once_from_model_json():
    meta = {"classes": ["a", "b"], "normalization": {"mean": MEAN, "std": STD}, "input_size": [3, 32, 32],
            "arch": "vgg11", "accuracy": 0.9}
    assert export_metadata(meta, "f" * 64, "fp16") == {
        "classes": ["a", "b"], "mean": MEAN, "std": STD, "input_size": [3, 32, 32], "arch": "vgg11",
        "precision": "fp16", "source_sha256": "f" * 64, "toolkit_version": compress.__version__}


def test_the_guard_knows_the_dataset_compress_data_names(model_dir, tmp_path, monkeypatch):
    from compress.guard import OutputOverlapError

    images = make_image_folder(tmp_path / "imgs", classes=[f"c{i}" for i in range(10)], per_class=1, size=32)
    monkeypatch.setenv("COMPRESS_DATA", str(images))
    victim = images / "test" / "c0" / "0.png"
    before = victim.read_bytes()
    with pytest.raises(OutputOverlapError, match="would overwrite a file of the input directory --data"):
        compress.export(model_dir, victim, check=Parity(data="cifar10"))
    assert victim.read_bytes() == before


def test_parity_on_data_needs_the_models_class_names_in_order(model_dir, tmp_path):
    names = [f"c{i}" for i in range(10)]
    same = make_image_folder(tmp_path / "same", classes=names, per_class=1, size=32)
    report = compress.export(model_dir, tmp_path / "ok.onnx", check=Parity(data=str(same)), log=lambda _m: None)
    assert report["onnx"]["parity"]["images"] == 10 and "accuracy_onnx" in report["onnx"]["parity"]
    # the same count under other names: its accuracy would be top-1 against labels that mean other classes
    other = make_image_folder(tmp_path / "other", classes=[f"k{i}" for i in range(10)], per_class=1, size=32)
    with pytest.raises(CompressError, match="class 0 is 'k0' in the data, 'c0' in the model"):
        compress.export(model_dir, tmp_path / "bad.onnx", check=Parity(data=str(other)))
    # a module nobody named: the message says how to name it
    with pytest.raises(CompressError, match=r"its classes are unnamed \(class0, class1, ...\)"):
        compress.export(_vgg(), tmp_path / "m.onnx", example=torch.zeros(1, 3, 32, 32), check=Parity(data=str(same)))
    assert not (tmp_path / "bad.onnx").exists() and not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("call,message", [
    (lambda d, t: compress.export(_vgg(), t / "m.onnx"), "needs example"),
    (lambda d, t: compress.export([1, 2], t / "m.onnx"), "export takes an nn.Module"),
    (lambda d, t: compress.export(d, None), "give an ONNX path, an engine, or both"),
    (lambda d, t: compress.export(d, t / "m.onnx", precision="int4"), "precision must be one of"),
    (lambda d, t: compress.export(d, t / "m.onnx", precision="int8"), "an INT8 engine is built from a Q/DQ ONNX"),
    (lambda d, t: compress.export(d, t, check=False), "is a directory; give a file name"),
    (lambda d, t: compress.export(_vgg(), t / "m.onnx", example=torch.zeros(1, 3, 32, 32), meta={"labels": []}),
     "meta takes classes, mean, std and arch"),
    (lambda d, t: compress.export(_vgg(), t / "m.onnx", example=torch.zeros(1, 3, 32, 32), meta={"classes": ["a"]}),
     "the network has 10 outputs but classes lists 1"),
    (lambda d, t: compress.export(d, t / "m.onnx", onnx=OnnxShape(batch=0)), "batch must be a positive integer"),
])
def test_what_cannot_be_exported_is_refused_before_anything_is_written(model_dir, tmp_path, call, message):
    work = tmp_path / "w"
    work.mkdir()
    with pytest.raises((CompressError, ValueError), match=message):
        call(model_dir, work)
    assert not list(work.iterdir())


def test_an_onnx_source_needs_a_precision_to_write_a_file(model_dir, tmp_path):
    compress.export(model_dir, tmp_path / "a.onnx", check=False, log=lambda _m: None)
    with pytest.raises(CompressError, match="the source is already ONNX"):
        compress.export(tmp_path / "a.onnx", tmp_path / "b.onnx")
    assert not (tmp_path / "b.onnx").exists()


class _TwoOutputs(torch.nn.Module):
    """A detector's shape of output: logits and a feature map."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.fc = torch.nn.Linear(4, 5)

    def forward(self, x):
        f = self.bn(self.conv(x)).relu()
        return self.fc(f.mean((2, 3))), f


def test_a_module_with_several_outputs_is_exported_with_one_output_each_and_no_classes(tmp_path):
    import onnx

    report = compress.export(_TwoOutputs().eval(), tmp_path / "two.onnx", example=torch.zeros(1, 3, 16, 16),
                             check=Parity(limit=4), log=lambda _m: None)
    assert report["onnx"]["parity"]["passed"]
    assert len(onnx.load(str(tmp_path / "two.onnx")).graph.output) == 2
    assert read_metadata(tmp_path / "two.onnx").get("classes") is None


@pytest.mark.parametrize("model, example, words", [
    (lambda: torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten()), torch.zeros(1, 1, 8, 8),
     "forward fails on a [1, 1, 8, 8] input (RuntimeError"),
    (lambda: torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten()).half(), torch.zeros(1, 3, 8, 8),
     "holds torch.float16 weights; export takes a float32 model"),
])
def test_a_module_that_cannot_run_the_example_is_refused_in_one_line(tmp_path, model, example, words):
    """A wrong example shape, or a half-precision model, escaped as a raw RuntimeError with a traceback."""
    with pytest.raises(compress.CompressError, match=re.escape(words)):
        compress.export(model().eval(), tmp_path / "m.onnx", example=example)
    assert not (tmp_path / "m.onnx").exists()
