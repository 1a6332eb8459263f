"""Trust (issue 18): a model directory names code only through a registry name, a known entry point, or an
import path the user trusts, and nothing is imported before that check. Through the API and the CLI, with a
module in the current directory, an installed module with import side effects, and a trusted import path."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import compress
from compress.errors import CompressError
from compress.models import build_from_file, create_model
from compress.models.trust import ENV, UntrustedCodeError, trusting
from tests_support import write_user_module

ROOT = Path(__file__).resolve().parents[2]
EVIL = """
from pathlib import Path
Path(__file__).with_name("MARKER").write_text("imported")
import torch.nn as nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))
"""
FACTORY = """
from mynets import MyNet

def build(width=8, num_classes=2):
    return MyNet(width=width, num_classes=num_classes)

def not_a_model():
    return 42
"""
KW = {"classes": ["cat", "dog"], "input_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}


def stranger_dir(root: Path, arch: str, kwargs=None) -> Path:
    """A model directory as a stranger ships it: a complete model.json naming `arch`, and weights."""
    model = create_model("vgg11", num_classes=2, width=0.125)
    compress.save_model(model, root / "m", arch="vgg11", arch_kwargs={"num_classes": 2, "width": 0.125}, **KW)
    meta = json.loads((root / "m" / "model.json").read_text())
    meta.update(arch=arch, arch_kwargs=kwargs or {})
    (root / "m" / "model.json").write_text(json.dumps(meta))
    return root / "m"


@pytest.fixture()
def no_ambient_trust(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    # The current directory is on sys.path only if the interpreter put it there; make sure it is not.
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".")])


@pytest.fixture()
def evil_cwd(tmp_path, monkeypatch, no_ambient_trust):
    (tmp_path / "evilmod.py").write_text(EVIL)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    sys.modules.pop("evilmod", None)


@pytest.fixture()
def mynets(tmp_path, monkeypatch, no_ambient_trust):
    write_user_module(tmp_path / "src")
    (tmp_path / "src" / "factories_mod.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    from mynets import MyNet

    torch.manual_seed(0)
    model = MyNet(width=8, num_classes=2).eval()
    compress.save_model(model, tmp_path / "m", arch_kwargs={"width": 8, "num_classes": 2}, **KW)
    yield model, tmp_path / "m"
    for name in ("mynets", "factories_mod"):
        sys.modules.pop(name, None)


# --- a module in the current directory --------------------------------------------------------------------

def test_a_module_beside_the_directory_is_never_imported(evil_cwd):
    stranger_dir(evil_cwd, "evilmod:Net")
    with pytest.raises(CompressError) as err:
        compress.load_model("m")
    message = str(err.value)
    assert "\n" not in message and "not trusted" in message and "--trust evilmod" in message
    assert not (evil_cwd / "MARKER").exists() and "evilmod" not in sys.modules


def test_trusting_a_name_does_not_search_the_current_directory_for_it(evil_cwd):
    stranger_dir(evil_cwd, "evilmod:Net")
    with pytest.raises(CompressError, match="cannot import module 'evilmod'"):
        compress.load_model("m", trust="evilmod")
    assert not (evil_cwd / "MARKER").exists()


def test_a_name_the_user_types_may_still_come_from_the_current_directory(evil_cwd):
    model = create_model("evilmod:Net")
    assert type(model).__name__ == "Net" and (evil_cwd / "MARKER").exists()


# --- an installed module with import side effects ---------------------------------------------------------

def test_an_installed_module_is_not_imported_before_the_check(tmp_path, capsys, no_ambient_trust):
    sys.modules.pop("this", None)
    stranger_dir(tmp_path, "this:Module")
    with pytest.raises(UntrustedCodeError, match="'this:Module', which is not trusted"):
        build_from_file("this:Module", {}, where="m/model.json")
    with pytest.raises(CompressError, match="not trusted"):
        compress.load_model(tmp_path / "m")
    assert "this" not in sys.modules and "Beautiful is better" not in capsys.readouterr().out


@pytest.mark.parametrize("arch, kwargs", [
    ("os.path:join", {}),
    ("subprocess:Popen", {"args": ["true"]}),
    ("ultralytics.nn.autobackend:AutoBackend", {"model": "evil.pt"}),  # a known package, not a known entry
    ("timm.models:load_checkpoint", {"checkpoint_path": "evil.pth"}),
])
def test_other_code_of_installed_packages_is_refused(arch, kwargs, no_ambient_trust):
    with pytest.raises(UntrustedCodeError, match="not trusted"):
        build_from_file(arch, kwargs)


def test_the_toolkits_own_functions_are_not_entry_points(evil_cwd):
    # build_user_model would import a module of the caller's choosing, searching the current directory.
    with pytest.raises(ValueError, match="not an nn.Module class"):
        build_from_file("compress.models.user:build_user_model", {"spec": "evilmod:Net", "kwargs": {}})
    assert not (evil_cwd / "MARKER").exists() and "evilmod" not in sys.modules


# --- a trusted import path --------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["argument", "exact path", "list", "environment", "context", "True"])
def test_a_trusted_import_path_loads(mynets, monkeypatch, how):
    model, path = mynets
    trust = {"argument": "mynets", "exact path": "mynets:MyNet", "list": ["other", "mynets"], "True": True}.get(how)
    if how == "environment":
        monkeypatch.setenv(ENV, "somethingelse, mynets")
    if how == "context":
        with trusting("mynets"):
            loaded, meta = compress.load_model(path)
    else:
        loaded, meta = compress.load_model(path, trust=trust)
    assert meta["arch"] == "mynets:MyNet"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


@pytest.mark.parametrize("trust", [None, "mynet", "mynets.sub", "mynets:Other", "other,more"])
def test_trust_for_something_else_does_not_count(mynets, trust):
    _, path = mynets
    with pytest.raises(CompressError, match="trust='mynets'"):
        compress.load_model(path, trust=trust)


def test_a_malformed_trust_entry_is_refused(mynets):
    with pytest.raises(ValueError, match="not a module name"):
        compress.load_model(mynets[1], trust="../evil")


def test_factory_functions_are_called_only_from_trusted_modules(mynets):
    with pytest.raises(ValueError, match="not an nn.Module class.*trust"):
        create_model("factories_mod:build")
    with trusting("factories_mod"):
        assert type(create_model("factories_mod:build", num_classes=2)).__name__ == "MyNet"
        assert type(build_from_file("factories_mod:build", {"width": 4})).__name__ == "MyNet"
        with pytest.raises(ValueError, match="returned a int, not an nn.Module"):
            build_from_file("factories_mod:not_a_model", {})


# --- through the CLI --------------------------------------------------------------------------------------

def _cli(cwd: Path, *args, pythonpath: str = str(ROOT)):
    env = {k: v for k, v in os.environ.items() if k != ENV}
    env.update(PYTHONPATH=pythonpath, OMP_NUM_THREADS="1")
    # `python -m` puts the current directory first on sys.path, as an attacker would want.
    return subprocess.run([sys.executable, "-m", "compress.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("command", [["info", "m"], ["eval", "m", "--data", "nowhere"],
                                     ["export", "m", "--onnx", "m.onnx"]])
def test_the_cli_refuses_a_module_beside_the_directory(tmp_path, command):
    (tmp_path / "evilmod.py").write_text(EVIL)
    stranger_dir(tmp_path, "evilmod:Net")
    result = _cli(tmp_path, *command)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not trusted" in lines[0] and "compress --trust evilmod" in lines[0], result.stderr
    assert not (tmp_path / "MARKER").exists() and not (tmp_path / "m.onnx").exists()


def test_the_cli_trust_option_loads_a_trusted_module(tmp_path):
    src = tmp_path / "src"
    write_user_module(src)
    sys.path.insert(0, str(src))
    try:
        from mynets import MyNet

        compress.save_model(MyNet(width=8, num_classes=2), tmp_path / "m", arch_kwargs={"width": 8, "num_classes": 2},
                            **KW)
    finally:
        sys.path.remove(str(src))
        sys.modules.pop("mynets", None)
    path = os.pathsep.join([str(ROOT), str(src)])
    refused = _cli(tmp_path, "info", "m", pythonpath=path)
    assert refused.returncode == 2 and "compress --trust mynets" in refused.stderr
    trusted = _cli(tmp_path, "--trust", "mynets", "info", "m", pythonpath=path)
    assert trusted.returncode == 0, trusted.stderr
    assert "fc: 16 → 2" in trusted.stdout


def test_the_cli_trust_option_refuses_a_malformed_name(tmp_path):
    result = _cli(tmp_path, "--trust", "../evil", "info", "vgg11")
    assert result.returncode == 2 and "is not a module name" in result.stderr
