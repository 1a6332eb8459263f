"""Atomic writes: the final name only ever holds a finished file; temporaries vanish on failure, Ctrl-C
and SIGTERM; files get the umask's permissions."""

import json
import os
import signal

import pytest

from compress.runtime import atomic


def names(d):
    return sorted(os.listdir(d))


def test_the_final_name_is_untouched_until_the_block_ends(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old")
    with atomic.atomic_path(target) as tmp:
        assert tmp != target and tmp.parent == tmp_path and tmp.name.startswith(".a.json.")
        tmp.write_text("new")
        assert target.read_text() == "old"  # never written in place
    assert target.read_text() == "new" and names(tmp_path) == ["a.json"]


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_a_failure_keeps_the_old_file_and_removes_the_temporary(tmp_path, exc):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(type(exc)):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise exc
    assert target.read_text() == "old" and names(tmp_path) == ["a.txt"]


def test_staged_renames_all_or_nothing_in_order(tmp_path, monkeypatch):
    order = []
    real = os.replace
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (order.append(os.path.basename(b)), real(a, b)))
    with atomic.staged([tmp_path / "weights", tmp_path / "model.json"]) as (w, m):
        w.write_text("w")
        m.write_text("m")
        assert names(tmp_path) != ["model.json", "weights"]
    assert order == ["weights", "model.json"] and names(tmp_path) == ["model.json", "weights"]
    with pytest.raises(ValueError, match="share one name"):
        with atomic.staged([tmp_path / "x", tmp_path / "sub" / ".." / "x"]):
            pass


def test_a_stop_between_the_renames_never_leaves_an_old_marker_beside_a_new_file(tmp_path, monkeypatch):
    """quantize killed between renaming OUT.onnx and OUT.quant.json left the new INT8 file beside the last
    run's report (another target, other accuracies)."""
    (tmp_path / "q.onnx").write_text("old onnx")
    (tmp_path / "q.quant.json").write_text("old report")
    real, calls = os.replace, []

    def stopped_after_one(a, b):
        calls.append(b)
        if len(calls) == 2:
            raise KeyboardInterrupt  # kill -9 between the two renames
        real(a, b)

    monkeypatch.setattr(atomic.os, "replace", stopped_after_one)
    with pytest.raises(KeyboardInterrupt):
        with atomic.staged([tmp_path / "q.onnx", tmp_path / "q.quant.json"]) as (o, r):
            o.write_text("new onnx")
            r.write_text("new report")
    assert names(tmp_path) == ["q.onnx"] and (tmp_path / "q.onnx").read_text() == "new onnx"


