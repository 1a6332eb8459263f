"""compress.lock: one writer per output; the second gets one line naming the first."""

import json
import os
import subprocess
import sys

import pytest

from compress.lock import LockedError, lock_path, output_lock


def test_second_writer_is_refused_with_the_holders_pid_and_command(tmp_path):
    with output_lock(tmp_path / "out", "compress slim --out out") as held:
        info = json.loads(held.read_text())
        assert info["pid"] == os.getpid() and info["command"] == "compress slim --out out"
        with pytest.raises(LockedError) as err:
            with output_lock(tmp_path / "out", "another"):
                pass
        text = str(err.value)
        assert "\n" not in text and f"pid {os.getpid()} (compress slim --out out, since" in text
        assert text.startswith(str(tmp_path / "out"))


def test_lock_held_by_another_process(tmp_path):
    code = ("import sys, time; from compress.lock import output_lock\n"
            "with output_lock(sys.argv[1], 'holder'):\n    print('held', flush=True); time.sleep(30)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "out")], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(LockedError, match=f"pid {proc.pid} \\(holder"):
            with output_lock(tmp_path / "out", "me"):
                pass
    finally:
        proc.kill()
        proc.wait()
    with output_lock(tmp_path / "out", "me"):  # a killed holder leaves no stale lock
        pass


def test_lock_is_released_and_cleaned_up(tmp_path):
    (tmp_path / "out").mkdir()
    with output_lock(tmp_path / "out") as held:
        assert held == tmp_path / "out" / ".lock"
    assert list((tmp_path / "out").iterdir()) == []
    with output_lock(tmp_path / "fresh"):
        assert (tmp_path / "fresh").is_dir()
    assert not (tmp_path / "fresh").exists()


def test_lock_paths_for_files_and_directories(tmp_path):
    assert lock_path(tmp_path / "m.onnx") == tmp_path / ".m.onnx.lock"
    assert lock_path(tmp_path / "run") == tmp_path / "run" / ".lock"
    assert lock_path(tmp_path / "run.v2", directory=True) == tmp_path / "run.v2" / ".lock"
    with output_lock(tmp_path / "m.onnx", "export"):
        with pytest.raises(LockedError):
            with output_lock(tmp_path / "m.onnx"):
                pass
        with output_lock(tmp_path / "other.onnx"):  # another output: no conflict
            pass
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_cannot_be_written_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    import errno

    from compress.errors import CompressError

    real_open = os.open

    def read_only(path, flags, *args):
        if flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(CompressError, match=r"^cannot write .*a/b/out: Permission denied \(.*\.lock\)$"):
        with output_lock(tmp_path / "a" / "b" / "out", "compress x", directory=True):
            pass
    assert not (tmp_path / "a").exists()  # every folder the lock made is gone again
