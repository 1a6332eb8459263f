"""Every option means what it says (issue 18): duplicate keys, empty names, options that only apply with
another option, out-of-range rounding and output names of another kind are refused in one line, before any
work, rather than silently ignored or resolved by order.
"""

import pytest
from hostile_support import fresh_copy, refused_unchanged, workspace


@pytest.fixture
def work(tmp_path, tmp_path_factory):
    return fresh_copy(workspace(tmp_path_factory), tmp_path / "w")


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("COMPRESS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


# --- duplicate keys ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("option,spec,needle", [
    ("--bits", "conv=4,conv=5", "conv is given twice"),
    ("--bits", "fc=3,fc=3", "fc is given twice"),
    ("--bits", "features.0=4,features.0=5", "features.0 is given twice"),
    ("--bits", "6,conv=4", "conv is given twice"),
    ("--bits", "conv=4,6", "conv is given twice"),
    ("--bits", "4,5", "given twice"),
    ("--offset-bits", "conv=4,conv=5", "conv is given twice"),
])
def test_share_refuses_a_key_given_twice(work, option, spec, needle):
    extra = ["--prune-weights", "0.5"] if option == "--offset-bits" else []
    refused_unchanged(work, ["share", work / "vgg", "--out", work / "s", option, spec, *extra], option, needle)


def test_the_bit_parser_keeps_its_meaning_without_duplicates():
    from compress.sharing.share import parse_bits

    spec = parse_bits("conv=4,fc=3,features.0=6")
    assert (spec.conv, spec.fc, spec.layers) == (4, 3, {"features.0": 6})
    assert (parse_bits("5").conv, parse_bits("5").fc) == (5, 5)


@pytest.mark.parametrize("exclude,needle", [(["features.0", "features.0"], "twice"), ([""], "empty")])
def test_quantize_refuses_duplicate_or_empty_exclusions(work, exclude, needle):
    args = [a for name in exclude for a in ("--exclude", name)]
    refused_unchanged(work, ["quantize", work / "vgg.onnx", "--data", work / "data", "--out", work / "q.onnx",
                             *args], "--exclude", needle)


@pytest.mark.parametrize("option", ["--backend", "--batch", "--model-dir"])
def test_bench_refuses_a_value_given_twice(work, option):
    value = {"--backend": ["ort-cpu,ort-cpu"], "--batch": ["1,1"],
             "--model-dir": [f"{work / 'vgg.onnx'}={work / 'vgg'}", "--model-dir", f"{work / 'vgg.onnx'}={work / 'vgg'}"]}
    refused_unchanged(work, ["bench", work / "vgg.onnx", "--iters", "2", "--warmup", "0", option, *value[option]],
                      option)


# --- empty names -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["", "ort-cpu,", ","])
def test_bench_refuses_an_empty_backend_name(work, backend):
    refused_unchanged(work, ["bench", work / "vgg.onnx", "--backend", backend, "--batch", "1", "--iters", "2",
                             "--warmup", "0"], "--backend")


@pytest.mark.parametrize("command", ["train", "quantize"])
def test_an_empty_output_name(work, command, monkeypatch):
    monkeypatch.chdir(work)  # what '' would write into
    args = {"train": ["train", "--arch", "vgg11", "--width", "0.0625", "--data", work / "data", "--epochs", "1",
                      "--train-limit", "10", "--test-limit", "10"],
            "quantize": ["quantize", work / "vgg.onnx", "--data", work / "data"]}[command]
    refused_unchanged(work, [*args, "--out", ""], "--out")


def test_empty_class_names_in_model_json_are_refused(work):
    import json

    meta = json.loads((work / "vgg" / "model.json").read_text())
    meta["classes"][3] = " "
    (work / "vgg" / "model.json").write_text(json.dumps(meta))
    refused_unchanged(work, ["info", work / "vgg"], "model.json", "empty name")


# --- options that only apply with another -----------------------------------------------------------------

@pytest.mark.parametrize("extra,needle", [
    (["--percentile", "99.9"], "--method percentile"),
    (["--cpu-isa", "vnni"], "--target cpu"),
    (["--target", "cpu", "--cpu-isa", "vnni", "--ort-int8-kernels"], "--target trt"),
])
def test_quantize_refuses_an_option_its_companion_is_missing_for(work, extra, needle):
    refused_unchanged(work, ["quantize", work / "vgg.onnx", "--data", work / "data", "--out", work / "q.onnx",
                             *extra], needle)


def test_share_refuses_offset_bits_without_pruned_weights(work):
    refused_unchanged(work, ["share", work / "vgg", "--out", work / "s", "--offset-bits", "4"], "--offset-bits",
                      "--prune-weights")


@pytest.mark.parametrize("option,value", [("--dla-core", "0")])
def test_export_refuses_tensorrt_options_without_trt(work, option, value):
    refused_unchanged(work, ["export", work / "vgg", "--onnx", work / "e.onnx", option, value], option, "--trt")


@pytest.mark.parametrize("extra,needle", [(["--streams", "2"], "--streams"), (["--cuda-graph"], "--cuda-graph"),
                                          (["--performance-hint", "THROUGHPUT"], "--performance-hint")])
def test_bench_refuses_options_of_another_backend(work, extra, needle):
    refused_unchanged(work, ["bench", work / "vgg.onnx", "--backend", "ort-cpu", "--batch", "1", "--iters", "2",
                             "--warmup", "0", *extra], needle)


# --- rounding out of range ---------------------------------------------------------------------------------

def test_prune_refuses_rounding_to_a_billion_channels(work):
    """pruning: --round-to larger than every layer is refused (not 'pruned nothing', exit 0)."""
    refused_unchanged(work, ["prune", work / "vgg", "--percent", "0.5", "--round-to", str(10 ** 9), "--out",
                             work / "p"], "--round-to")
