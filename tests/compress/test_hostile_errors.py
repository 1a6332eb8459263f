"""Every error names the problem (issue 18): a full disk, a read-only output folder, a broken pipe, and a
third-party library's traceback all become one line naming the file or the cause, with nothing
complete-looking left behind, in every command that meets them.

A full disk is the kernel's own refusal: RLIMIT_FSIZE makes every write past a few kilobytes fail with
EFBIG in any writer, C and Rust ones included. A read-only folder is chmod 555 (for root, which ignores
permissions, creating anything inside it is refused as the kernel refuses it to other users).
"""

import json
import os
import struct

import onnx
import pytest
from hostile_support import (
    file_size_limit,
    fresh_copy,
    invoke,
    read_only,
    refused_unchanged,
    run_cli,
    snapshot,
    workspace,
)


@pytest.fixture
def work(tmp_path, tmp_path_factory):
    return fresh_copy(workspace(tmp_path_factory), tmp_path / "w")


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("COMPRESS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def writers(w, out):
    """Each command that writes, with its output under `out` (a folder that may not exist yet)."""
    m, data = w / "vgg", w / "data"
    return {
        "share": ["share", m, "--out", out / "s", "--bits", "4"],
        "share --decompress": ["share", "--decompress", w / "shared" / "model.dcz", "--out", out / "r"],
        "quantize": ["quantize", w / "vgg.onnx", "--data", data, "--out", out / "q.onnx", "--calib-images", "4",
                     "--eval-limit", "4"],
        "quantize a model directory": ["quantize", m, "--data", data, "--out", out / "q.onnx", "--calib-images", "4",
                                       "--eval-limit", "4"],
        "export": ["export", m, "--onnx", out / "e.onnx"],
        "prune": ["prune", m, "--percent", "0.5", "--out", out / "p"],
        "train": ["train", "--arch", "vgg11", "--width", "0.0625", "--data", data, "--out", out / "t", "--epochs",
                  "1", "--train-limit", "10", "--test-limit", "10"],
        "finetune": ["finetune", m, "--data", data, "--out", out / "f", "--epochs", "1", "--train-limit", "10",
                     "--test-limit", "10"],
        "import": ["import", m / "model.safetensors", "--arch", "vgg11", "--arch-kwargs",
                   '{"num_classes": 10, "width": 0.0625}', "--data", data, "--out", out / "i", "--test-limit", "4"],
        "bench --report": ["bench", w / "vgg.onnx", "--batch", "1", "--iters", "2", "--warmup", "0", "--no-plots",
                           "--report", out / "report"],
    }


@pytest.fixture
def shared(work):
    assert invoke(["share", work / "vgg", "--out", work / "shared", "--bits", "4"]).exit_code == 0
    return work


# --- a read-only output folder ------------------------------------------------------------------------

@pytest.mark.parametrize("command", [
    "share", "share --decompress", "quantize", "export", "prune", "train", "finetune", "import",
    "bench --report",
])
def test_a_read_only_output_folder(shared, command, monkeypatch):
    ro = read_only(shared / "ro", monkeypatch)
    line = refused_unchanged(shared, writers(shared, ro)[command], "cannot write", str(ro))
    assert "Permission denied" in line or "Read-only" in line


# --- a full disk -------------------------------------------------------------------------------------------

FULL = 4096  # bytes a file may grow to: lock files and report.md fit; report.json, weights and ONNX files do not


@pytest.mark.parametrize("command", [
    "share", "share --decompress", "quantize", "quantize a model directory",
    "export", "import", "prune", "bench --report",
])
def test_a_full_disk(shared, command):
    out = shared / "out"
    before = snapshot(shared)
    with file_size_limit(FULL):
        result = invoke(writers(shared, out)[command])
    errors = [ln for ln in result.output.splitlines() if ln.startswith("Error")]
    assert result.exit_code == 2 and len(errors) == 1, result.output
    assert "File too large" in errors[0] and "COMPRESS_DEBUG" not in errors[0], errors[0]
    assert snapshot(shared) == before  # nothing complete-looking: no report.md without report.json, no model


# --- broken pipes and third-party tracebacks ----------------------------------------------------------------

def test_output_into_a_closed_pipe_is_a_quiet_exit(work):
    """`compress info m | head -3`: the reader goes away; no error line, no traceback."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line is written
    try:
        result = run_cli(["info", work / "vgg"], cwd=work, timeout=120, stdout=write)
    finally:
        os.close(write)
    assert "Error" not in result.stderr and "Traceback" not in result.stderr \
        and "Exception ignored" not in result.stderr, result.stderr


def graph_with(work, edit):
    model = onnx.load(str(work / "vgg.onnx"))
    edit(model)
    onnx.save(model, str(work / "bad.onnx"))
    return work / "bad.onnx"


def _custom_domain(model):
    from onnx import helper

    g = model.graph
    first = g.node[0]
    first.output[0], old = first.output[0] + "_pre", first.output[0]
    g.node.insert(1, helper.make_node("Evil", [old + "_pre"], [old], domain="com.evil", name="evil0"))
    model.opset_import.append(helper.make_opsetid("com.evil", 1))


def _cycle(model):
    g = model.graph
    g.node[0].input[0] = g.node[1].output[0]


def _self_loop(model):
    g = model.graph
    g.node[2].input[0] = g.node[2].output[0]


def _unknown_op(model):
    model.graph.node[2].op_type = "NoSuchOperator"


@pytest.mark.parametrize("edit,needle", [(_custom_domain, "com.evil:Evil"), (_cycle, "cycle"),
                                         (_self_loop, "cycle"), (_unknown_op, "NoSuchOperator")])
def test_quantize_of_a_graph_onnx_runtime_cannot_take(work, edit, needle, capfd):
    bad = graph_with(work, edit)
    refused_unchanged(work, ["quantize", bad, "--data", work / "data", "--out", work / "q.onnx",
                             "--calib-images", "4"], "bad.onnx", needle)
    assert "Traceback" not in capfd.readouterr().err


# --- safetensors with a duplicated tensor name -------------------------------------------------------------

def duplicate_tensor_name(weights):
    blob = weights.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    name = next(k for k in header if k != "__metadata__")
    text = json.dumps(header)
    text = text[:-1] + f", {json.dumps(name)}: {json.dumps(header[name])}" + "}"  # the same name, twice
    text += " " * (-len(text) % 8)
    weights.write_bytes(struct.pack("<Q", len(text)) + text.encode() + blob[8 + n:])
    return name


@pytest.mark.parametrize("command", ["info", "eval"])
def test_weights_that_name_a_tensor_twice(work, command):
    name = duplicate_tensor_name(work / "vgg" / "model.safetensors")
    args = {"info": ["info", work / "vgg"], "eval": ["eval", work / "vgg", "--data", work / "data"],
            }[command]
    refused_unchanged(work, args, "model.safetensors", name, "twice")
