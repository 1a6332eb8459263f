"""INT8 post-training quantization: the Q/DQ graph obeys TensorRT's rules, stays close to FP32,
calibrates deterministically, and the sensitivity scan can keep layers in float."""

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from compress.errors import CompressError
from compress.quantization import (QuantizeOptions, calibrate, calibration_inputs, prepare, qdq_problems, quantize_model,
                               quantize_qdq, sqnr_db)
from compress.exporting import trt_readiness
from compress.exporting.onnx_export import export_onnx

CLASSES = ["c0", "c1", "c2", "c3"]
MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
SQNR_BOUND_DB = 25.0  # measured ~44 dB for this model and data


def pattern_images(rng, label, n):
    """32x32 images whose class is a horizontal ramp of a class-specific slope, plus noise."""
    ramp = np.linspace(-1, 1, 32)[None, :] * (label - 1.5) * 50 + 128
    img = ramp[None, :, :, None] + rng.normal(0, 25, (n, 32, 32, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for split, n in (("train", 16), ("test", 10)):
        for c, name in enumerate(CLASSES):
            d = root / split / name
            d.mkdir(parents=True)
            for i, img in enumerate(pattern_images(rng, c, n)):
                Image.fromarray(img).save(d / f"{i}.png")
    return root


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    """Decoded-dataset caches go to a temporary directory, not the user's cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COMPRESS_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def tiny_net():
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, len(CLASSES)))


@pytest.fixture(scope="module")
def fp32_onnx(image_folder, tmp_path_factory):
    """A tiny CNN trained briefly on the pattern images, exported with the documented metadata."""
    from compress.data import load_dataset, normalize

    torch.manual_seed(0)
    net = tiny_net()
    train = load_dataset(str(image_folder), "train")
    x, y = normalize(train.images, MEAN, STD), train.labels
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    for _ in range(30):
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    meta = {"classes": CLASSES, "mean": MEAN, "std": STD, "arch": "tiny", "source_sha256": "ab" * 32,
            "toolkit_version": "0.1.0"}
    export_onnx(net, path, input_size=[3, 32, 32], metadata=meta)
    return path


@pytest.fixture(scope="module")
def quantized(fp32_onnx, image_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("q") / "tiny-int8.onnx"
    report = quantize_model(fp32_onnx, out, QuantizeOptions(data=str(image_folder), calib_images=32),
                            log=lambda _m: None)
    return out, report


def initializers(model):
    return {t.name: t for t in model.graph.initializer}


def test_qdq_graph_follows_tensorrt_rules(quantized):
    path, _ = quantized
    model = onnx.load(str(path))
    inits = initializers(model)
    consumers = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    ops = [n.op_type for n in model.graph.node]
    assert not [op for op in ops if op.startswith("QLinear") or op.endswith("Integer")]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    weight_dq = 0
    for n in model.graph.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        assert n.domain in ("", "ai.onnx")
        zp = inits[n.input[2]]
        assert zp.data_type == TensorProto.INT8
        assert not numpy_helper.to_array(zp).any()
        scale = numpy_helper.to_array(inits[n.input[1]])
        if n.op_type == "DequantizeLinear" and n.input[0] in inits:
            w = inits[n.input[0]]
            assert w.data_type == TensorProto.INT8  # never an int32 (bias) DequantizeLinear
            user = consumers[n.output[0]][0]
            assert user.op_type in ("Conv", "Gemm")
            axis = next(a.i for a in n.attribute if a.name == "axis")
            assert axis == 0 and scale.shape == (w.dims[0],)
            weight_dq += 1
        else:
            assert scale.size == 1 and scale.ndim == 0
    assert weight_dq == 3  # two convs and the classifier
    # Biases (the Gemm's, and the ones BN folding created) stay float32 initializers.
    for n in model.graph.node:
        if n.op_type in ("Conv", "Gemm") and len(n.input) > 2:
            assert inits[n.input[2]].data_type == TensorProto.FLOAT
    assert qdq_problems(model) == []


def test_tensorrt_readiness_checker_accepts_it(quantized):
    findings = trt_readiness.check_model(onnx.load(str(quantized[0])))
    assert trt_readiness.errors(findings) == []


def test_metadata_kept_and_precision_int8(quantized, fp32_onnx):
    src = {p.key: p.value for p in onnx.load(str(fp32_onnx)).metadata_props}
    out = {p.key: p.value for p in onnx.load(str(quantized[0])).metadata_props}
    assert out["compress.precision"] == "int8"
    for key, value in src.items():
        if key.startswith("compress.") and key != "compress.precision":
            assert out[key] == value


def test_int8_stays_close_to_fp32(quantized):
    _, report = quantized
    acc = report["accuracy"]
    assert acc["images"] == 40
    assert acc["logit_sqnr_db"] > SQNR_BOUND_DB
    assert acc["fp32"] > 0.9 and acc["int8"] >= acc["fp32"] - 0.05
    assert report["weight_layers"] == report["quantized_layers"] == 3


def test_report_file(quantized):
    path, report = quantized
    on_disk = json.loads(path.with_suffix(".quant.json").read_text())
    assert on_disk["method"] == "minmax" and on_disk["calib_images"] == 32 and on_disk["seed"] == 0
    assert on_disk["excluded_layers"] == []
    assert on_disk["accuracy"]["int8"] == report["accuracy"]["int8"]


def scales(path):
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer
            if t.name.endswith("_scale")}


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_calibration_is_deterministic_per_seed(fp32_onnx, image_folder, tmp_path, method):
    prepare(fp32_onnx, tmp_path / "prep.onnx")
    results = []
    for run, seed in enumerate((0, 0, 1)):
        x, _ = calibration_inputs(str(image_folder), 24, seed, MEAN, STD)
        # 512 bins keep ONNX Runtime's pure-Python KL search short; the command uses 2048.
        calibrate(tmp_path / "prep.onnx", x, tmp_path / f"c{run}.json", method=method, histogram_bins=512)
        quantize_qdq(tmp_path / "prep.onnx", tmp_path / f"q{run}.onnx", tmp_path / f"c{run}.json", method=method)
        assert qdq_problems(onnx.load(str(tmp_path / f"q{run}.onnx"))) == []
        results.append(scales(tmp_path / f"q{run}.onnx"))
    assert results[0].keys() == results[1].keys()
    assert all(np.array_equal(results[0][k], results[1][k]) for k in results[0])
    # Another seed draws other images, so some activation range moves.
    assert any(not np.array_equal(results[0][k], results[2][k]) for k in results[0])


def test_entropy_calibration_is_not_just_minmax(fp32_onnx, image_folder, tmp_path):
    prepare(fp32_onnx, tmp_path / "prep.onnx")
    x, _ = calibration_inputs(str(image_folder), 32, 0, MEAN, STD)
    for method in ("minmax", "entropy"):
        calibrate(tmp_path / "prep.onnx", x, tmp_path / f"{method}.json", method=method, histogram_bins=512)
        quantize_qdq(tmp_path / "prep.onnx", tmp_path / f"{method}.onnx", tmp_path / f"{method}.json", method=method)
    a, b = scales(tmp_path / "minmax.onnx"), scales(tmp_path / "entropy.onnx")
    acts = [k for k in a if a[k].size == 1]
    assert any(b[k] < a[k] * 0.99 for k in acts)  # entropy clips some activation ranges


def test_a_layer_the_quantizer_leaves_in_float_unasked_is_refused(fp32_onnx, image_folder, tmp_path, monkeypatch):
    """The int8 layer count was the layers asked for, not the layers in the graph: ONNX Runtime's quantizer
    leaves a tensor it cannot type in float with only a log line, and the report would still say 3/3."""
    from compress.quantization import calibration
    from compress.quantization.graph import weight_nodes

    real = calibration.quantize_qdq

    def skips_one(prepared, quantized, cache, *, exclude, **kw):
        first = weight_nodes(onnx.load(str(prepared)))[0].name
        return real(prepared, quantized, cache, exclude=[*exclude, first], **kw)

    monkeypatch.setattr(calibration, "quantize_qdq", skips_one)
    out = tmp_path / "q.onnx"
    with pytest.raises(CompressError, match="2 of 3 weight layers came out in int8, but 3 were asked for"):
        quantize_model(fp32_onnx, out, QuantizeOptions(data=str(image_folder), calib_images=16, eval_limit=20),
                       log=lambda _m: None)
    assert not out.exists()


def test_sensitivity_keeps_the_worst_layers_float(fp32_onnx, image_folder, tmp_path, monkeypatch):
    import compress.data

    real, drawn = compress.data.load_dataset_for, []

    def recording(spec, split, *args, **kwargs):
        drawn.append((split, kwargs.get("limit")))
        return real(spec, split, *args, **kwargs)

    monkeypatch.setattr(compress.data, "load_dataset_for", recording)
    out = tmp_path / "kf.onnx"
    report = quantize_model(fp32_onnx, out, QuantizeOptions(data=str(image_folder), calib_images=16, keep_float=1,
                                                            sensitivity_images=20, eval_limit=20),
                            log=lambda _m: None)
    rows = report["sensitivity"]["layers"]
    assert len(rows) == 3 and [r["rank"] for r in rows] == [1, 2, 3]
    # Ranked on training images: the INT8 accuracy is reported on the test images.
    assert report["sensitivity"]["split"] == "train" and ("train", 20) in drawn and ("test", 20) in drawn
    # Worst first: the largest accuracy drop leads, ties broken by the lower SQNR.
    order = [(-r["drop"], r["sqnr_db"]) for r in rows]
    assert order == sorted(order) and len({r["layer"] for r in rows}) == 3
    assert all({"layer", "op", "accuracy", "drop", "sqnr_db"} <= set(r) for r in rows)
    assert report["excluded_layers"] == [rows[0]["layer"]]
    model = onnx.load(str(out))
    inits = initializers(model)
    node = next(n for n in model.graph.node if n.name == rows[0]["layer"])
    assert inits[node.input[1]].data_type == TensorProto.FLOAT  # its weight was left unquantized
    assert report["quantized_layers"] == 2
    assert qdq_problems(model) == []


def test_exclude_by_module_path_and_unknown_name(fp32_onnx, image_folder, tmp_path):
    opts = QuantizeOptions(data=str(image_folder), calib_images=8, exclude=("9",), eval_limit=8)
    report = quantize_model(fp32_onnx, tmp_path / "ex.onnx", opts, log=lambda _m: None)
    assert len(report["excluded_layers"]) == 1 and "Gemm" in report["excluded_layers"][0]
    with pytest.raises(CompressError, match="matches no"):
        quantize_model(fp32_onnx, tmp_path / "bad.onnx",
                       QuantizeOptions(data=str(image_folder), calib_images=8, exclude=("nope",)), log=lambda _m: None)


def test_refuses_non_fp32_and_bare_onnx(quantized, image_folder, tmp_path):
    with pytest.raises(CompressError, match="int8"):
        quantize_model(quantized[0], tmp_path / "again.onnx", QuantizeOptions(data=str(image_folder)),
                       log=lambda _m: None)
    bare = onnx.load(str(quantized[0]))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    with pytest.raises(CompressError, match="compress.mean"):
        quantize_model(tmp_path / "bare.onnx", tmp_path / "x.onnx", QuantizeOptions(data=str(image_folder)),
                       log=lambda _m: None)


def test_qdq_problems_catches_each_violation(quantized):
    base = onnx.load(str(quantized[0]))

    def broken(edit):
        model = onnx.ModelProto()
        model.CopyFrom(base)
        edit(model)
        return qdq_problems(model)

    def nonzero_zero_point(model):
        name = next(n.input[2] for n in model.graph.node if n.op_type == "QuantizeLinear")
        t = next(t for t in model.graph.initializer if t.name == name)
        t.CopyFrom(numpy_helper.from_array(np.array(3, np.int8), name))

    def weight_dq(model):
        names = {t.name for t in model.graph.initializer}
        return next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in names)

    def per_tensor_weight(model):
        t = next(t for t in model.graph.initializer if t.name == weight_dq(model).input[1])
        t.CopyFrom(numpy_helper.from_array(np.array(0.1, np.float32), t.name))

    def int32_input(model):
        t = next(t for t in model.graph.initializer if t.name == weight_dq(model).input[0])
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.int32), t.name))

    def qlinear(model):
        model.graph.node.append(helper.make_node("QLinearConv", ["a", "b", "c", "d", "e", "f", "g", "h"], ["o"]))

    def uint8_activation(model):
        name = next(n.input[2] for n in model.graph.node if n.op_type == "QuantizeLinear")
        t = next(t for t in model.graph.initializer if t.name == name)
        t.CopyFrom(numpy_helper.from_array(np.array(0, np.uint8), name))

    def foreign_domain(model):
        next(n for n in model.graph.node if n.op_type == "QuantizeLinear").domain = "com.microsoft"

    def no_zero_point(model):
        node = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
        del node.input[2]

    def computed_scale(model):
        node = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
        node.input[1] = "computed_scale"

    def per_channel_activation(model):
        name = next(n.input[1] for n in model.graph.node if n.op_type == "QuantizeLinear")
        t = next(t for t in model.graph.initializer if t.name == name)
        t.CopyFrom(numpy_helper.from_array(np.full(3, 0.1, np.float32), name))

    def wrong_axis(model):
        node = weight_dq(model)
        for a in node.attribute:
            if a.name == "axis":
                a.i = 1

    assert broken(lambda m: None) == []
    for edit, words in [(nonzero_zero_point, "non-zero"), (per_tensor_weight, "per-channel"),
                        (int32_input, "INT32"), (qlinear, "QLinearConv"), (uint8_activation, "UINT8"),
                        (foreign_domain, "com.microsoft"), (no_zero_point, "no constant zero point"),
                        (computed_scale, "scale is not a constant"), (per_channel_activation, "one per tensor"),
                        (wrong_axis, "on axis 1, expected per-channel")]:
        problems = broken(edit)
        assert problems and any(words in p for p in problems), (edit.__name__, problems)


def test_sqnr_db():
    ref = np.array([1.0, -2.0, 3.0])
    assert sqnr_db(ref, ref) == float("inf")
    assert sqnr_db(ref, ref * 1.1) == pytest.approx(20.0)


def test_cli_on_a_model_directory(image_folder, tmp_path):
    from click.testing import CliRunner

    from compress.artifact import save_model_dir
    from compress.cli import main

    from compress.models import create_model

    torch.manual_seed(0)
    kwargs = {"num_classes": 4, "width": 0.125}
    save_model_dir(create_model("vgg11", **kwargs), tmp_path / "m",
                   {"arch": "vgg11", "arch_kwargs": kwargs, "classes": CLASSES, "input_size": [3, 32, 32],
                    "normalization": {"mean": MEAN, "std": STD}})
    out = tmp_path / "vgg-int8.onnx"
    result = CliRunner().invoke(main, ["quantize", str(tmp_path / "m"), "--data", str(image_folder), "--out", str(out),
                                       "--calib-images", "8", "--eval-limit", "8", "--exclude", "features.0",
                                       "--ort-int8-kernels", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["excluded_layers"] == ["/features/features.0/Conv"]
    assert "int8_ort_kernels" in report["accuracy"]
    # The FP32 export of a model directory is a scratch file: nothing but OUT and its report is left.
    assert out.exists() and not (tmp_path / "vgg-int8.fp32.onnx").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("vgg-int8")) == [
        "vgg-int8.onnx", "vgg-int8.quant.json"]
    assert {p.key: p.value for p in onnx.load(str(out)).metadata_props}["compress.arch"] == "vgg11"


def test_preactivation_batchnorm_stays_float(image_folder, tmp_path):
    """Pre-activation ResNets keep BatchNormalization nodes ONNX Runtime cannot fold into a Conv; they
    stay float between Q/DQ pairs, and the graph still obeys the rules."""
    from compress.artifact import save_model_dir
    from compress.models import create_model

    torch.manual_seed(0)
    kwargs = {"num_classes": 4}
    save_model_dir(create_model("preresnet20", **kwargs).eval(), tmp_path / "m",
                   {"arch": "preresnet20", "arch_kwargs": kwargs, "classes": CLASSES, "input_size": [3, 32, 32],
                    "normalization": {"mean": MEAN, "std": STD}})
    out = tmp_path / "pre-int8.onnx"
    report = quantize_model(tmp_path / "m", out, QuantizeOptions(data=str(image_folder), calib_images=8, eval_limit=8),
                            log=lambda _m: None)
    model = onnx.load(str(out))
    bns = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    assert bns, "expected unfolded pre-activation BatchNormalization nodes"
    inits = initializers(model)
    for bn in bns:
        assert all(inits[i].data_type == TensorProto.FLOAT for i in bn.input[1:])
    assert qdq_problems(model) == []
    assert report["quantized_layers"] == report["weight_layers"] > 20


@pytest.mark.parametrize("isa", ["avx2", "vnni"])
def test_cpu_target_follows_onnxruntime_guidance(fp32_onnx, image_folder, tmp_path, isa):
    """avx2 (no VNNI): U8S8 with 7-bit weights; vnni: S8S8 full range. Both QDQ, asymmetric activations,
    int32 biases; the accuracy comes from ONNX Runtime's optimized session and the file says so."""
    out = tmp_path / f"cpu-{isa}.onnx"
    report = quantize_model(fp32_onnx, out, QuantizeOptions(data=str(image_folder), calib_images=32, eval_limit=40,
                                                            target="cpu", cpu_isa=isa), log=lambda _m: None)
    model = onnx.load(str(out))
    inits = initializers(model)
    ops = [n.op_type for n in model.graph.node]
    assert "QuantizeLinear" in ops and not [op for op in ops if op.startswith("QLinear")]
    act_zero_types = {inits[n.input[2]].data_type for n in model.graph.node if n.op_type == "QuantizeLinear"}
    assert act_zero_types == {TensorProto.UINT8 if isa == "avx2" else TensorProto.INT8}
    weights = [numpy_helper.to_array(inits[n.input[0]]) for n in model.graph.node
               if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].data_type == TensorProto.INT8]
    largest = max(int(np.abs(w.astype(np.int32)).max()) for w in weights)
    assert (largest <= 64) if isa == "avx2" else (largest == 127)
    assert any(t.data_type == TensorProto.INT32 for t in model.graph.initializer)  # quantized biases
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["compress.quant_target"] == "cpu" and meta["compress.quant_isa"] == isa
    assert json.loads(meta["compress.quant_eval_session"])["graph_optimization_level"] == "ORT_ENABLE_ALL"
    assert json.loads(meta["compress.quant_recipe"])["reduce_range"] is (isa == "avx2")
    assert report["target"] == "cpu" and report["instruction_set"] == isa and report["trt_readiness"] is None
    assert report["eval_session"]["graph_optimization_level"] == "ORT_ENABLE_ALL"
    assert "ORT_ENABLE_ALL" in report["accuracy"]["runtime"]
    acc = report["accuracy"]
    from compress.runtime.cpu_features import int8_isa

    if isa == "vnni" and int8_isa() == "avx2":  # measured on kernels that saturate on its weights, and said so
        assert "measured on a CPU without VNNI" in acc["not_the_targets"]
    else:
        assert acc["int8"] >= acc["fp32"] - 0.05 and acc["logit_sqnr_db"] > 15 and "not_the_targets" not in acc
    # The reported INT8 accuracy is the optimized session's, recomputed here independently.
    import onnxruntime as ort

    from compress.data import load_dataset, normalize
    test = load_dataset(str(image_folder), "test", limit=40, seed=0)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(out), opts, providers=["CPUExecutionProvider"])
    logits = sess.run(None, {sess.get_inputs()[0].name: normalize(test.images, MEAN, STD).numpy()})[0]
    assert float((logits.argmax(1) == test.labels.numpy()).mean()) == acc["int8"]


