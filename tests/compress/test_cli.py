"""The command line: errors are one line without a traceback, --json prints one object, and a tiny
`compress slim` runs end to end on real CIFAR-10 images."""

import json
import os
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from compress.cli import main


def run(args, **kw):
    return CliRunner().invoke(main, args, catch_exceptions=False, **kw)


def run_process(args, env=None):
    return subprocess.run([sys.executable, "-m", "compress.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def test_unknown_arch_is_one_line_without_traceback(tmp_path):
    proc = run_process(["info", "vgg12"])
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "vgg12" in lines[0]


def test_info_json_is_one_object_with_integer_counts():
    result = run(["info", "vgg19", "--json"])
    assert result.exit_code == 0
    obj = json.loads(result.stdout)
    assert obj["params"] == 20_035_018 and obj["macs"] == 398_136_320 and obj["flops"] == 2 * obj["macs"]
    assert all(isinstance(obj[k], int) for k in ("params", "macs", "flops"))


def test_percent_outside_the_unit_interval_is_refused(tmp_path):
    result = CliRunner().invoke(main, ["slim", "--percent", "1.5", "--out", str(tmp_path / "x")])
    assert result.exit_code != 0 and "(0, 1)" in result.output
    assert not (tmp_path / "x").exists()


def test_missing_and_corrupt_model_dirs(tmp_path):
    proc = run_process(["prune", str(tmp_path / "none"), "--percent", "0.5", "--out", str(tmp_path / "o")])
    assert proc.returncode != 0 and "not found" in proc.stderr and "Traceback" not in proc.stderr
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.json").write_text("{")
    proc = run_process(["eval", str(tmp_path / "bad"), "--data", str(tmp_path)])
    assert proc.returncode != 0 and "not valid JSON" in proc.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_tiny_slim_end_to_end_on_real_cifar10(tmp_path, cifar10_archive, monkeypatch):
    monkeypatch.setenv("COMPRESS_DATA", str(cifar10_archive))
    out = tmp_path / "run"
    args = ["slim", "--arch", "vgg11", "--width", "0.25", "--train-limit", "400", "--test-limit", "200",
            "--pretrain-epochs", "1", "--sparsity", "1e-4", "--epochs", "2", "--finetune-epochs", "1", "--percent", "0.5", "--out", str(out)]
    result = run(args)
    assert result.exit_code == 0, result.output
    for stage in ("pretrained", "sparse", "pruned", "finetuned"):
        assert (out / stage / "model.json").exists() and (out / stage / "model.safetensors").exists()
        assert not (out / stage / "train_state").exists()
    # Sparse training continued from the plain pre-training.
    sparse_meta = json.loads((out / "sparse" / "model.json").read_text())
    assert sparse_meta["parent"]["sha256"] == json.loads((out / "pretrained" / "model.json").read_text())[
        "weights_sha256"]
    assert sparse_meta["training"]["sparsity"] == 1e-4
    summary = json.loads((out / "summary.json").read_text())
    st = summary["stages"]
    assert st["pruned"]["params"] < st["sparse"]["params"] and st["pruned"]["macs"] < st["sparse"]["macs"]
    acc = st["finetuned"]["accuracy"]
    assert round(acc * 200) == pytest.approx(acc * 200, abs=1e-9)  # a count of 200 test images, not a made-up figure
    assert len((out / "sparse" / "metrics.jsonl").read_text().splitlines()) == 2
    assert (out / "summary.md").read_text().startswith("# Slimming summary")

    # Re-running the finished command redoes nothing.
    stamp = (out / "finetuned" / "model.json").stat().st_mtime_ns
    assert run(args).exit_code == 0
    assert (out / "finetuned" / "model.json").stat().st_mtime_ns == stamp

    evaluated = run(["eval", str(out / "finetuned"), "--test-limit", "200", "--json"])
    obj = json.loads(evaluated.stdout)
    assert obj["accuracy"] == pytest.approx(st["finetuned"]["accuracy"], abs=1e-6)

    replay = run(["prune", str(out / "sparse"), "--plan", str(out / "pruned" / "plan.json"), "--out",
                  str(tmp_path / "replayed")])
    assert replay.exit_code == 0, replay.output
    a = json.loads((out / "pruned" / "model.json").read_text())
    b = json.loads((tmp_path / "replayed" / "model.json").read_text())
    assert a["widths"] == b["widths"]
    kept = [g["kept"] for g in json.loads((out / "pruned" / "plan.json").read_text())["groups"]]
    assert kept == [g["kept"] for g in json.loads((tmp_path / "replayed" / "plan.json").read_text())["groups"]]
    # Without data there is no BN recalibration: a replay without data equals itself, bit for bit.
    assert run(["prune", str(out / "sparse"), "--plan", str(out / "pruned" / "plan.json"), "--out",
                str(tmp_path / "replayed2")]).exit_code == 0
    c = json.loads((tmp_path / "replayed2" / "model.json").read_text())
    assert c["weights_sha256"] == b["weights_sha256"]

    info = json.loads(run(["info", str(out / "pruned"), "--json"]).stdout)
    assert info["params"] == st["pruned"]["params"]

    # Another percent on the same run directory: the sparse stage is reused, the later ones redone.
    sparse_stamp = (out / "sparse" / "model.json").stat().st_mtime_ns
    assert run([a if a != "0.5" else "0.9" for a in args]).exit_code == 0
    redone = json.loads((out / "summary.json").read_text())
    assert redone["percent"] == 0.9
    assert (out / "sparse" / "model.json").stat().st_mtime_ns == sparse_stamp
    assert (out / "finetuned" / "model.json").stat().st_mtime_ns != stamp
    finetuned = json.loads((out / "finetuned" / "model.json").read_text())
    pruned = json.loads((out / "pruned" / "model.json").read_text())
    assert finetuned["parent"]["sha256"] == pruned["weights_sha256"]

    refused = CliRunner().invoke(main, [*args, "--no-resume"])
    assert refused.exit_code != 0 and "--no-resume" in refused.output


def test_torchrun_trains_with_two_cpu_processes(tmp_path):
    """DDP over gloo: both ranks step together, rank 0 alone writes the model directory."""
    from tests_support import make_image_folder

    data = make_image_folder(tmp_path / "ds", per_class=24, size=32)
    out = tmp_path / "ddp"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29577",
         "-m", "compress.cli", "train", "--arch", "vgg11", "--width", "0.125", "--data", str(data),
         "--epochs", "2", "--recipe", "fast", "--batch-size", "8", "--out", str(out)],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1",
                                             "COMPRESS_CACHE": str(tmp_path / "cache")}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = json.loads((out / "model.json").read_text())
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["epoch"] for ln in lines] == [1, 2]
    # The recorded accuracy is what evaluating the written model gives on the same 2 x 24 test images.
    evaluated = run(["eval", str(out), "--data", str(data), "--json"], env={"COMPRESS_CACHE": str(tmp_path / "cache")})
    assert evaluated.exit_code == 0, evaluated.output
    obj = json.loads(evaluated.stdout)
    assert obj["images"] == 48 and meta["accuracy"] == pytest.approx(obj["accuracy"], abs=1e-9)


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


