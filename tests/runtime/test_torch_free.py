"""runtime/ must import and run where PyTorch cannot be imported (a Jetson or CPU box without torch)."""

import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import compress.runtime

ROOT = Path(__file__).resolve().parents[2]
BLOCKER = textwrap.dedent("""
    import sys
    class _NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "torchvision"):
                # What Python raises when torch is not installed at all.
                raise ModuleNotFoundError(f"No module named {name!r} (blocked in this test)", name=name)
            return None
    sys.meta_path.insert(0, _NoTorch())
""")


def _run(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
                                                       "PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path)})


def test_every_runtime_module_imports_without_torch(tmp_path):
    modules = sorted(m.name for m in pkgutil.iter_modules(compress.runtime.__path__))
    assert {"runners", "runner_base", "backends", "ort_runner", "trt_runner", "report", "onnx_flops", "jetson"} <= set(modules)
    result = _run(f"""
        import importlib
        for name in {modules!r}:
            importlib.import_module("compress.runtime." + name)
        importlib.import_module("compress.torch_runner")  # the torch backends moved to the compress side
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules), "torch got imported"
        try:
            import torch
        except ImportError:
            print("blocked ok")
    """, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "blocked ok" in result.stdout


def test_a_benchmark_with_report_runs_without_torch(tmp_path):
    """ORT runner, FLOPs counter, accuracy, report and plots, end to end, with torch blocked."""
    sys.path.insert(0, str(Path(__file__).parent))
    from onnx_builders import tiny_cnn
    import onnx

    model = tmp_path / "tiny.onnx"
    onnx.save(tiny_cnn(), str(model))
    result = _run(f"""
        import numpy as np
        from compress.runtime.bench import BenchSettings, EvalData, run_benchmark
        from compress.runtime.report import write_report, load_report
        from compress.runtime.runners import open_runner
        data = EvalData(np.zeros((4, 3, 8, 8), np.uint8), np.zeros(4, np.int64), [], "zeros")
        report = run_benchmark([{str(model)!r}], BenchSettings(batches=(1, 2), iters=3, warmup=1), data=data,
                               log=lambda m: None)
        write_report(report, {str(tmp_path / 'out')!r})
        loaded = load_report({str(tmp_path / 'out')!r})
        v = loaded["variants"][0]
        assert v["status"] == "ok", v
        assert v["model"]["macs"] == 6952
        try:
            open_runner({str(model)!r}, "torch")
        except Exception as exc:
            print("torch backend:", exc)
        assert "torch" not in sys.modules
        print("ran ok")
    """, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "ran ok" in result.stdout
    # The torch backend refuses with a message naming what to install, instead of an ImportError traceback.
    assert "torch backend:" in result.stdout and "pip install torch" in result.stdout


def test_cli_bench_runs_and_torch_commands_name_the_extra(tmp_path):
    """The core install's promise: `compress bench` on ONNX without torch; a torch command fails in one
    line naming the [train] extra."""
    sys.path.insert(0, str(Path(__file__).parent))
    from onnx_builders import tiny_cnn
    import onnx

    model = tmp_path / "tiny.onnx"
    onnx.save(tiny_cnn(), str(model))
    cli = "from compress.cli import main\nsys.argv = ['compress'] + sys.argv[1:]\nmain()"
    bench = subprocess.run([sys.executable, "-c", BLOCKER + cli, "bench", str(model), "--batch", "1", "--iters", "3",
                            "--warmup", "1"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                           env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
                                "TMPDIR": str(tmp_path)})
    assert bench.returncode == 0, bench.stderr
    assert "| tiny.onnx | ok |" in bench.stdout
    torch_backend = subprocess.run([sys.executable, "-c", BLOCKER + cli, "bench", str(model), "--backend", "torch",
                                    "--report", str(tmp_path / "report")], cwd=ROOT, capture_output=True, text=True,
                                   timeout=120, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert torch_backend.returncode == 2 and not (tmp_path / "report").exists()
    assert torch_backend.stderr.strip().splitlines() == [
        "Error: torch needs PyTorch: pip install torch (or use an ort-* / trt backend, which do not)"]
    for args in (["prune", str(tmp_path), "--percent", "0.5", "--out", str(tmp_path / "p")], ["train", "--help"]):
        result = subprocess.run([sys.executable, "-c", BLOCKER + cli, *args], cwd=ROOT, capture_output=True,
                                text=True, timeout=120, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
        if args[-1] == "--help" and result.returncode == 0:
            continue  # help texts need no torch
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and 'pip install "cnn-compress[train]"' in lines[0], result.stderr