def test_sigterm_inside_a_block_cleans_up(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(atomic.Terminated) as err:
        with atomic.staged([tmp_path / "a", tmp_path / "b"]) as (a, _):
            a.write_text("x")
            os.kill(os.getpid(), signal.SIGTERM)
    assert isinstance(err.value, KeyboardInterrupt) and err.value.signum == signal.SIGTERM
    assert names(tmp_path) == []
    assert signal.getsignal(signal.SIGTERM) is before


def test_signal_handlers_are_restored(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    with atomic.signals_as_exceptions():
        with atomic.signals_as_exceptions():
            assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_permissions_follow_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        atomic.write_json(tmp_path / "r.json", {"a": 1})
        with atomic.atomic_path(tmp_path / "w.bin") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(old)
    for f in ("r.json", "w.bin"):
        assert (tmp_path / f).stat().st_mode & 0o777 == 0o666 & ~mask
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 1}


def test_export_writes_are_atomic_with_normal_permissions(tmp_path, monkeypatch):
    from compress.exporting import _files

    mask = os.umask(0o022)
    os.umask(mask)
    target = tmp_path / "m.onnx"
    target.write_bytes(b"old")
    monkeypatch.setattr(os, "replace", lambda *_: (_ for _ in ()).throw(OSError(28, "No space left")))
    with pytest.raises(OSError):
        _files.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old" and names(tmp_path) == ["m.onnx"]
    monkeypatch.undo()
    _files.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new" and target.stat().st_mode & 0o777 == 0o666 & ~mask
    with pytest.raises(OSError):
        _files.atomic_write_many([(tmp_path / "a", b"a"), (tmp_path / "m.onnx" / "under-a-file", b"b")])
    assert names(tmp_path) == ["m.onnx"]


def test_scratch_dir_is_removed_on_success_and_failure(tmp_path):
    with atomic.scratch_dir(tmp_path / "out.onnx") as work:
        (work / "f").write_text("x")
        assert atomic.is_temp_name(work.name)
    with pytest.raises(RuntimeError):
        with atomic.scratch_dir(tmp_path / "out.onnx") as work:
            raise RuntimeError
    assert names(tmp_path) == []


def test_staged_dir_replaces_an_old_directory_whole(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "old").write_text("o")
    with atomic.staged_dir(tmp_path / "d") as tmp:
        (tmp / "new").write_text("n")
        assert (tmp_path / "d" / "old").exists()
    assert names(tmp_path / "d") == ["new"] and names(tmp_path) == ["d"]
    with pytest.raises(RuntimeError):
        with atomic.staged_dir(tmp_path / "d") as tmp:
            (tmp / "half").write_text("h")
            raise RuntimeError
    assert names(tmp_path / "d") == ["new"] and names(tmp_path) == ["d"]


def test_move_into_puts_the_marker_last_and_removes_the_old_one_first(tmp_path, monkeypatch):
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    out.mkdir()
    (out / "model.json").write_text("old")
    for name in ("model.json", "a.bin", "z.bin"):
        (work / name).write_text(name)
    seen = []
    real = os.replace
    monkeypatch.setattr(atomic.os, "replace",
                        lambda a, b: (seen.append((os.path.basename(b), (out / "model.json").exists())), real(a, b)))
    atomic.move_into(work, out)
    assert [s[0] for s in seen] == ["a.bin", "z.bin", "model.json"]
    assert not any(marker for _, marker in seen)  # the old marker went first
    assert (out / "model.json").read_text() == "model.json" and names(work) == []


def test_os_error_line_names_the_file():
    line = atomic.os_error_line(OSError(28, "No space left on device", "/x/model.dcz"), "/x")
    assert line == "cannot write /x/model.dcz: No space left on device"
    assert atomic.os_error_line(OSError("odd"), "/x") == "cannot write /x: odd"


def test_terminated_names_its_signal():
    assert "SIGTERM" in str(atomic.Terminated(signal.SIGTERM))
    assert atomic.Terminated(signal.SIGHUP).signum == signal.SIGHUP


def test_temporaries_are_hidden_and_marked(tmp_path):
    tmp = atomic.temp_name(tmp_path / "deep" / "er" / "m.json")  # missing parents are created
    assert tmp.parent == tmp_path / "deep" / "er" and tmp.name.startswith(".m.json.") and tmp.name.endswith(".tmp")
    assert atomic.is_temp_name(tmp.name) and atomic.is_temp_name(".d.abc.partial")
    assert not atomic.is_temp_name(".lock") and not atomic.is_temp_name("x.tmp") and not atomic.is_temp_name("m.json")


def test_a_temporary_replaced_by_a_directory_or_removed_is_still_cleaned(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic.staged([tmp_path / "a", tmp_path / "b"]) as (a, b):
            a.unlink()
            a.mkdir()
            (a / "inner").write_text("x")  # a writer that made a directory at the temporary name
            b.unlink()  # and one that removed its temporary
            raise RuntimeError
    assert names(tmp_path) == []


def test_staged_directories_get_the_umask_permissions(tmp_path):
    old = os.umask(0o027)
    try:
        with atomic.staged_dir(tmp_path / "d") as tmp:
            (tmp / "f").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o750


def test_write_json_format_and_write_bytes(tmp_path):
    atomic.write_json(tmp_path / "a.json", {"z": 1, "a": [1, 2]})
    assert (tmp_path / "a.json").read_text() == '{\n  "z": 1,\n  "a": [\n    1,\n    2\n  ]\n}\n'
    atomic.write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01" and names(tmp_path) == ["a.json", "b.bin"]


def test_append_jsonl_adds_whole_lines(tmp_path):
    atomic.append_jsonl(tmp_path / "m.jsonl", {"epoch": 1})
    atomic.append_jsonl(tmp_path / "m.jsonl", {"epoch": 2, "loss": 0.5})
    assert (tmp_path / "m.jsonl").read_text() == '{"epoch": 1}\n{"epoch": 2, "loss": 0.5}\n'


def test_move_into_a_new_nested_directory_without_a_marker(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "a.bin").write_text("a")
    (work / ".x.tmp").write_text("left by a failed write")  # temporaries are not published
    moved = atomic.move_into(work, tmp_path / "new" / "out")
    assert moved == [tmp_path / "new" / "out" / "a.bin"] and names(tmp_path / "new" / "out") == ["a.bin"]
    (work / "sub").mkdir()
    with pytest.raises(ValueError, match="moves files only; .*sub is a directory"):
        atomic.move_into(work, tmp_path / "out2")


def test_os_error_line_without_a_reason():
    assert atomic.os_error_line(OSError(), "/x") == "cannot write /x: OSError"


# --- a set of files as one unit (benchmark reports) ------------------------------------------------------

def _fail_writes_after(monkeypatch, allowed: int, err: int = 28):
    """os.write raises `err` (ENOSPC) once `allowed` writes have gone through: a disk filling up mid-way."""
    real, calls = os.write, []

    def write(fd, data):
        calls.append(fd)
        if len(calls) > allowed:
            raise OSError(err, os.strerror(err))
        return real(fd, data)
    monkeypatch.setattr(atomic.os, "write", write)


def test_write_files_into_moves_the_marker_last_and_removes_stale_files(tmp_path, monkeypatch):
    out = tmp_path / "r"
    out.mkdir()
    for name, text in (("report.json", "old"), ("old_plot.png", "o"), ("notes.txt", "mine")):
        (out / name).write_text(text)
    order, real = [], os.replace
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (order.append(os.path.basename(b)), real(a, b)))
    atomic.write_files_into(out, {"report.json": b"{}", "report.md": b"# r", "a.png": b"png"}, marker="report.json",
                            stale=["old_plot.png", "a.png"])
    assert order[-1] == "report.json" and set(order) == {"report.json", "report.md", "a.png"}
    assert names(out) == ["a.png", "notes.txt", "report.json", "report.md"]  # notes.txt is not ours: kept
    assert (out / "report.json").read_text() == "{}"


def test_write_files_into_leaves_nothing_when_a_write_fails(tmp_path, monkeypatch):
    out = tmp_path / "r"
    out.mkdir()
    (out / "report.json").write_text("old")
    (out / "report.md").write_text("old md")
    _fail_writes_after(monkeypatch, 1)
    with pytest.raises(OSError) as err:
        atomic.write_files_into(out, {"report.md": b"new", "report.json": b"{}"}, marker="report.json")
    assert err.value.filename == str(out / "report.json")
    assert names(out) == ["report.json", "report.md"] and (out / "report.md").read_text() == "old md"
    with pytest.raises(OSError):
        atomic.write_files_into(tmp_path / "new", {"report.json": b"{}"}, marker="report.json")
    assert names(tmp_path) == ["r"]  # the directory it made is gone again


def test_write_files_into_refuses_odd_names(tmp_path):
    for files in ({"a": b""}, {"report.json": b"", "../x": b""}, {"report.json": b"", ".hidden": b""}):
        with pytest.raises(ValueError):
            atomic.write_files_into(tmp_path, files, marker="report.json")
    assert names(tmp_path) == []


@pytest.mark.parametrize("err,words", [(28, "disk full while writing /r/report.json"),
                                       (27, "file too large while writing /r/report.json"),
                                       (30, "/r is read-only"), (13, "/r is not writable"),
                                       (1, "/r is not writable"), (5, "cannot write /r/report.json")])
def test_write_problem_names_the_cause(err, words):
    line = atomic.write_problem(OSError(err, os.strerror(err), "/r/report.json"), "/r")
    assert line.startswith(words) and os.strerror(err) in line


def test_write_bytes_takes_any_buffer_and_write_many_is_all_or_nothing(tmp_path, monkeypatch):
    import numpy as np

    atomic.write_bytes(tmp_path / "a.bin", memoryview(np.arange(4, dtype=np.uint8)))
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01\x02\x03"
    _fail_writes_after(monkeypatch, 1)
    with pytest.raises(OSError):
        atomic.write_many([(tmp_path / "x", b"x"), (tmp_path / "y", b"y")])
    assert names(tmp_path) == ["a.bin"]


def test_what_a_killed_writer_left_is_removed_for_the_names_asked_only(tmp_path):
    """A kill -9 runs no cleanup: full-size weights temporaries piled up under every resumed stage."""
    with atomic.atomic_path(tmp_path / "model.safetensors") as tmp:
        left = tmp.name
    keep = atomic.temp_name(tmp_path / "other.onnx")  # another writer's, not asked for
    (tmp_path / left).write_text("weights of a killed run")
    partial = atomic._hidden_dir(tmp_path / "model.json")
    (partial / "model.safetensors").write_text("x")
    (tmp_path / ".hidden.txt").write_text("a user's file")
    removed = atomic.remove_leftovers(tmp_path, lambda name: name in ("model.safetensors", "model.json"))
    assert sorted(removed) == sorted([left, partial.name])
    assert names(tmp_path) == sorted([".hidden.txt", keep.name, "model.safetensors"])


def test_a_failed_write_is_named_by_the_file_it_stands_for():
    """"cannot write pruned/.plan.json.i1ki9774.tmp" named a hidden temporary the user never sees."""
    assert atomic.final_name("run/pruned/.plan.json.i1ki9774.tmp") == "run/pruned/plan.json"
    assert atomic.final_name("ul/.q.onnx.mpu0hbqs.partial/fp32.onnx") == "ul/fp32.onnx"
    assert atomic.final_name("run/pruned/model.json") == "run/pruned/model.json"
