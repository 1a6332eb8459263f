"""`compress export`: model directory → ONNX (+FP16) with parity printed, --check-trt exit codes,
one-line errors for corrupt ONNX input and for a missing TensorRT extra."""

import builtins
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from compress.cli import main
from tests_support import lively

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]  # CIFAR-10's
MEAN, STD = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]


def run(args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def run_process(args):
    return subprocess.run([sys.executable, "-m", "compress.cli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from compress.artifact import save_model_dir
    from compress.models import create_model

    out = tmp_path_factory.mktemp("md") / "vgg"
    model = lively(create_model("vgg11", num_classes=10, width=0.125))
    save_model_dir(model, out, {"arch": "vgg11", "arch_kwargs": {"num_classes": 10, "width": 0.125},
                                "classes": CLASSES, "input_size": [3, 32, 32],
                                "normalization": {"mean": MEAN, "std": STD}})
    return out


def test_onnx_and_fp16_from_a_model_dir(model_dir, tmp_path):
    from compress.artifact import file_sha256
    from compress.exporting.metadata import read_metadata

    out = tmp_path / "vgg.onnx"
    result = run(["export", model_dir, "--onnx", out, "--fp16", "--parity-limit", 16, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    fp32 = tmp_path / "vgg.fp32.onnx"
    assert report["onnx"]["path"] == str(fp32) and report["fp16"]["path"] == str(out)
    assert report["onnx"]["parity"]["passed"] and report["onnx"]["parity"]["images"] == 16
    assert report["fp16"]["parity"]["passed"]
    meta32, meta16 = read_metadata(fp32), read_metadata(out)
    assert meta32["precision"] == "fp32" and meta16["precision"] == "fp16"
    assert meta32["source_sha256"] == file_sha256(model_dir / "model.safetensors")
    assert meta32["arch"] == "vgg11" and meta32["mean"] == MEAN


def test_human_output_prints_parity(model_dir, tmp_path):
    result = run(["export", model_dir, "--onnx", tmp_path / "s.onnx", "--static-batch", "--batch", 2])
    assert result.exit_code == 0, result.output
    assert "batch 2" in result.output and "parity ONNX Runtime vs torch on 64 random images" in result.output
    assert "top-1 agreement 100.00%" in result.output


def test_check_trt_exit_codes(model_dir, tmp_path):
    good = tmp_path / "good.onnx"
    assert run(["export", model_dir, "--onnx", good]).exit_code == 0
    ok = run(["export", "--check-trt", good])
    assert ok.exit_code == 0 and "TensorRT-ready (0 error(s)" in ok.output
    graph = helper.make_graph(
        [helper.make_node("QLinearConv", ["x", "s", "z", "w", "s", "z", "s", "z"], ["y"], name="qconv")], "g",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 4, 6, 6])],
        initializer=[numpy_helper.from_array(v, k) for k, v in
                     {"s": np.float32(0.1), "z": np.uint8(0), "w": np.ones((4, 3, 3, 3), np.uint8)}.items()])
    bad = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(bad))
    refused = run(["export", "--check-trt", bad])
    assert refused.exit_code == 1
    assert "error: qconv: QLinearConv" in refused.output and "not TensorRT-ready" in refused.output


def test_missing_tensorrt_is_one_line_naming_the_extra(model_dir, tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_tensorrt(name, *args, **kwargs):
        if name == "tensorrt":
            raise ImportError("No module named 'tensorrt'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorrt)
    result = CliRunner().invoke(main, ["export", str(model_dir), "--trt", str(tmp_path / "m.engine")])
    assert result.exit_code != 0
    assert "pip install 'cnn-compress[trt]'" in result.output
    assert not list(tmp_path.iterdir())  # refused before exporting anything


def test_corrupt_and_truncated_onnx_give_one_line_errors(model_dir, tmp_path):
    good = tmp_path / "good.onnx"
    assert run(["export", model_dir, "--onnx", good]).exit_code == 0
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"garbage" * 100)
    cases = ((cut, ["--fp16", "--onnx", tmp_path / "o.onnx"]), (junk, ["--check-trt"]),
             (cut, ["--trt", tmp_path / "o.engine"]))
    for bad, args in cases:
        proc = run_process(["export", bad, *args])
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
        assert len(lines) == 1 and bad.name in lines[0], proc.stderr
    assert not (tmp_path / "o.onnx").exists() and not (tmp_path / "o.engine").exists()


def test_usage_errors(model_dir, tmp_path):
    assert "give --onnx" in run(["export", model_dir]).output
    assert "MIN:OPT:MAX is for --trt" in run(["export", model_dir, "--onnx", tmp_path / "a.onnx",
                                              "--batch", "1:2:4"]).output


@pytest.mark.slow
def test_accuracies_on_real_cifar10_images(model_dir, tmp_path, cifar10_archive):
    result = run(["export", model_dir, "--onnx", tmp_path / "c.onnx", "--data", cifar10_archive,
                  "--parity-limit", 200, "--json"])
    assert result.exit_code == 0, result.output
    parity = json.loads(result.stdout)["onnx"]["parity"]
    assert parity["images"] == 200 and parity["accuracy_tol"] == 0.0005
    assert abs(parity["accuracy_reference"] - parity["accuracy_onnx"]) <= 0.0005


def test_an_engine_from_an_onnx_file_needs_no_torch(model_dir, tmp_path):
    """The runtime install builds engines from ONNX files: that path imports no torch (TensorRT is the one
    missing piece here, and the message says so)."""
    import textwrap

    onnx_file = tmp_path / "m.onnx"
    assert run(["export", model_dir, "--onnx", onnx_file]).exit_code == 0
    code = textwrap.dedent(f"""
        import sys
        class _NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "torchvision", "tensorrt"):
                    raise ModuleNotFoundError(f"No module named {{name!r}} (blocked in this test)", name=name)
        sys.meta_path.insert(0, _NoTorch())
        from compress.cli import main
        sys.argv = ["compress", "export", {str(onnx_file)!r}, "--trt", {str(tmp_path / 'm.engine')!r}]
        main()
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "TensorRT is not installed" in lines[0] and "torch" not in lines[0].replace("tensorrt", "")
    assert not (tmp_path / "m.engine").exists()
