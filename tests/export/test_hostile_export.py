"""Hostile inputs and faults for `compress export`, ONNX metadata and engine sidecars.

Each case asserts the exit status (or the exception), a one-line message naming the culprit, and that
nothing was left behind: the whole temporary tree hashes the same before and after.
"""

import json
import os
import shutil
import signal

import onnx
import pytest
from hostile_support import (
    export_onnx_file,
    invoke,
    make_images,
    make_model_dir,
    pause_at,
    refused_unchanged,
    run_until_marker,
    snapshot,
)
from onnx import TensorProto, helper


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("built")
    model_dir = make_model_dir(root / "vgg")
    onnx_path = export_onnx_file(model_dir, root / "vgg.onnx")
    return model_dir, onnx_path


@pytest.fixture
def work(tmp_path, built):
    """A fresh copy of the model directory and its ONNX file under tmp_path/w."""
    model_dir, onnx_path = built
    w = tmp_path / "w"
    shutil.copytree(model_dir, w / "vgg")
    shutil.copy(onnx_path, w / "vgg.onnx")
    return w


# --- an output that is an input --------------------------------------------------------------------

@pytest.mark.parametrize("victim", ["model.safetensors", "model.json"])
def test_onnx_onto_the_model_directorys_own_files(work, victim):
    refused_unchanged(work, ["export", work / "vgg", "--onnx", work / "vgg" / victim],
                      "--onnx", victim, "would overwrite")


def test_onnx_onto_the_weights_through_a_symlink(work):
    os.symlink(work / "vgg" / "model.safetensors", work / "alias.onnx")
    refused_unchanged(work, ["export", work / "vgg", "--onnx", work / "alias.onnx"], "model.safetensors")


def test_onnx_onto_the_weights_through_a_hard_link(work):
    os.link(work / "vgg" / "model.safetensors", work / "hard.onnx")
    refused_unchanged(work, ["export", work / "vgg", "--onnx", work / "hard.onnx"], "model.safetensors")


def test_fp16_onto_its_own_source_onnx(work):
    refused_unchanged(work, ["export", work / "vgg.onnx", "--fp16", "--onnx", work / "vgg.onnx"],
                      "would overwrite the input SOURCE")


def test_fp16_onto_its_source_through_dotdot(work):
    (work / "sub").mkdir()
    refused_unchanged(work, ["export", work / "vgg.onnx", "--fp16", "--onnx", work / "sub" / ".." / "vgg.onnx"],
                      "would overwrite")


def test_fp32_beside_the_fp16_output_is_the_source(work):
    # --fp16 --onnx X.onnx writes the FP32 file as X.fp32.onnx: here that is the source itself.
    shutil.copy(work / "vgg.onnx", work / "m.fp32.onnx")
    refused_unchanged(work, ["export", work / "m.fp32.onnx", "--fp16", "--onnx", work / "m.fp32.onnx"],
                      "would overwrite")


def test_onnx_and_trt_outputs_that_name_one_file(work):
    refused_unchanged(work, ["export", work / "vgg", "--onnx", work / "x.onnx", "--trt", work / "x.onnx"],
                      "name the same file")


def test_timing_cache_that_is_the_source(work):
    refused_unchanged(work, ["export", work / "vgg.onnx", "--trt", work / "v.engine", "--timing-cache",
                             work / "vgg.onnx"], "--timing-cache", "would overwrite")


def test_onnx_into_the_dataset(work):
    data = make_images(work / "data")
    victim = data / "test" / "a" / "0.png"
    refused_unchanged(work, ["export", work / "vgg", "--onnx", victim, "--data", data],
                      "would overwrite a file of the input directory --data")


def test_onnx_path_that_is_a_directory(work):
    (work / "d.onnx").mkdir()
    refused_unchanged(work, ["export", work / "vgg", "--onnx", work / "d.onnx"], "--onnx", "is a directory", usage=True)


