"""The command line (compress/cli/main.py): errors are one line without a traceback, on stderr, with the exit
status saying whose fault it was; every command is listed and a missing one says so."""

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from compress.cli import main


def run_process(args, env=None):
    return subprocess.run([sys.executable, "-m", "compress.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def test_unknown_arch_is_one_line_without_traceback(tmp_path):
    proc = run_process(["info", "vgg12"])
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "vgg12" in lines[0]


def test_missing_and_corrupt_model_dirs(tmp_path):
    proc = run_process(["prune", str(tmp_path / "none"), "--percent", "0.5", "--out", str(tmp_path / "o")])
    assert proc.returncode != 0 and "not found" in proc.stderr and "Traceback" not in proc.stderr
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.json").write_text("{")
    proc = run_process(["eval", str(tmp_path / "bad"), "--data", str(tmp_path)])
    assert proc.returncode != 0 and "not valid JSON" in proc.stderr
    assert not (tmp_path / "o").exists()


# --- the last line of defence: unexpected exceptions -----------------------------------------------------

def _command_raising(exc):
    import click

    @click.command("boom")
    def boom():
        raise exc

    return boom


@pytest.mark.parametrize("exc,expected,code", [
    (KeyError("percent"), "Error: KeyError: 'percent' (set COMPRESS_DEBUG=1 for the traceback)", 1),
    (RuntimeError("first line\nsecond line"), "Error: RuntimeError: first line (set COMPRESS_DEBUG=1 for the traceback)", 1),
])
def test_unexpected_exceptions_become_one_line(monkeypatch, exc, expected, code):
    monkeypatch.delenv("COMPRESS_DEBUG", raising=False)
    monkeypatch.setitem(main.commands, "boom", _command_raising(exc))
    result = CliRunner().invoke(main, ["boom"])
    assert result.exit_code == code
    assert [ln for ln in result.output.splitlines() if ln.strip()] == [expected]


@pytest.mark.parametrize("exc,expected", [
    ("compress", "Error: bad value in model.json: field x"),
    ("export", "Error: bad value in model.json: field x"),
    ("runtime", "Error: bad value in model.json: field x"),
])
def test_user_errors_are_one_line_with_status_2(monkeypatch, exc, expected):
    from compress.errors import CompressError
    from compress.exporting.errors import ExportError
    from compress.runtime.errors import RuntimeBenchError

    kind = {"compress": CompressError, "export": ExportError, "runtime": RuntimeBenchError}[exc]
    monkeypatch.delenv("COMPRESS_DEBUG", raising=False)
    monkeypatch.setitem(main.commands, "boom", _command_raising(kind("bad value in model.json: field x\ndetails")))
    result = CliRunner().invoke(main, ["boom"])
    assert result.exit_code == 2
    assert [ln for ln in result.output.splitlines() if ln.strip()] == [expected]


def test_empty_user_error_names_its_type(monkeypatch):
    from compress.errors import CompressError

    monkeypatch.setitem(main.commands, "boom", _command_raising(CompressError("")))
    result = CliRunner().invoke(main, ["boom"])
    assert result.exit_code == 2 and result.output.strip() == "Error: CompressError"


def test_debug_prints_the_traceback(monkeypatch):
    monkeypatch.setenv("COMPRESS_DEBUG", "1")
    monkeypatch.setitem(main.commands, "boom", _command_raising(KeyError("percent")))
    result = CliRunner().invoke(main, ["boom"])
    assert result.exit_code == 1 and "Traceback" in result.output and "KeyError" in result.output


def test_interrupt_exits_130(monkeypatch):
    monkeypatch.setitem(main.commands, "boom", _command_raising(KeyboardInterrupt()))
    result = CliRunner().invoke(main, ["boom"])
    assert result.exit_code == 130 and "interrupted" in result.output


def test_click_exits_pass_through(monkeypatch):
    monkeypatch.setitem(main.commands, "boom", _command_raising(SystemExit(3)))
    assert CliRunner().invoke(main, ["boom"]).exit_code == 3


def test_errors_go_to_stderr_and_leave_stdout_clean(monkeypatch):
    from compress.errors import CompressError

    monkeypatch.delenv("COMPRESS_DEBUG", raising=False)
    for exc in (CompressError("bad file x"), KeyError("percent"), KeyboardInterrupt()):
        monkeypatch.setitem(main.commands, "boom", _command_raising(exc))
        result = CliRunner().invoke(main, ["boom"])
        assert result.stdout == "" and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr == "interrupted\n"
    monkeypatch.setitem(main.commands, "slim", _command_raising(KeyboardInterrupt()))  # slim resumes
    assert CliRunner().invoke(main, ["slim"]).stderr == "interrupted; re-run the same command to continue\n"


def test_an_exception_without_a_message(monkeypatch):
    monkeypatch.delenv("COMPRESS_DEBUG", raising=False)
    monkeypatch.setitem(main.commands, "boom", _command_raising(RuntimeError()))
    result = CliRunner().invoke(main, ["boom"])
    assert result.exit_code == 1
    assert result.stderr == "Error: RuntimeError:  (set COMPRESS_DEBUG=1 for the traceback)\n"


def test_help_lists_every_command():
    from compress.cli.main import PLUGIN_COMMANDS

    result = CliRunner().invoke(main, ["--help"])
    rows = result.output.split("Commands:")[1].splitlines()
    listed = {ln.split()[0] for ln in rows if ln.startswith("  ") and not ln.startswith("   ")}
    assert listed == set(PLUGIN_COMMANDS)


def test_unknown_and_unavailable_commands(monkeypatch):
    import importlib

    main_module = importlib.import_module("compress.cli.main")

    result = CliRunner().invoke(main, ["nope"])
    assert result.exit_code == 2 and "No such command 'nope'" in result.output and "KeyError" not in result.output
    monkeypatch.setitem(main_module.PLUGIN_COMMANDS, "ghost", ("compress.cli.no_such_module", "ghost"))
    result = CliRunner().invoke(main, ["ghost"])
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: command 'ghost' is unavailable: No module named 'compress.cli.no_such_module'")