def test_sparsity_option_takes_lambda_auto_or_a_budget():
    from compress.cli.params import SPARSITY
    from compress.sparsity import Budget, SparsityConfig

    assert SPARSITY.convert("1e-4", None, None) == 1e-4
    auto = SPARSITY.convert("auto", None, None)
    assert isinstance(auto, SparsityConfig) and auto.mode == "proximal" and auto.strength == "auto"
    assert SPARSITY.convert("budget:2", None, None).strength == Budget(2.0)
    for bad in ("nan", "-1", "budget:0", "budget:inf", "lots"):
        with pytest.raises(click.BadParameter):
            SPARSITY.convert(bad, None, None)


def test_errors_go_to_stderr_and_leave_stdout_clean(monkeypatch):
    from compress.errors import CompressError

    monkeypatch.delenv("COMPRESS_DEBUG", raising=False)
    for exc in (CompressError("bad file x"), KeyError("percent"), KeyboardInterrupt()):
        monkeypatch.setitem(main.commands, "boom", _command_raising(exc))
        result = CliRunner().invoke(main, ["boom"])
        assert result.stdout == "" and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr == "interrupted; re-run the same command to continue\n"


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


def test_round_to_option_takes_a_whole_number_or_auto():
    from compress.cli.params import ROUND_TO

    assert ROUND_TO.convert("16", None, None) == 16 and ROUND_TO.convert(8, None, None) == 8
    assert ROUND_TO.convert(" AUTO ", None, None) == "auto"
    for bad in ("0", "-8", "1.5", "nan", "sixteen"):
        with pytest.raises(click.BadParameter):
            ROUND_TO.convert(bad, None, None)
