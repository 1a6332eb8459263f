"""Hostile files (issue 18), by principle rather than by command, so that a new command inherits them:

* an input that is not a regular file or directory (a FIFO blocks forever, /dev/zero reads forever) is
  refused before it is opened, by every command that takes one;
* JSON from a stranger (model.json, plan.json, ONNX metadata, a .dcz header) is bounded: nested 100k
  deep, 3 GB, not UTF-8, duplicate keys or NaN are each refused in one line naming the file;
* a dataset is described as it is; an output is of the artifact's kind.

Each case: refused in one line naming the problem, non-zero exit, nothing run, nothing changed.
"""

import json
import os
import tarfile

import onnx
import pytest
from hostile_support import (
    bench_refused,
    deadline,
    fresh_copy,
    invoke,
    memory_cap,
    refused_unchanged,
    snapshot,
    workspace,
)

ARCH_KWARGS = '{"num_classes": 10, "width": 0.0625}'


@pytest.fixture
def work(tmp_path, tmp_path_factory):
    import compress.artifact  # noqa: F401 - torch and the loaders, imported before any deadline starts

    return fresh_copy(workspace(tmp_path_factory), tmp_path / "w")


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("COMPRESS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def special(work, kind: str):
    """A FIFO inside the work folder, or one of the system's character devices."""
    if kind == "fifo":
        os.mkfifo(work / "fifo")
        return work / "fifo"
    return f"/dev/{kind}"


# --- every command that takes --data --------------------------------------------------------------------

def data_commands(w, data):
    return {
        "train": ["train", "--arch", "vgg11", "--width", "0.0625", "--data", data, "--out", w / "t", "--epochs", "1"],
        "slim": ["slim", "--arch", "vgg11", "--width", "0.0625", "--data", data, "--out", w / "s", "--epochs", "1",
                 "--finetune-epochs", "1", "--pretrain-epochs", "0"],
        "finetune": ["finetune", w / "vgg", "--data", data, "--out", w / "f", "--epochs", "1"],
        "prune": ["prune", w / "vgg", "--percent", "0.5", "--data", data, "--out", w / "p"],
        "import": ["import", w / "vgg" / "model.safetensors", "--arch", "vgg11", "--arch-kwargs", ARCH_KWARGS,
                   "--data", data, "--out", w / "i"],
        "share": ["share", w / "vgg", "--data", data, "--out", w / "sh"],
        "quantize": ["quantize", w / "vgg.onnx", "--data", data, "--out", w / "q.onnx", "--calib-images", "4"],
        "eval": ["eval", w / "vgg", "--data", data],
        "bench": ["bench", w / "vgg.onnx", "--data", data, "--batch", "1", "--iters", "2", "--warmup", "0"],
        "export": ["export", w / "vgg", "--onnx", w / "e.onnx", "--data", data],
    }


DATA_COMMANDS = ["train", "slim", "finetune", "prune", "import", "share", "quantize", "eval", "bench", "export"]


@pytest.mark.parametrize("command", DATA_COMMANDS)
def test_data_that_is_a_fifo_is_refused_before_it_is_opened(work, command):
    data = special(work, "fifo")
    with deadline(30):
        refused_unchanged(work, data_commands(work, data)[command], str(data), "FIFO", "not a regular file")


@pytest.mark.parametrize("command,device", [("eval", "zero"), ("train", "zero"), ("quantize", "zero"),
                                            ("bench", "zero"), ("eval", "null"), ("share", "urandom")])
def test_data_that_is_a_device_is_refused_before_it_is_read(work, command, device):
    data = special(work, device)
    with deadline(30):
        refused_unchanged(work, data_commands(work, data)[command], data, "character device")


def test_the_library_refuses_a_fifo_as_a_dataset(work):
    from compress import load_dataset
    from compress.limits import NotRegularFileError

    with deadline(30), pytest.raises(NotRegularFileError, match="FIFO"):
        load_dataset(str(special(work, "fifo")), "train")


# --- plans, .dcz files, model files and outputs that are not regular files ------------------------------

@pytest.mark.parametrize("kind", ["fifo", "zero", "null"])
def test_a_plan_that_is_a_fifo_or_a_device(work, kind):
    plan = special(work, kind)
    with deadline(30):
        refused_unchanged(work, ["prune", work / "vgg", "--plan", plan, "--out", work / "p"], "--plan", str(plan),
                          "not a regular file")


def test_the_library_refuses_a_plan_that_is_a_fifo(work):
    from compress import CompressError, Plan

    with deadline(10), pytest.raises(CompressError, match="FIFO"):
        Plan.load(special(work, "fifo"))


@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_a_dcz_that_is_a_fifo_or_a_device(work, kind):
    dcz = special(work, kind)
    with deadline(30):
        refused_unchanged(work, ["share", "--decompress", dcz, "--out", work / "r"], str(dcz), "not a regular file")


def model_file_commands(w, fifo):
    return {
        "quantize": ["quantize", fifo, "--data", w / "data", "--out", w / "q.onnx", "--calib-images", "4"],
        "import": ["import", fifo, "--arch", "vgg11", "--arch-kwargs", ARCH_KWARGS, "--data", w / "data",
                   "--out", w / "i"],
        "export": ["export", fifo, "--onnx", w / "e.onnx", "--fp16"],
        "info": ["info", fifo],
        "eval": ["eval", fifo, "--data", w / "data"],
        "bench": ["bench", fifo, "--batch", "1", "--iters", "2", "--warmup", "0"],
    }


@pytest.mark.parametrize("command", [
    "quantize", "import", "export",
    "info", "eval",
    "bench",
])
def test_a_model_file_that_is_a_fifo(work, command):
    os.mkfifo(work / "fifo.onnx" if command != "import" else work / "fifo.safetensors")
    fifo = work / ("fifo.onnx" if command != "import" else "fifo.safetensors")
    refused = bench_refused if command == "bench" else refused_unchanged
    with deadline(20):
        refused(work, model_file_commands(work, fifo)[command], str(fifo), "not a regular file")


def test_weights_that_are_a_fifo_inside_a_model_directory(work):
    (work / "vgg" / "model.safetensors").unlink()
    os.mkfifo(work / "vgg" / "model.safetensors")
    with deadline(20):
        refused_unchanged(work, ["info", work / "vgg"], "model.safetensors", "not a regular file")


@pytest.mark.parametrize("command", ["export", "quantize", "share", "train", "bench"])
def test_an_output_that_is_a_fifo(work, command):
    os.mkfifo(work / "out.onnx")
    os.mkfifo(work / "outdir")
    args = {"export": ["export", work / "vgg", "--onnx", work / "out.onnx"],
            "quantize": ["quantize", work / "vgg.onnx", "--data", work / "data", "--out", work / "out.onnx"],
            "share": ["share", work / "vgg", "--out", work / "outdir"],
            "train": ["train", "--arch", "vgg11", "--data", work / "data", "--out", work / "outdir"],
            "bench": ["bench", work / "vgg.onnx", "--report", work / "outdir", "--batch", "1", "--iters", "2"]}[command]
    with deadline(20):
        line = refused_unchanged(work, args, "FIFO", usage=command in ("share", "train", "bench"))
    assert "out" in line


# --- JSON a stranger wrote -----------------------------------------------------------------------------

DEEP = "[" * 100_000 + "]" * 100_000


def _hostile_json(path, content: str):
    if content == "deep":
        path.write_text(DEEP)
    elif content == "not-utf8":
        path.write_bytes(path.read_bytes().replace(b'"vgg11"', b'"vgg\xff\xfe11"', 1))
    elif content == "3GB":
        os.truncate(path, 3 * 2**30)  # sparse: no disk is used
    elif content == "duplicate-keys":
        text = path.read_text()
        path.write_text(text[:text.rindex("}")] + ', "arch": "vgg13"}')
    elif content == "NaN":
        meta = json.loads(path.read_text())
        path.write_text(json.dumps({**meta, "command": float("nan")}))
    return path


NEEDLES = {"deep": "deep", "not-utf8": "UTF-8", "3GB": "GiB", "duplicate-keys": "twice", "NaN": "NaN"}


@pytest.mark.parametrize("content", list(NEEDLES))
def test_model_json_a_stranger_wrote(work, content):
    _hostile_json(work / "vgg" / "model.json", content)
    with memory_cap(), deadline(20):
        refused_unchanged(work, ["info", work / "vgg"], "model.json", NEEDLES[content])


@pytest.mark.parametrize("command", ["eval", "export", "share", "quantize"])
def test_model_json_nested_100k_deep_in_every_command_that_reads_one(work, command):
    (work / "vgg" / "model.json").write_text(DEEP)
    args = {"eval": ["eval", work / "vgg", "--data", work / "data"],
            "export": ["export", work / "vgg", "--onnx", work / "e.onnx"],
            "share": ["share", work / "vgg", "--out", work / "s"],
            "quantize": ["quantize", work / "vgg", "--data", work / "data", "--out", work / "q.onnx"]}[command]
    refused_unchanged(work, args, "model.json", "deep")


@pytest.mark.parametrize("content", list(NEEDLES))
def test_plan_json_a_stranger_wrote(work, content):
    plan = work / "plan.json"
    plan.write_text(json.dumps({"format": "compress.plan/2", "percent": 0.5, "threshold": 0.1, "command": "vgg11",
                                "groups": [{"root": "features.0", "channels_before": 4, "kept": [0, 1]}]}))
    if content == "duplicate-keys":
        text = plan.read_text()
        plan.write_text(text[:text.rindex("}")] + ', "groups": []}')
    elif content == "NaN":
        plan.write_text(plan.read_text().replace('"threshold": 0.1', '"threshold": NaN'))
    else:
        _hostile_json(plan, content)
    with memory_cap(), deadline(20):
        refused_unchanged(work, ["prune", work / "vgg", "--plan", plan, "--out", work / "p"], "plan.json",
                          NEEDLES[content])


def test_the_strict_reader_names_each_problem(tmp_path):
    """compress.limits.read_json, the reader every loader is meant to use."""
    from compress.limits import MAX_JSON_BYTES, TooLargeError, UnreadableFileError, parse_json, read_json

    cases = {"deep": (DEEP, "deeper than 64"), "utf8": (b'{"a": "\xff"}', "not UTF-8"),
             "dup": ('{"a": 1, "a": 2}', "'a' appears twice"), "nan": ('{"a": NaN}', "NaN is not a JSON number"),
             "junk": ("{", "not valid JSON"), "shallow-but-too-deep": ("[" * 65 + "]" * 65, "deeper than 64")}
    for name, (text, needle) in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        with pytest.raises(UnreadableFileError, match=needle):
            read_json(path)
    big = tmp_path / "big.json"
    big.write_bytes(b"")
    os.truncate(big, 3 * 2**30)  # sparse
    with pytest.raises(TooLargeError, match="3.0 GiB.*MAX_JSON_BYTES"):
        read_json(big)
    (tmp_path / "ok.json").write_text('{"a": [1, {"b": null}]}')
    assert read_json(tmp_path / "ok.json") == {"a": [1, {"b": None}]}
    with pytest.raises(TooLargeError, match="MAX_JSON_BYTES"):
        parse_json("[0, 0, 0]", "x", max_bytes=4)
    assert MAX_JSON_BYTES >= 1 << 20


def deep_classes_onnx(work):
    model = onnx.load(str(work / "vgg.onnx"))
    for p in model.metadata_props:
        if p.key == "compress.classes":
            p.value = DEEP
    onnx.save(model, str(work / "deep.onnx"))
    return work / "deep.onnx"


@pytest.mark.parametrize("command", [
    "quantize",
    "info", "eval", "export",
    "bench",
])
def test_onnx_class_metadata_nested_100k_deep(work, command):
    deep = deep_classes_onnx(work)
    args = {"quantize": ["quantize", deep, "--data", work / "data", "--out", work / "q.onnx", "--calib-images", "4"],
            "info": ["info", deep], "eval": ["eval", deep, "--data", work / "data"],
            "export": ["export", deep, "--onnx", work / "h.onnx", "--fp16"],
            "bench": ["bench", deep, "--data", work / "data", "--batch", "1", "--iters", "2", "--warmup", "0"]}[command]
    refused = bench_refused if command == "bench" else refused_unchanged
    refused(work, args, "deep.onnx", "compress.classes", "deep")


def test_a_dcz_header_nested_deeper_than_the_bound(work):
    import hashlib
    import struct

    from compress.sharing.container import MAGIC, VERSION

    assert invoke(["share", work / "vgg", "--out", work / "shared", "--bits", "4"]).exit_code == 0
    header = json.dumps({"format": "compress.dcz/1", "x": json.loads("[" * 500 + "]" * 500)}).encode()
    body = struct.pack("<4sHHI", MAGIC, VERSION, 0, len(header)) + header
    (work / "deep.dcz").write_bytes(body + hashlib.sha256(body).digest())
    refused_unchanged(work, ["share", "--decompress", work / "deep.dcz", "--out", work / "r"], "deep.dcz", "deep")


# --- datasets described as they are ------------------------------------------------------------------

def _text_only_split(root):
    for split in ("train", "test"):
        (root / split / "c0").mkdir(parents=True)
        (root / split / "c0" / "notes.txt").write_text("no image here")
        (root / split / "readme.txt").write_text("no image here")
    return root


@pytest.mark.parametrize("layout", ["tar.gz", "tar without folder entries"])
def test_an_archive_whose_train_folder_holds_only_text_files(work, layout):
    src = _text_only_split(work / "txt")
    archive = work / ("txt.tar.gz" if layout == "tar.gz" else "txt.tar")
    with tarfile.open(archive, "w:gz" if layout == "tar.gz" else "w") as tar:
        if layout == "tar.gz":
            tar.add(src, arcname="txt")
        else:
            for f in sorted(src.rglob("*.txt")):
                tar.add(f, arcname=str(f.relative_to(work)))
    line = refused_unchanged(work, ["train", "--arch", "vgg11", "--width", "0.0625", "--data", archive,
                                    "--out", work / "t", "--epochs", "1"], "train/", ".txt")
    assert "has no 'train/' folder" not in line


def test_a_folder_whose_train_folder_holds_only_text_files(work):
    data = work / "txt"
    for split in ("train", "test"):
        (data / split).mkdir(parents=True)
        (data / split / "a.txt").write_text("x")
    line = refused_unchanged(work, ["eval", work / "vgg", "--data", data], "test")
    assert "has no 'test/' folder" not in line


def test_a_class_folder_whose_name_is_not_utf8(work):
    bad = os.fsencode(work / "data" / "train") + b"/caf\xe9"
    os.rename(os.fsencode(work / "data" / "train" / "c0"), bad)
    os.rename(os.fsencode(work / "data" / "test" / "c0"), os.fsencode(work / "data" / "test") + b"/caf\xe9")
    refused_unchanged(work, ["train", "--arch", "vgg11", "--width", "0.0625", "--data", work / "data",
                             "--out", work / "t", "--epochs", "1"], "not UTF-8")


def test_an_image_whose_header_promises_a_billion_pixels(work):
    """The header is read, not the pixels: a 40000 x 40000 PNG is refused before it is decoded."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    for split in ("train", "test"):
        (work / "data" / split / "c0" / "0.png").write_bytes(png)
    refused_unchanged(work, ["eval", work / "vgg", "--data", work / "data"], "0.png", "MAX_IMAGE_PIXELS")


# --- outputs of the artifact's kind ----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["existing.png"])
def test_export_onnx_to_a_name_of_another_kind(work, name):
    target = work / "data" / "train" / "c0" / "0.png" if name == "existing.png" else work / name
    line = refused_unchanged(work, ["export", work / "vgg", "--onnx", target], "--onnx", ".onnx")
    assert str(target.name) in line


def test_quantize_out_to_a_name_of_another_kind(work):
    target = work / "data" / "train" / "c0" / "0.png"
    refused_unchanged(work, ["quantize", work / "vgg.onnx", "--data", work / "data", "--out", target], "--out",
                      ".onnx")


def test_snapshot_reads_no_fifo(work):
    """The tests' own helper must not block on the FIFOs they create."""
    os.mkfifo(work / "fifo")
    with deadline(5):
        assert snapshot(work)["fifo"].startswith("<special")