def test_trt_target_metadata_and_auto_isa(quantized, monkeypatch):
    meta = {p.key: p.value for p in onnx.load(str(quantized[0])).metadata_props}
    assert meta["compress.quant_target"] == "trt" and "compress.quant_isa" not in meta
    assert json.loads(meta["compress.quant_eval_session"])["graph_optimization_level"] == "ORT_ENABLE_BASIC"
    from compress import quantization as q
    from compress.runtime import cpu_features

    monkeypatch.setattr(cpu_features, "cpu_flags", lambda cpuinfo=None: {"avx2", "fma"})
    monkeypatch.setattr(cpu_features.platform, "machine", lambda: "x86_64")
    assert q.recipe_for("cpu").isa == "avx2" and q.recipe_for("cpu").reduce_range
    monkeypatch.setattr(cpu_features, "cpu_flags", lambda cpuinfo=None: {"avx2", "avx512_vnni"})
    assert q.recipe_for("cpu").isa == "vnni" and not q.recipe_for("cpu").reduce_range
    with pytest.raises(CompressError, match="--target"):
        q.recipe_for("gpu")


def test_the_public_function_stays_the_function_once_the_package_is_imported(fp32_onnx, image_folder, tmp_path):
    """`compress.quantize` is the API's function; the package that implements it has another name, so
    importing the package cannot rebind the public name to a module."""
    import compress
    import compress.quantization  # noqa: F401 - the import that used to rebind compress.quantize

    with pytest.raises(CompressError, match="--out must name an .onnx file"):
        compress.quantize(fp32_onnx, tmp_path / "x.txt", QuantizeOptions(data=str(image_folder)))


