"""The backend registry: names, artifacts, lazily imported runners, and option values refused in one line."""

import pytest

from compress.runtime.backends import Backend, backend_names, get_backend, parse_backends, register_backend


def test_the_runtime_and_compress_backends_are_registered():
    assert backend_names()[:6] == ("ort-cpu", "ort-cuda", "ort-trt", "trt", "openvino", "openvino-bf16")
    assert {"torch", "torch-compile"} <= set(backend_names())  # registered by importing compress
    assert get_backend("torch").runner.startswith("compress.torch_runner:")
    assert get_backend("trt").gpu and not get_backend("ort-cpu").gpu


@pytest.mark.parametrize("items,words", [
    (("",), "empty backend name in ''"),
    (("ort-cpu,,openvino",), "empty backend name"),
    ((" , ",), "empty backend name"),
    (("ort-cpu", "ort-cpu"), "backend 'ort-cpu' is given twice"),
    (("ort-cpu,openvino,ort-cpu",), "given twice"),
    (("tvm",), "unknown backend 'tvm'; choose one of ort-cpu"),
])
def test_option_values_are_refused_not_guessed(items, words):
    with pytest.raises(ValueError, match=words):
        parse_backends(items)


def test_option_values_that_mean_something():
    assert parse_backends(()) == ["ort-cpu"] and parse_backends(None, default="trt") == ["trt"]
    assert parse_backends(["ort-cpu, openvino", "torch"]) == ["ort-cpu", "openvino", "torch"]
    assert parse_backends("openvino") == ["openvino"]


def test_registering_a_name_twice_is_refused(monkeypatch):
    import compress.runtime.backends as registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    mine = Backend("mine", ("onnx",), "my_pkg.runner:open", "my_pkg.runner:check")
    register_backend(mine)
    register_backend(mine)  # the same backend again: harmless
    with pytest.raises(ValueError, match="'mine' is already registered"):
        register_backend(Backend("mine", ("engine",), "other:open", "other:check"))
    assert register_backend(Backend("mine", ("engine",), "other:open", "other:check"), replace=True).artifacts == (
        "engine",)
    for bad in ("", " x", "a,b"):
        with pytest.raises(ValueError, match="backend name"):
            Backend(bad, ("onnx",), "m:f", "m:c")
    with pytest.raises(ValueError, match="artifacts"):
        Backend("x", ("tflite",), "m:f", "m:c")
