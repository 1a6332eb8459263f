"""compress.guard: no output may be an input or a file that belongs to one."""

import os

import pytest

from compress.guard import OutputOverlapError, check_outputs, guarded_outputs, is_model_dir


@pytest.fixture
def model_dir(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "model.json").write_text("{}")
    (d / "model.safetensors").write_bytes(b"w")
    return d


@pytest.mark.parametrize("member", ["model.json", "model.safetensors", "plan.json", "metrics.jsonl"])
def test_a_model_directorys_files_are_protected_even_when_absent(model_dir, member):
    with pytest.raises(OutputOverlapError, match=f"--out {model_dir / member} would overwrite {member} of the input"):
        check_outputs(inputs=[("MODEL_DIR", model_dir)], outputs=[("--out", model_dir / member)])


def test_new_files_beside_an_input_are_allowed(model_dir, tmp_path):
    check_outputs(inputs=[model_dir], outputs=[model_dir / "model.onnx", model_dir / "report.json"])
    check_outputs(inputs=[model_dir], out_dirs=[model_dir / "sub", tmp_path / "other"])


def test_an_input_file_itself(tmp_path):
    src = tmp_path / "a.onnx"
    src.write_bytes(b"x")
    with pytest.raises(OutputOverlapError, match="would overwrite the input SOURCE"):
        check_outputs(inputs=[("SOURCE", src)], outputs=[("--onnx", tmp_path / "." / "a.onnx")])


def test_links_are_resolved(model_dir, tmp_path):
    os.symlink(model_dir / "model.safetensors", tmp_path / "sym")
    os.link(model_dir / "model.safetensors", tmp_path / "hard")
    for alias in ("sym", "hard"):
        with pytest.raises(OutputOverlapError, match="model.safetensors"):
            check_outputs(inputs=[model_dir], outputs=[tmp_path / alias])
    os.symlink(model_dir, tmp_path / "dirlink")
    with pytest.raises(OutputOverlapError, match="is the input model directory"):
        check_outputs(inputs=[model_dir], out_dirs=[("--out", tmp_path / "dirlink")])


def test_an_output_directory_that_is_an_input_file(tmp_path):
    src = tmp_path / "f.dcz"
    src.write_bytes(b"x")
    with pytest.raises(OutputOverlapError, match="is the input"):
        check_outputs(inputs=[src], out_dirs=[src])


def test_out_dir_files_are_checked_by_name(model_dir, tmp_path):
    with pytest.raises(OutputOverlapError, match=r"\(its model.json\)"):
        check_outputs(inputs=[model_dir / "model.json"], out_dirs=[("--out", model_dir)], dir_files=["model.json"])
    check_outputs(inputs=[model_dir / "model.json"], out_dirs=[model_dir], dir_files=["other.json"])


def test_a_dataset_directorys_files(tmp_path):
    data = tmp_path / "data"
    (data / "train" / "a").mkdir(parents=True)
    (data / "train" / "a" / "0.png").write_bytes(b"p")
    with pytest.raises(OutputOverlapError, match="a file of the input directory --data"):
        check_outputs(inputs=[("--data", data)], outputs=[data / "train" / "a" / "0.png"])
    check_outputs(inputs=[data], outputs=[data / "train" / "new.txt"])  # a new file is not one of its files
    with pytest.raises(OutputOverlapError, match="is the input directory"):
        check_outputs(inputs=[data], out_dirs=[data])


def test_two_outputs_naming_one_file(tmp_path):
    with pytest.raises(OutputOverlapError, match="--trt .* and --onnx .* name the same file"):
        check_outputs(outputs=[("--onnx", tmp_path / "x"), ("--trt", tmp_path / "y" / ".." / "x")])


def test_inputs_given_as_a_dict_or_none(model_dir):
    check_outputs(inputs={"MODEL": model_dir, "--int8": None}, outputs={"--out": model_dir / "x.onnx"})
    assert is_model_dir(model_dir) and not is_model_dir(model_dir / "model.json")


def test_guarded_outputs_commits_all_or_nothing(tmp_path, model_dir):
    out, report = tmp_path / "q.onnx", tmp_path / "q.quant.json"
    with pytest.raises(RuntimeError):
        with guarded_outputs([model_dir], [("--out", out), ("the report", report)], command="test") as job:
            job.tmp[out].write_text("int8")
            (job.work / "fp32.onnx").write_text("fp32")
            raise RuntimeError("accuracy check failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    with guarded_outputs([model_dir], [("--out", out), ("the report", report)], command="test") as job:
        job.tmp[out].write_text("int8")
        job.tmp[report].write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "q.onnx", "q.quant.json"]
    with pytest.raises(OutputOverlapError):
        with guarded_outputs([model_dir], [("--out", model_dir / "model.json")]):
            pass


ADVICE = "choose another output (an output must never overwrite an input)"


def test_exact_messages(model_dir, tmp_path):
    src = tmp_path / "a.onnx"
    src.write_bytes(b"x")
    cases = [
        (dict(inputs=src, outputs=src), f"{src} would overwrite the input {src}: {ADVICE}"),
        (dict(inputs=[("SOURCE", src)], outputs=[("--onnx", src)]),
         f"--onnx {src} would overwrite the input SOURCE {src}: {ADVICE}"),
        (dict(inputs=[("MODEL", model_dir)], out_dirs=[("--out", model_dir)]),
         f"--out {model_dir} is the input model directory MODEL {model_dir}: {ADVICE}"),
        (dict(inputs=[model_dir], out_dirs=[model_dir / "plan.json"]),
         f"{model_dir / 'plan.json'} is plan.json of the input model directory {model_dir}: {ADVICE}"),
        (dict(inputs=[model_dir / "model.json"], out_dirs=[("--out", model_dir)], dir_files=["model.json"]),
         f"--out {model_dir} (its model.json) would overwrite the input {model_dir / 'model.json'}: {ADVICE}"),
        (dict(outputs=[("--onnx", tmp_path / "x"), ("--trt", tmp_path / "x")]),
         f"--trt {tmp_path / 'x'} and --onnx {tmp_path / 'x'} name the same file"),
        (dict(outputs=[tmp_path / "x", tmp_path / "x"]), f"{tmp_path / 'x'} and {tmp_path / 'x'} name the same file"),
    ]
    for kwargs, message in cases:
        with pytest.raises(OutputOverlapError) as err:
            check_outputs(**kwargs)
        assert str(err.value) == message


def test_out_dir_files_may_repeat_across_directories(tmp_path):
    # Two output directories each write their model.json: different files, no clash.
    check_outputs(out_dirs=[tmp_path / "a", tmp_path / "b"], dir_files=["model.json"])


def test_inputs_and_outputs_that_are_not_regular_files_are_refused(tmp_path, model_dir):
    from compress.limits import NotRegularFileError

    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(NotRegularFileError, match=r"^--data .*fifo is a FIFO \(named pipe\), not a regular file or "
                                                  r"directory$"):
        check_outputs(inputs=[("--data", tmp_path / "fifo")], outputs=[tmp_path / "o.onnx"])
    with pytest.raises(NotRegularFileError, match="^--onnx /dev/null is a character device, not a regular file$"):
        check_outputs(inputs=[model_dir], outputs=[("--onnx", "/dev/null")])
    with pytest.raises(NotRegularFileError, match="^--out .*fifo is a FIFO .*, not a directory$"):
        check_outputs(inputs=[model_dir], out_dirs=[("--out", tmp_path / "fifo")])
    check_outputs(inputs=[model_dir, tmp_path / "missing"], outputs=[tmp_path / "new.onnx"])  # missing: the caller's
