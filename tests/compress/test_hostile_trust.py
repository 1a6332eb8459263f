"""Code in a stranger's model directory (issue 18): an `arch` read from a file names code only through a
registry name, a known package, or an import path the user trusts explicitly. The current directory is
never searched for it, and nothing is imported before the name has passed that check.

The stranger's archive unpacks as `m/model.json` ("arch": "evilmod:Net") with `evilmod.py` beside `m`;
the user `cd`s into it and runs a command on `m`. Importing evilmod leaves a file behind, so "nothing
changed" (every file hashed before and after) is also "nothing ran". The trust check is in
compress.models.trust (docs/SECURITY.md).
"""

import json
import sys
import uuid

import pytest
from hostile_support import bench_refused, fresh_copy, invoke, refused_unchanged, snapshot, workspace

EVIL = '''
import pathlib
pathlib.Path(__file__).with_name("PWNED").write_text("the stranger's code ran")
from compress.models.vgg import VGG as Net
'''


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("COMPRESS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def stranger(tmp_path, tmp_path_factory, monkeypatch):
    """The unpacked archive, as the current directory: m/ (its model.json names evilmod_X:Net), evilmod_X.py,
    and the user's own data and ONNX file. Returns (root, module name)."""
    root = fresh_copy(workspace(tmp_path_factory), tmp_path / "archive")
    module = f"evilmod_{uuid.uuid4().hex[:8]}"  # fresh per test: nothing cached in sys.modules
    (root / f"{module}.py").write_text(EVIL)
    (root / "vgg").rename(root / "m")
    meta = json.loads((root / "m" / "model.json").read_text())
    # A pruned directory's record too, so `train --like m` reaches the architecture.
    (root / "m" / "model.json").write_text(json.dumps({**meta, "arch": f"{module}:Net",
                                                        "pruning": {"macs_before": 2 * meta["macs"]}}))
    monkeypatch.chdir(root)
    monkeypatch.setattr(sys, "path", list(sys.path))  # today's loader inserts the cwd: undo it afterwards
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    yield root, module
    sys.modules.pop(module, None)


def commands(root):
    m, data = root / "m", root / "data"
    return {
        "info": ["info", m],
        "eval": ["eval", m, "--data", data],
        "export": ["export", m, "--onnx", root / "m.onnx"],
        "prune": ["prune", m, "--percent", "0.5", "--out", root / "p"],
        "share": ["share", m, "--out", root / "s"],
        "bench": ["bench", m, "--backend", "torch", "--batch", "1", "--iters", "2", "--warmup", "0"],
        "finetune": ["finetune", m, "--data", data, "--out", root / "f", "--epochs", "1"],
        "quantize": ["quantize", m, "--data", data, "--out", root / "q.onnx", "--calib-images", "4"],
        "train --like": ["train", "--like", m, "--data", data, "--out", root / "t", "--epochs", "1"],
        "slim --from": ["slim", "--from", m, "--data", data, "--out", root / "run", "--epochs", "1",
                        "--finetune-epochs", "1"],
    }


@pytest.mark.parametrize("command", ["info", "eval", "export", "prune", "share", "bench", "finetune", "quantize",
                                     "train --like", "slim --from"])
def test_a_model_directory_naming_a_module_in_the_current_directory(stranger, command):
    root, module = stranger
    if command == "bench":
        bench_refused(root, commands(root)[command], module)
    else:  # the line names the file, as docs/SECURITY.md shows (info and export said "model.json" alone)
        refused_unchanged(root, commands(root)[command], module, f"{root / 'm' / 'model.json'} names code")
    assert not (root / "PWNED").exists() and module not in sys.modules


def test_load_model_does_not_import_a_module_from_the_current_directory(stranger):
    import compress

    root, module = stranger
    before = snapshot(root)
    with pytest.raises(compress.CompressError, match=module):
        compress.load_model("m")
    assert module not in sys.modules and snapshot(root) == before


def test_a_dcz_whose_embedded_model_json_names_a_module_in_the_current_directory(stranger):
    """share --decompress rebuilds the network its .dcz describes: the embedded arch is a stranger's too."""
    from compress.sharing.container import decode_container, encode_container

    root, module = stranger
    meta = json.loads((root / "m" / "model.json").read_text())
    (root / "m" / "model.json").write_text(json.dumps({**meta, "arch": "vgg11"}))
    assert invoke(["share", root / "m", "--out", root / "shared", "--bits", "4"]).exit_code == 0
    embedded, shared, raw = decode_container((root / "shared" / "model.dcz").read_bytes())
    (root / "evil.dcz").write_bytes(encode_container({**embedded, "arch": f"{module}:Net"}, shared, raw)[0])
    refused_unchanged(root, ["share", "--decompress", root / "evil.dcz", "--out", root / "r"], module,
                      f"{root / 'evil.dcz'}: the embedded model.json names code")
    assert not (root / "PWNED").exists()


@pytest.fixture
def zen(stranger, monkeypatch):
    """model.json names "this:Module": an installed module whose import prints the Zen of Python."""
    root, _ = stranger
    meta = json.loads((root / "m" / "model.json").read_text())
    (root / "m" / "model.json").write_text(json.dumps({**meta, "arch": "this:Module"}))
    monkeypatch.delitem(sys.modules, "this", raising=False)
    yield root
    sys.modules.pop("this", None)


def test_an_installed_module_with_import_side_effects_is_not_imported(zen, capsys):
    result = invoke(["info", zen / "m"])
    assert "this" not in sys.modules, "the module named by model.json was imported"
    assert result.exit_code == 2 and "Beautiful is better" not in result.output + capsys.readouterr().out


def test_the_api_does_not_import_an_installed_module_named_by_a_file(zen):
    import compress

    with pytest.raises(compress.CompressError, match="this"):
        compress.load_model(zen / "m")
    assert "this" not in sys.modules