def test_graphs_the_quantizer_cannot_take_are_named(fp32_onnx):
    from onnx import helper

    from compress.quantization import check_quantizable, node_in_cycle

    model = onnx.load(str(fp32_onnx))
    assert node_in_cycle(model.graph) is None
    check_quantizable(model, "m.onnx")
    custom = onnx.load(str(fp32_onnx))
    custom.graph.node[1].domain = "com.example"
    with pytest.raises(CompressError, match=r"^m.onnx: node .* is com.example:.*, an operator of a custom domain"):
        check_quantizable(custom, "m.onnx")
    local = onnx.load(str(fp32_onnx))
    local.graph.node[1].domain = "com.example"
    local.functions.append(helper.make_function("com.example", local.graph.node[1].op_type, ["x"], ["y"],
                                                [helper.make_node("Identity", ["x"], ["y"])],
                                                [helper.make_opsetid("", 17)]))
    check_quantizable(local, "m.onnx")  # a model-local function is defined in the file itself
    looped = onnx.load(str(fp32_onnx))
    looped.graph.node[0].input[0] = looped.graph.node[2].output[0]
    assert node_in_cycle(looped.graph) == looped.graph.node[0].name
    with pytest.raises(CompressError, match="cycle through node"):
        check_quantizable(looped, "m.onnx")


