"""A mistyped COMPRESS_* value is refused in one line, by the library where it is read and by the CLI
before any work; an unset or well-formed one changes nothing."""

import re

import pytest
from click.testing import CliRunner

from compress import environment, progress
from compress.cli import main
from compress.data.stream import default_workers
from compress.errors import CompressError


@pytest.mark.parametrize("value", ["bogus", "1", "bars"])
def test_a_progress_mode_that_is_not_one_of_the_three_is_refused(monkeypatch, value):
    monkeypatch.setenv(environment.PROGRESS_ENV, value)
    with pytest.raises(CompressError, match=f"COMPRESS_PROGRESS must be one of bar, lines, off, got '{value}'"):
        progress.mode()


@pytest.mark.parametrize("value", ["many", "-1", "2.5", "1_000", "+2"])
def test_a_worker_count_that_is_not_a_whole_number_is_refused(monkeypatch, value):
    monkeypatch.setenv(environment.WORKERS_ENV, value)
    with pytest.raises(CompressError, match="COMPRESS_WORKERS must be a whole number >= 0"):
        default_workers()


def test_well_formed_values_are_used(monkeypatch):
    monkeypatch.setenv(environment.WORKERS_ENV, " 0 ")
    monkeypatch.setenv(environment.PROGRESS_ENV, "Lines")
    assert default_workers() == 0 and progress.mode() == "lines"
    monkeypatch.setenv(environment.WORKERS_ENV, "")
    assert default_workers() >= 1


@pytest.mark.parametrize("value", ["yes", "2", "true"])
def test_a_debug_value_other_than_0_or_1_is_refused(monkeypatch, value):
    monkeypatch.setenv(environment.DEBUG_ENV, value)
    with pytest.raises(CompressError, match=f"COMPRESS_DEBUG must be 1 \\(tracebacks\\) or 0, got '{value}'"):
        environment.debug()


@pytest.mark.parametrize("value,on", [("", False), ("0", False), (" 1 ", True)])
def test_debug_is_on_for_1_only(monkeypatch, value, on):
    monkeypatch.setenv(environment.DEBUG_ENV, value)
    assert environment.debug() is on


def test_trusted_names_are_read_as_the_loader_reads_them(monkeypatch):
    from compress.models.trust import trusted_entries

    monkeypatch.setenv(environment.TRUSTED_CODE_ENV, " mynets ,pkg.mod:Net,")
    assert environment.trusted_code() == trusted_entries() == ("mynets", "pkg.mod:Net")
    for bad in ("bad name!", "1pkg", "pkg.", "pkg:", "pkg:Net:More", "pkg::Net", ".pkg", "pkg-mod"):
        monkeypatch.setenv(environment.TRUSTED_CODE_ENV, f"mynets,{bad}")
        with pytest.raises(CompressError, match=f"COMPRESS_TRUSTED_CODE: '{re.escape(bad)}' is not a module name"):
            environment.trusted_code()
        with pytest.raises(ValueError, match="is not a module name"):
            trusted_entries()


@pytest.mark.parametrize("name,value", [("COMPRESS_PROGRESS", "bogus"), ("COMPRESS_WORKERS", "x"),
                                        ("COMPRESS_DEBUG", "0x1"), ("COMPRESS_TRUSTED_CODE", "bad name!")])
def test_the_cli_refuses_before_any_work(tmp_path, monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["prune", str(tmp_path / "missing"), "--percent", "0.5", "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {name}") and repr(value) in lines[0], lines
    assert not out.exists()
    for help_asked in (["--help"], ["prune", "--help"]):  # help still shows
        shown = CliRunner().invoke(main, help_asked)
        assert shown.exit_code == 0 and "Usage:" in shown.output, shown.output
