"""Hostile inputs and faults for `compress share`, `share --decompress`, `info`, `eval` and `quantize`, and
for the helpers every command uses (guard, lock, atomic writes, validators, finite floats).

Each CLI case asserts the exit status, a one-line message naming the culprit, and that nothing was left
behind or changed (every file under the test's directory hashes the same before and after).
"""

import errno
import hashlib
import json
import os
import shutil
import signal
import struct

import pytest
import torch
from hostile_support import (
    CLASSES,
    assert_refused,
    export_onnx_file,
    invoke,
    make_images,
    make_model_dir,
    pause_at,
    refused_unchanged,
    run_until_marker,
    snapshot,
)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("built")
    model_dir = make_model_dir(root / "vgg")
    assert invoke(["share", model_dir, "--out", root / "shared", "--bits", "4"]).exit_code == 0
    return root


@pytest.fixture
def work(tmp_path, built):
    w = tmp_path / "w"
    shutil.copytree(built, w, symlinks=True)
    return w


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("COMPRESS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


# --- share: outputs that are inputs, numbers, locks, faults ----------------------------------------------

def test_share_into_its_own_model_directory(work):
    refused_unchanged(work, ["share", work / "vgg", "--out", work / "vgg"], "--out", "is the input model directory")


def test_share_into_a_symlink_to_its_model_directory(work):
    os.symlink(work / "vgg", work / "alias")
    refused_unchanged(work, ["share", work / "vgg", "--out", work / "alias"], "is the input model directory")


def test_share_into_the_dataset(work):
    data = make_images(work / "data")
    refused_unchanged(work, ["share", work / "vgg", "--out", data, "--data", data], "--out", "--data")


@pytest.mark.parametrize("option,value", [("--prune-weights", "nan"), ("--prune-weights", "inf"),
                                          ("--prune-weights", "1"), ("--lr", "nan"), ("--lr", "-inf"),
                                          ("--lr", "0")])
def test_share_refuses_non_finite_numbers(work, option, value):
    refused_unchanged(work, ["share", work / "vgg", "--out", work / "o", option, value], option, usage=True)


@pytest.mark.parametrize("bits,needle", [("0", "--bits"), ("conv=abc", "'abc'"), ("13", "[1, 12]"),
                                         ("nonexistent.layer=4", "nonexistent.layer")])
def test_share_refuses_bad_bit_specs(work, bits, needle):
    refused_unchanged(work, ["share", work / "vgg", "--out", work / "o", "--bits", bits], needle)


def test_share_while_another_writer_holds_the_directory(work):
    from compress.lock import output_lock

    with output_lock(work / "o", "compress share (the other one)"):
        before = snapshot(work)
        line = assert_refused(invoke(["share", work / "vgg", "--out", work / "o"]), "being written by",
                              f"pid {os.getpid()}", "the other one")
        assert snapshot(work) == before
    assert line.startswith(f"Error: {work / 'o'} is being written")


def test_share_on_a_full_disk_keeps_the_previous_result(work, monkeypatch):
    """The second run fails while saving; the first run's files stay as they were, and no model.dcz or
    temporary from the failed run is left."""
    import compress.artifact

    def full_disk(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device", str(work / "shared" / "model.safetensors"))

    monkeypatch.setattr(compress.artifact, "save_model_dir", full_disk)
    line = refused_unchanged(work, ["share", work / "vgg", "--out", work / "shared", "--bits", "4"],
                             "No space left on device")
    assert "model.safetensors" in line


def test_share_on_a_full_disk_leaves_no_dcz(work, monkeypatch):
    import compress.artifact

    monkeypatch.setattr(compress.artifact, "save_model_dir",
                        lambda *a, **k: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
    refused_unchanged(work, ["share", work / "vgg", "--out", work / "new", "--bits", "4"], "No space left")
    assert not (work / "new").exists()


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_share_interrupted_after_writing_the_dcz(work, monkeypatch, sig):
    import compress.sharing.share as share

    real = share._verify_roundtrip

    def interrupted(*args):
        real(*args)
        os.kill(os.getpid(), getattr(signal, sig))

    monkeypatch.setattr(share, "_verify_roundtrip", interrupted)
    before = snapshot(work)
    result = invoke(["share", work / "vgg", "--out", work / "new", "--bits", "4"])
    assert result.exit_code == 130, result.output
    assert snapshot(work) == before


@pytest.mark.slow
def test_share_process_killed_from_outside(work):
    code = pause_at("compress.sharing.share", "_verify_roundtrip",
                    ["share", work / "vgg", "--out", work / "new", "--bits", "4"])
    status, err = run_until_marker(code, "PAUSED", signal.SIGTERM, work)
    assert status == 130 and "Traceback" not in err, err
    assert not (work / "new").exists()


def test_share_output_files_have_normal_permissions(work):
    mask = os.umask(0)
    os.umask(mask)
    for f in ("model.dcz", "model.json", "model.safetensors", "share_report.json"):
        assert (work / "shared" / f).stat().st_mode & 0o777 == 0o666 & ~mask, f
    assert not [p for p in (work / "shared").iterdir() if p.name.startswith(".")]


# --- share --decompress: crafted and damaged .dcz files -----------------------------------------------------

def repack(blob: bytes, edit) -> bytes:
    """A .dcz with its header edited by `edit(header)` and a valid checksum: only the validation can catch it."""
    magic, version, flags, hlen = struct.unpack_from("<4sHHI", blob)
    header = json.loads(blob[12:12 + hlen])
    payload = blob[12 + hlen:-32]
    result = edit(header)
    if isinstance(result, tuple):
        header, flags = result
    else:
        header = result
    head = json.dumps(header).encode()
    body = struct.pack("<4sHHI", magic, version, flags, len(head)) + head + payload
    return body + hashlib.sha256(body).digest()


def crafted(work, edit, name="bad.dcz"):
    path = work / name
    path.write_bytes(repack((work / "shared" / "model.dcz").read_bytes(), edit))
    return path


def _set(path, value):
    def edit(h):
        target = h
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return h
    return edit


@pytest.mark.parametrize("edit,needle", [
    (_set(["shared", 0, "shape"], [100000, 100000, 1000, 1000]), "needs"),
    (_set(["shared", 0, "shape"], [4, "3", 3, 3]), "shape"),
    (_set(["shared", 0, "shape"], [4, 3.0, 3, 3]), "shape"),
    (_set(["shared", 0, "bits"], 4.0), "bits"),
    (_set(["shared", 0, "k"], 17), "k"),
    (_set(["shared", 0, "offset_bits"], 0), "offset_bits"),
    (_set(["shared", 0, "codebook"], [0, -4]), "codebook"),
    (_set(["shared", 0, "codebook"], [0, True]), "codebook"),
    (_set(["shared", 0, "index", "count"], 10 ** 12), "index"),
    (_set(["chunk"], 1), "chunks"),
    (lambda h: {**h, "shared": [h["shared"][0], h["shared"][0]]}, "appears twice"),
    (lambda h: (h, 1), "flags"),
    (_set(["model", "classes"], CLASSES[:3]), "classes"),
    (_set(["model", "arch_kwargs", "width"], float("nan")), "width"),
])
def test_decompress_refuses_crafted_headers(work, edit, needle):
    bad = crafted(work, edit)
    refused_unchanged(work, ["share", "--decompress", bad, "--out", work / "restored"], "bad.dcz", needle)


def test_decompress_refuses_float_tensors_stored_as_int8(work):
    from safetensors.torch import save as save_st

    from compress.sharing.container import decode_container, encode_container

    meta, shared, raw = decode_container((work / "shared" / "model.dcz").read_bytes())
    name = next(k for k, v in raw.items() if v.is_floating_point())
    raw[name] = raw[name].to(torch.int8)
    (work / "int8.dcz").write_bytes(encode_container(meta, shared, raw)[0])
    assert save_st  # the encoder stores raw tensors as safetensors
    refused_unchanged(work, ["share", "--decompress", work / "int8.dcz", "--out", work / "r"], name, "int8",
                      "float32")


def test_decompress_into_the_shared_directory_it_came_from(work):
    """The refusal read "... is the input model directory the directory of shared", not a sentence."""
    dcz = work / "shared" / "model.dcz"
    line = refused_unchanged(work, ["share", "--decompress", dcz, "--out", work / "shared"], "--out", "shared")
    assert line == (f"Error: --out {work / 'shared'} is the shared model directory that holds --decompress {dcz}; "
                    "restoring into it would overwrite that model: choose another --out")


@pytest.mark.parametrize("damage,needle", [(lambda b: b[:len(b) // 2], "checksum"), (lambda b: b"", "truncated"),
                                           (lambda b: b"PK\x03\x04" + b[4:], "not a .dcz")])
def test_decompress_refuses_damaged_files(work, damage, needle):
    (work / "d.dcz").write_bytes(damage((work / "shared" / "model.dcz").read_bytes()))
    refused_unchanged(work, ["share", "--decompress", work / "d.dcz", "--out", work / "r"], "d.dcz", needle)


def test_decompress_of_a_missing_file(work):
    refused_unchanged(work, ["share", "--decompress", work / "none.dcz", "--out", work / "r"], "none.dcz",
                      "not found")


# --- info and eval apply the loaders' validation ---------------------------------------------------------------

def _edit_json(path, **changes):
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


def test_info_on_an_empty_onnx_file(work):
    (work / "empty.onnx").write_bytes(b"")
    refused_unchanged(work, ["info", work / "empty.onnx"], "empty.onnx", "is empty")


def test_info_on_an_onnx_without_weights(work):
    from onnx import TensorProto, helper, save

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(work / "relu.onnx"))
    refused_unchanged(work, ["info", work / "relu.onnx"], "relu.onnx", "no weights")


def test_info_on_a_directory_with_empty_weights(work):
    (work / "vgg" / "model.safetensors").write_bytes(b"")
    refused_unchanged(work, ["info", work / "vgg"], "model.safetensors")


def test_info_on_weights_stored_as_int8(work):
    from safetensors.torch import load_file, save_file

    state = load_file(str(work / "vgg" / "model.safetensors"))
    state["features.0.weight"] = state["features.0.weight"].to(torch.int8)
    save_file(state, str(work / "vgg" / "model.safetensors"))
    refused_unchanged(work, ["info", work / "vgg"], "features.0.weight", "int8")


def test_info_on_widths_of_a_billion(work):
    meta = json.loads((work / "vgg" / "model.json").read_text())
    meta["widths"]["features.0"]["out_channels"] = 10 ** 9
    meta["widths"]["features.4"]["in_channels"] = 10 ** 9
    (work / "vgg" / "model.json").write_text(json.dumps(meta))
    refused_unchanged(work, ["info", work / "vgg"], "model.json", "features.0")


def test_info_on_widths_that_fit_the_bound_but_not_memory(work):
    meta = json.loads((work / "vgg" / "model.json").read_text())
    meta["widths"]["features.4"].update(in_channels=1 << 20, out_channels=1 << 20)
    (work / "vgg" / "model.json").write_text(json.dumps(meta))
    refused_unchanged(work, ["info", work / "vgg"], "model.json", "needs", "TiB")


def test_info_on_classes_that_disagree_with_num_classes(work):
    _edit_json(work / "vgg" / "model.json", classes=CLASSES[:4])
    refused_unchanged(work, ["info", work / "vgg"], "classes")


@pytest.mark.parametrize("args,needle", [(["vgg19", "--width", "nan"], "--width"),
                                         (["vgg19", "--width", "inf"], "--width"),
                                         (["vgg19", "--width", "1000"], "more than 64"),
                                         (["vgg19", "--width", "60"], "needs"),
                                         (["vgg19", "--num-classes", str(10 ** 10)], "needs")])
def test_info_on_absurd_architecture_arguments(work, args, needle):
    refused_unchanged(work, ["info", *args], needle, usage=needle.startswith("--"))


def test_eval_on_an_invalid_accuracy_in_model_json(work):
    _edit_json(work / "vgg" / "model.json", accuracy=2.0)
    refused_unchanged(work, ["eval", work / "vgg", "--data", work], "model.json", "accuracy")


def test_eval_onnx_on_data_with_other_classes(work):
    data = make_images(work / "data", classes=("a", "b", "c"))
    onnx_path = export_onnx_file(work / "vgg", work / "vgg.onnx")
    refused_unchanged(work, ["eval", onnx_path, "--data", data], "10 classes", "the data 3")


# --- quantize (the quantize rewrite wires compress.guard.guarded_outputs; until then these describe it) ---------

QUANTIZE_WIRING = ("compress/quantize/command.py must call compress.guard.guarded_outputs (guard, lock, staged outputs, "
                   "scratch dir for *.fp32.onnx and calibration files) - the lead wires it")


def test_quantize_onto_its_own_source_onnx(work):
    data = make_images(work / "data", classes=tuple(CLASSES))
    onnx_path = export_onnx_file(work / "vgg", work / "vgg.onnx")
    refused_unchanged(work, ["quantize", onnx_path, "--data", data, "--out", onnx_path, "--calib-images", 4],
                      "--out", "would overwrite")


def test_failed_quantize_of_a_model_dir_leaves_no_fp32_onnx(work):
    data = make_images(work / "data", classes=("a", "b"))  # 2 classes for a 10-class model: refused
    refused_unchanged(work, ["quantize", work / "vgg", "--data", data, "--out", work / "q.onnx",
                             "--calib-images", 4], "classes")


def test_quantize_interrupted_after_calibration_leaves_nothing(work, monkeypatch):
    from compress.quantization import calibration

    data = make_images(work / "data", classes=tuple(CLASSES), per_class=1)
    real = calibration.calibrate

    def interrupted(*args, **kwargs):
        real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(calibration, "calibrate", interrupted)
    before = snapshot(work)
    result = invoke(["quantize", work / "vgg", "--data", data, "--out", work / "q.onnx", "--calib-images", 4])
    assert result.exit_code == 130, result.output
    assert snapshot(work) == before  # no q.onnx, no q.fp32.onnx, no temporaries


def test_quantize_of_a_missing_model(work):
    refused_unchanged(work, ["quantize", work / "none", "--out", work / "q.onnx"], "none", "not found")


# --- the shared helpers ----------------------------------------------------------------------------------------

def test_guard_resolves_links_and_names_the_option(tmp_path):
    from compress.guard import OutputOverlapError, check_outputs

    make_model_dir(tmp_path / "m")
    os.symlink(tmp_path / "m", tmp_path / "link")
    with pytest.raises(OutputOverlapError) as err:
        check_outputs(inputs=[("MODEL", tmp_path / "m")], outputs=[("--out", tmp_path / "link" / "model.json")])
    assert str(err.value).startswith("--out ") and "model.json of the input model directory MODEL" in str(err.value)
    check_outputs(inputs=[tmp_path / "m"], outputs=[tmp_path / "m" / "model.onnx"])  # beside: allowed
    with pytest.raises(OutputOverlapError):
        check_outputs(inputs=[tmp_path / "m"], out_dirs=[tmp_path / "link"])


def test_lock_names_its_holder_and_is_released(tmp_path):
    from compress.lock import LockedError, output_lock

    with output_lock(tmp_path / "out", "compress share X") as lock_file:
        assert json.loads(lock_file.read_text())["pid"] == os.getpid()
        with pytest.raises(LockedError, match=f"pid {os.getpid()} \\(compress share X"):
            with output_lock(tmp_path / "out", "second"):
                pass
    with output_lock(tmp_path / "out", "third"):
        pass
    assert not (tmp_path / "out").exists()  # created for the lock, empty, removed again


def test_failed_atomic_write_leaves_neither_final_nor_temporary(tmp_path):
    from compress.atomic import atomic_path, staged

    (tmp_path / "a.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "a.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert (tmp_path / "a.txt").read_text() == "old" and sorted(os.listdir(tmp_path)) == ["a.txt"]
    with pytest.raises(KeyboardInterrupt):
        with staged([tmp_path / "b", tmp_path / "c"]) as (b, c):
            b.write_text("b")
            raise KeyboardInterrupt
    assert sorted(os.listdir(tmp_path)) == ["a.txt"]


def test_finite_float_refuses_overflow_to_infinity():
    import click

    from compress.cli.params import FiniteFloat

    with pytest.raises(click.BadParameter, match="not a finite number"):
        FiniteFloat().convert("1e400", None, None)
    assert FiniteFloat(0, 1).convert("0.25", None, None) == 0.25


# --- model.json fields of the wrong type reach no generic "KeyError" fallback ----------------------------------

@pytest.mark.parametrize("edit,needle", [
    (lambda m: m["widths"]["features.0"].pop("in_channels"), "widths.features.0.in_channels"),
    (lambda m: m.__setitem__("widths", [1]), "widths must be an object"),
    (lambda m: m["widths"].__setitem__("features.0", 3), "widths.features.0 must be an object"),
    (lambda m: m.__setitem__("arch_kwargs", [1]), "arch_kwargs must be an object"),
    (lambda m: m.__setitem__("input_size", "32"), "input_size must be a list"),
    (lambda m: m["normalization"].__setitem__("mean", "abc"), "normalization.mean must be a list"),
])
@pytest.mark.parametrize("command", ["share", "info", "export"])
def test_model_json_of_the_wrong_shape(work, edit, needle, command):
    meta = json.loads((work / "vgg" / "model.json").read_text())
    edit(meta)
    (work / "vgg" / "model.json").write_text(json.dumps(meta))
    args = {"share": ["share", work / "vgg", "--out", work / "o"], "info": ["info", work / "vgg"],
            "export": ["export", work / "vgg", "--onnx", work / "o.onnx"]}[command]
    refused_unchanged(work, args, "model.json", needle)