def test_library_options_are_checked_like_the_cli_checks_them(fp32_onnx, image_folder, tmp_path):
    from compress.quantization import check_options

    for change, needle in [({"calib_images": 0}, "--calib-images"), ({"percentile": float("nan")}, "--percentile"),
                           ({"seed": 2 ** 70}, "MAX_SEED"), ({"keep_float": -1}, "--keep-float"),
                           ({"method": "percentile", "percentile": 101.0}, "--percentile"),
                           ({"exclude": ("a", "a")}, "twice")]:
        with pytest.raises(CompressError, match=needle):
            check_options(QuantizeOptions(data=str(image_folder), **change))
    check_options(QuantizeOptions(data=str(image_folder), method="percentile", percentile=99.9))


def test_data_whose_class_names_differ_from_the_file_s_is_refused(fp32_onnx, image_folder, tmp_path):
    """The same images in folders of other names calibrated and reported an accuracy table on labels that
    are not the model's; `compress eval` on a model directory refused them."""
    import shutil

    renamed = tmp_path / "renamed"
    for split in ("train", "test"):
        for k, name in enumerate(CLASSES):
            shutil.copytree(image_folder / split / name, renamed / split / f"other{k}")
    with pytest.raises(CompressError, match="class 0 is 'other0' in the data"):
        quantize_model(fp32_onnx, tmp_path / "q.onnx", QuantizeOptions(data=str(renamed)), log=lambda _m: None)
    assert not (tmp_path / "q.onnx").exists()


