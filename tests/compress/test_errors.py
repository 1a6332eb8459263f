"""Every entry point of the API raises compress.CompressError for a problem it can name, including those
the export and runtime rooms raise with their own classes."""

import pickle

import pytest

import compress
from compress.errors import as_compress_error
from compress.exporting.errors import ExportError, OnnxFileError, ParityError
from compress.runtime.errors import RuntimeBenchError


def test_a_room_error_becomes_both_classes_with_its_message_and_attributes():
    exc = ParityError("fails parity: max |Δ| 0.2")
    exc.result = {"passed": False}
    both = as_compress_error(exc)
    assert isinstance(both, ParityError) and isinstance(both, ExportError) and isinstance(both, compress.CompressError)
    assert str(both) == "fails parity: max |Δ| 0.2" and both.result == {"passed": False}
    assert type(both).__name__ == "ParityError" and type(as_compress_error(ParityError("x"))) is type(both)


def test_export_of_a_corrupt_onnx_file_raises_a_compress_error_that_is_still_an_export_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07not a protobuf at all" * 3)
    with pytest.raises(compress.CompressError) as caught:
        compress.export(bad, tmp_path / "out.onnx", precision="fp16")
    assert isinstance(caught.value, OnnxFileError) and "bad.onnx" in str(caught.value)
    assert not (tmp_path / "out.onnx").exists()


def test_a_runtime_error_from_inside_bench_is_a_compress_error_too(tmp_path, monkeypatch):
    import onnx
    from onnx_builders import tiny_cnn

    import compress.runtime.bench as runtime_bench
    from compress.runtime.bench import BenchSettings
    from compress.runtime.errors import ReportWriteError

    def fails(*_args, **_kwargs):
        raise ReportWriteError("cannot write report.json: disk full")

    monkeypatch.setattr(runtime_bench, "run_benchmark", fails)
    onnx.save(tiny_cnn(), str(tmp_path / "tiny.onnx"))
    with pytest.raises(compress.CompressError, match="^cannot write report.json: disk full$") as caught:
        compress.bench([tmp_path / "tiny.onnx"], BenchSettings(batches=(1,), iters=2, warmup=0, power="none"))
    assert isinstance(caught.value, ReportWriteError) and isinstance(caught.value.__cause__, ReportWriteError)


def test_a_compress_error_passes_through_unchanged():
    @compress.errors.one_error_class
    def fails():
        raise compress.CompressError("plain")

    with pytest.raises(compress.CompressError) as caught:
        fails()
    assert type(caught.value) is compress.CompressError


def test_runtime_errors_keep_their_class_too():
    @compress.errors.one_error_class
    def fails():
        raise RuntimeBenchError("no GPU")

    with pytest.raises(RuntimeBenchError) as caught:
        fails()
    assert isinstance(caught.value, compress.CompressError) and str(caught.value) == "no GPU"
    assert caught.value.__traceback__ is not None


def test_the_combined_class_pickles_as_a_worker_process_sends_it_back():
    exc = ParityError("fails parity")
    exc.result = {"passed": False}
    again = pickle.loads(pickle.dumps(as_compress_error(exc)))
    assert isinstance(again, ParityError) and isinstance(again, compress.CompressError)
    assert str(again) == "fails parity" and again.result == {"passed": False}