def test_writing_beside_the_input_stays_allowed(work):
    result = invoke(["export", work / "vgg", "--onnx", work / "vgg" / "model.onnx", "--parity-limit", 4])
    assert result.exit_code == 0, result.output
    assert (work / "vgg" / "model.onnx").is_file()
    assert oct((work / "vgg" / "model.onnx").stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    assert not [p for p in (work / "vgg").iterdir() if p.name.startswith(".")]


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- failures leave nothing at a final name ---------------------------------------------------------

def test_failed_fp32_parity_leaves_no_onnx(work, monkeypatch):
    import compress.parity_review

    monkeypatch.setattr(compress.parity_review, "review", lambda *_: None)  # the float64 review finds no rounding
    refused_unchanged(work, ["export", work / "vgg", "--onnx", work / "out.onnx", "--atol", 0, "--parity-limit", 4],
                      "out.onnx fails parity")


def test_failed_fp16_parity_leaves_neither_file(work, monkeypatch):
    import compress.exporting.parity

    monkeypatch.setattr(compress.exporting.parity, "FP16_REL_TOL", 1e-9)
    line = refused_unchanged(work, ["export", work / "vgg", "--onnx", work / "h.onnx", "--fp16",
                                    "--parity-limit", 4], "fails parity")
    assert "h.onnx" in line and ".tmp" not in line


@pytest.mark.parametrize("drop,needle", [((), "arch_kwargs.num_classes is 10 but classes lists 5"),
                                         (("num_classes",), "the output layer classifier has 10 outputs"),
                                         (("num_classes", "widths"), "the network has 10 outputs")])
def test_classes_disagreeing_with_the_output_width_are_not_exported(work, drop, needle):
    meta = json.loads((work / "vgg" / "model.json").read_text())
    meta["classes"] = meta["classes"][:5]
    for key in drop:
        meta["arch_kwargs"].pop(key, None)
        meta.pop(key, None)
    (work / "vgg" / "model.json").write_text(json.dumps(meta))
    refused_unchanged(work, ["export", work / "vgg", "--onnx", work / "o.onnx"], "model.json", needle, "5")


def test_truncated_weights(work):
    w = work / "vgg" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    refused_unchanged(work, ["export", work / "vgg", "--onnx", work / "o.onnx"], "model.safetensors")


def test_empty_weights(work):
    (work / "vgg" / "model.safetensors").write_bytes(b"")
    refused_unchanged(work, ["export", work / "vgg", "--onnx", work / "o.onnx"], "model.safetensors")


def test_model_json_that_is_not_json(work):
    (work / "vgg" / "model.json").write_text("{")
    refused_unchanged(work, ["export", work / "vgg", "--onnx", work / "o.onnx"], "model.json", "not valid JSON")


def test_missing_model_directory(work):
    refused_unchanged(work, ["export", work / "nothing", "--onnx", work / "o.onnx"], "nothing", "not found")


# --- numbers at the edge ------------------------------------------------------------------------------

@pytest.mark.parametrize("option,value", [("--atol", "nan"), ("--atol", "inf"), ("--atol", "-1"),
                                          ("--min-agreement", "nan"), ("--min-agreement", "1.5"),
                                          ("--atol", "1e999")])
def test_non_finite_or_out_of_range_tolerances(work, option, value):
    refused_unchanged(work, ["export", work / "vgg", "--onnx", work / "o.onnx", option, value], option, usage=True)


# --- ONNX metadata that can't be right ----------------------------------------------------------------

def _with_metadata(src, dst, **changes):
    model = onnx.load(str(src))
    props = {p.key: p.value for p in model.metadata_props}
    props.update({f"compress.{k}": v for k, v in changes.items()})
    del model.metadata_props[:]
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(dst))
    return dst


@pytest.mark.parametrize("field,value,needle", [
    ("input_size", '["3", 32, 32]', "input_size"),
    ("input_size", "[3, 32.0, 32]", "input_size"),
    ("mean", "[0.5, NaN, 0.5]", "mean"),
    ("std", "[0.5, 0, 0.5]", "std"),
    ("classes", '["a", "a"]', "listed twice"),
    ("source_sha256", "xyz", "source_sha256"),
])
def test_fp16_from_an_onnx_with_invalid_metadata(work, field, value, needle):
    bad = _with_metadata(work / "vgg.onnx", work / "bad.onnx", **{field: value})
    refused_unchanged(work, ["export", bad, "--fp16", "--onnx", work / "h.onnx"], needle)