def test_a_graph_of_dynamic_height_and_width_is_quantized_at_its_metadatas_size(fp32_onnx, image_folder, tmp_path):
    """Its input's H and W read as 0, and quantize refused a valid file with "input_size must be between 8 and
    4096 pixels, got 0" (a helper's probe, 2026-12-07): the image size is compress.input_size's."""
    from compress.quantization.graph import META_PREFIX

    model = onnx.load(str(fp32_onnx))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "height", "width"
    onnx.save(model, str(tmp_path / "dynamic.onnx"))
    opts = QuantizeOptions(data=str(image_folder), calib_images=8, eval_limit=8)
    if not any(p.key == META_PREFIX + "input_size" for p in model.metadata_props):
        pytest.fail("the export wrote no compress.input_size")
    report = quantize_model(tmp_path / "dynamic.onnx", tmp_path / "q.onnx", opts)
    assert report["accuracy"]["images"] == 8 and (tmp_path / "q.onnx").exists()
    for p in model.metadata_props:
        if p.key == META_PREFIX + "input_size":
            model.metadata_props.remove(p)
            break
    onnx.save(model, str(tmp_path / "bare.onnx"))
    with pytest.raises(CompressError, match=r"input is \['N', 3, '\?', '\?'\] \(dynamic\) and no compress.input_size"):
        quantize_model(tmp_path / "bare.onnx", tmp_path / "q2.onnx", opts)


def test_probabilities_that_leave_the_graph_stay_float(image_folder, tmp_path):
    """An ultralytics classifier returns (probabilities, logits): quantized, the probabilities fell to a few
    int8 steps and their top class no longer matched the logits'."""
    from onnx_builders import probabilities_and_logits

    model = probabilities_and_logits()
    for i, node in enumerate(model.graph.node):
        node.name = node.name or f"n{i}"
    onnx.save(model, str(tmp_path / "pair.onnx"))
    prepare(tmp_path / "pair.onnx", tmp_path / "prep.onnx")
    x, _ = calibration_inputs(str(image_folder), 16, 0, MEAN, STD, input_size=8)
    calibrate(tmp_path / "prep.onnx", x, tmp_path / "c.json")
    quantize_qdq(tmp_path / "prep.onnx", tmp_path / "q.onnx", tmp_path / "c.json")
    graph = onnx.load(str(tmp_path / "q.onnx")).graph
    makers = {o: n for n in graph.node for o in n.output}
    assert makers["probs"].op_type == "Softmax"  # not a DequantizeLinear of its int8 copy
    assert any(n.op_type == "QuantizeLinear" for n in graph.node)  # the rest is quantized


def test_a_detector_is_refused_before_it_is_calibrated(image_folder, tmp_path, monkeypatch):
    """A detector or a segmenter was calibrated and quantized, then refused at the accuracy step, its file
    thrown away."""
    from compress.quantization import calibration
    from export_helpers import metadata

    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            y = self.conv(x)
            return y, y.mean((2, 3))

    path = export_onnx(TwoHeads().eval(), tmp_path / "det.onnx", input_size=[3, 32, 32],
                       metadata={k: v for k, v in metadata("det").items() if k != "classes"})
    monkeypatch.setattr(calibration, "calibration_inputs", lambda *a, **k: pytest.fail("calibrated"))
    with pytest.raises(CompressError, match=r"det.onnx: it returns 2 outputs; .* makes no file for detectors"):
        quantize_model(path, tmp_path / "q.onnx", QuantizeOptions(data=str(image_folder), calib_images=8))
    assert not (tmp_path / "q.onnx").exists() and not (tmp_path / "q.quant.json").exists()