def test_duplicate_metadata_keys(work):
    model = onnx.load(str(work / "vgg.onnx"))
    model.metadata_props.add(key="compress.precision", value="fp16")
    onnx.save(model, str(work / "dup.onnx"))
    refused_unchanged(work, ["export", work / "dup.onnx", "--fp16", "--onnx", work / "h.onnx"],
                      "dup.onnx", "duplicate keys in metadata_props")


def test_an_onnx_without_nodes(work):
    graph = helper.make_graph([], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), str(work / "empty-graph.onnx"))
    refused_unchanged(work, ["export", work / "empty-graph.onnx", "--fp16", "--onnx", work / "h.onnx"],
                      "no graph nodes")


# --- engine sidecars: refused, never cast -------------------------------------------------------------

SIDECAR = {"format": "compress.engine/1", "tensorrt_version": "10.3.0", "gpu_name": "Orin",
           "compute_capability": "8.7", "precision": "fp16",
           "profile": {"input": "input", "min": [1, 3, 32, 32], "opt": [8, 3, 32, 32], "max": [32, 3, 32, 32]},
           "onnx_sha256": "a" * 64, "build_time_s": 1.5, "engine_size": 100}


@pytest.mark.parametrize("change,needle", [
    ({"engine_size": "100"}, "engine_size"),
    ({"engine_size": True}, "engine_size"),
    ({"precision": "fp64"}, "precision"),
    ({"compute_capability": "eight"}, "compute_capability"),
    ({"onnx_sha256": "abc"}, "onnx_sha256"),
    ({"profile": {"min": [1]}}, "profile"),
])
def test_sidecar_fields_of_the_wrong_type(tmp_path, change, needle):
    from compress.exporting.engine_sidecar import check_sidecar
    from compress.exporting.errors import SidecarError

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\0" * 100)
    (tmp_path / "m.engine.json").write_text(json.dumps({**SIDECAR, **change}))
    before = snapshot(tmp_path)
    with pytest.raises(SidecarError) as err:
        check_sidecar(engine, "10.3.0", "Orin", "8.7")
    assert needle in str(err.value) and "m.engine.json" in str(err.value) and "\n" not in str(err.value)
    assert snapshot(tmp_path) == before


def test_sidecar_with_duplicate_keys_or_nan(tmp_path):
    from compress.exporting.engine_sidecar import read_sidecar
    from compress.exporting.errors import SidecarError

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\0" * 100)
    text = json.dumps(SIDECAR)
    (tmp_path / "m.engine.json").write_text(text[:-1] + ', "precision": "int8"}')
    with pytest.raises(SidecarError, match="precision.*twice"):
        read_sidecar(engine)
    (tmp_path / "m.engine.json").write_text(text.replace('"build_time_s": 1.5', '"build_time_s": NaN'))
    with pytest.raises(SidecarError, match="build_time_s"):
        read_sidecar(engine)


# --- interrupted exports ---------------------------------------------------------------------------------

@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_signal_during_parity_leaves_no_onnx(work, monkeypatch, sig):
    """In-process: the signal arrives while the ONNX file exists under its temporary name only."""
    import compress.exporting.parity

    real = compress.exporting.parity.check_parity

    def interrupted(*args, **kwargs):
        real(*args, **kwargs)
        os.kill(os.getpid(), getattr(signal, sig))

    monkeypatch.setattr(compress.exporting.parity, "check_parity", interrupted)
    before = snapshot(work)
    result = invoke(["export", work / "vgg", "--onnx", work / "o.onnx", "--parity-limit", 2])
    assert result.exit_code == 130, result.output
    assert snapshot(work) == before


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_killed_export_process_leaves_no_final_name(work, sig):
    """A real process, signalled from outside after its ONNX file is written and checked."""
    code = pause_at("compress.exporting.parity", "check_parity",
                    ["export", work / "vgg", "--onnx", work / "o.onnx", "--fp16", "--parity-limit", 2])
    status, err = run_until_marker(code, "PAUSED", getattr(signal, sig), work)
    assert not (work / "o.onnx").exists() and not (work / "o.fp32.onnx").exists()
    assert not (work / ".o.onnx.lock").exists() or sig == "SIGKILL"
    if sig == "SIGTERM":
        assert status == 130 and "Traceback" not in err, err
        assert not [p for p in work.iterdir() if p.name.startswith(".")]
