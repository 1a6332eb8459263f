"""torch → ONNX: parity in ONNX Runtime for every model family (pruned and not), dynamic and
static batch, BatchNorm kept in the graph, and refusal of bad arguments."""

import collections
import json

import numpy as np
import onnx
import pytest
import torch

from compress.exporting.onnx_export import export_onnx
from compress.exporting.parity import check_parity
from compress.models import create_model
from export_helpers import images, lively, metadata
from tests_support import lively_bn

FAMILIES = {
    "vgg11": {"width": 0.125},
    "preresnet20": {"width": 0.25},
    "densenet16": {"width": 0.5},
    "mobilenet_v2": {"width_mult": 0.25},  # torchvision
}


def prune_some(model):
    """Physically prune with the toolkit's slimming (torch-pruning underneath); 30% of BN channels."""
    from compress.slimming import prune

    before = sum(p.numel() for p in model.parameters())
    model, _ = prune(model, 0.3, torch.randn(1, 3, 32, 32))
    assert sum(p.numel() for p in model.parameters()) < before
    return model.eval()


def graph_params(model: onnx.ModelProto) -> int:
    """Conv/Gemm weights and biases plus BN γ/β, read from the graph the way the runtime counts them."""
    inits = {t.name: t for t in model.graph.initializer}
    roles = {"Conv": (1, 2), "Gemm": (1, 2), "BatchNormalization": (1, 2)}
    total = 0
    for node in model.graph.node:
        for i in roles.get(node.op_type, ()):
            if i < len(node.input) and node.input[i] in inits:
                total += int(np.prod(inits[node.input[i]].dims))
    return total


@pytest.mark.parametrize("pruned", [False, True], ids=["dense", "pruned"])
@pytest.mark.parametrize("arch", list(FAMILIES))
def test_parity_in_onnx_runtime(tmp_path, arch, pruned):
    model = lively(create_model(arch, num_classes=10, **FAMILIES[arch]))
    if pruned:
        model = prune_some(model)
    path = export_onnx(model, tmp_path / "m.onnx", input_size=[3, 32, 32], metadata=metadata(arch))
    result = check_parity(model, path, images(16), atol=1e-3, min_agreement=0.999)
    assert result.passed and result.top1_agreement == 1.0
    assert result.logit_scale > 1.0  # a real signal was compared, not near-zero logits
    proto = onnx.load(str(path))
    assert graph_params(proto) == sum(p.numel() for p in model.parameters())
    assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {17}


def test_dynamic_batch_gives_the_same_per_sample_outputs(vgg_onnx):
    from compress.exporting.parity import onnx_session

    _, path = vgg_onnx
    session = onnx_session(path)
    (inp,) = session.get_inputs()
    assert inp.name == "input" and inp.shape[0] == "batch"
    assert [o.name for o in session.get_outputs()] == ["logits"]
    x = images(7, seed=3)
    seven = session.run(None, {"input": x})[0]
    ones = np.concatenate([session.run(None, {"input": x[i:i + 1]})[0] for i in range(7)])
    assert seven.shape == (7, 10)
    np.testing.assert_allclose(seven, ones, rtol=1e-5, atol=1e-5)


def test_static_batch_is_fixed_and_parity_pads_the_last_chunk(tmp_path):
    model = lively(create_model("vgg11", num_classes=10, width=0.125))
    path = export_onnx(model, tmp_path / "s.onnx", input_size=[3, 32, 32], metadata=metadata(),
                       dynamic_batch=False, batch=4, opset=13)
    proto = onnx.load(str(path))
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 4
    assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {13}
    assert check_parity(model, path, images(10)).images == 10


def test_batchnorm_stays_unfused_and_vgg19_counts_match_the_paper(tmp_path):
    model = create_model("vgg19", num_classes=10)
    path = export_onnx(model, tmp_path / "vgg19.onnx", input_size=[3, 32, 32], metadata=metadata("vgg19"))
    proto = onnx.load(str(path))
    ops = collections.Counter(n.op_type for n in proto.graph.node)
    assert ops["BatchNormalization"] == 16 and ops["Conv"] == 16
    assert "Identity" not in ops  # shared fresh-BN tensors were given back to each layer
    assert graph_params(proto) == 20_035_018


def test_export_leaves_the_module_as_it_was(tmp_path):
    model = create_model("vgg11", num_classes=10, width=0.125).train()
    export_onnx(model, tmp_path / "t.onnx", input_size=[3, 32, 32], metadata=metadata())
    assert model.training


@pytest.mark.parametrize("kwargs, match", [
    ({"opset": 18}, "opset"),
    ({"opset": 12}, "opset"),
    ({"batch": 0}, "batch"),
    ({"metadata": metadata(classes=["cat", "cat"])}, "listed twice"),  # classes may be absent (detectors), never wrong
    ({"metadata": metadata(classes=[])}, "classes"),
    ({"metadata": metadata(precision="bf16")}, "precision"),
    ({"metadata": metadata(mean=[0.5])}, "mean"),
    ({"input_size": [3, 64, 64]}, "input_size"),
])
def test_bad_arguments_are_refused_before_writing(tmp_path, kwargs, match):
    model = create_model("vgg11", num_classes=10, width=0.125)
    args = {"input_size": [3, 32, 32], "metadata": metadata(), **kwargs}
    with pytest.raises(ValueError, match=match):
        export_onnx(model, tmp_path / "x.onnx", **args)
    assert not (tmp_path / "x.onnx").exists()


# --- issue 17 part 4: graphs with several outputs ------------------------------------------------------------

class DictNet(torch.nn.Module):
    """A small two-headed network returning a dict: class logits and a per-pixel map, plus a nested pair."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
        self.cls = torch.nn.Linear(8, 5)
        self.seg = torch.nn.Conv2d(8, 2, 1)

    def forward(self, x):
        f = self.body(x)
        return {"logits": self.cls(f.mean((2, 3))), "mask": self.seg(f),
                "aux": (f.amax((2, 3)), torch.sigmoid(self.seg(f)) * 1e-3)}


def detection_metadata(**over):
    meta = metadata(**over)
    meta.pop("classes")
    return meta


def test_a_dict_of_outputs_exports_one_named_output_each_with_dynamic_batch(tmp_path):
    from compress.exporting.parity import onnx_session

    model = lively_bn(DictNet())
    path = export_onnx(model, tmp_path / "d.onnx", input_size=[3, 32, 32], metadata=detection_metadata())
    session = onnx_session(path)
    names = [o.name for o in session.get_outputs()]
    assert names == ["logits", "mask", "aux.0", "aux.1"]
    assert all(o.shape[0] == "batch" for o in session.get_outputs())
    x = images(3)
    outs = session.run(None, {"input": x})
    with torch.no_grad():
        ref = model(torch.from_numpy(x))
    assert outs[1].shape == (3, 2, 32, 32) and outs[2].shape == (3, 8)
    np.testing.assert_allclose(outs[3], ref["aux"][1].numpy(), rtol=1e-4, atol=1e-9)
    result = check_parity(model, path, images(5))
    assert result.passed and result.top1_agreement is None
    assert [o["name"] for o in result.outputs] == names and all(o["max_abs_diff"] <= o["atol"] for o in result.outputs)
    assert "compress.classes" not in {p.key for p in onnx.load(str(path)).metadata_props}


def test_output_names_can_be_given_and_the_input_renamed(tmp_path):
    from compress.exporting.parity import onnx_session

    model = DictNet().eval()
    path = export_onnx(model, tmp_path / "n.onnx", input_size=[3, 32, 32], metadata=detection_metadata(),
                       input_name="images", output_names=["a", "b", "c", "d"], dynamic_batch=False, batch=2)
    session = onnx_session(path)
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert [o.name for o in session.get_outputs()] == ["a", "b", "c", "d"]
    assert check_parity(model, path, images(5)).passed  # a static batch of 2, padded


class Levels(torch.nn.Module):
    """A feature extractor as torchvision's IntermediateLayerGetter returns them: keys "0", "1", "pool"."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
        self.b = torch.nn.Conv2d(8, 8, 3, stride=2, padding=1)

    def forward(self, x):
        f0 = self.a(x)
        f1 = self.b(f0)
        return {"0": f0, "1": f1, "pool": {"0": f1.amax((2, 3))}}


def test_keys_of_digits_alone_name_their_outputs_with_a_prefix(tmp_path):
    from compress.exporting.parity import onnx_session

    model = lively_bn(Levels())
    path = export_onnx(model, tmp_path / "l.onnx", input_size=[3, 32, 32], metadata=detection_metadata())
    assert [o.name for o in onnx_session(path).get_outputs()] == ["output.0", "output.1", "pool.0"]
    result = check_parity(model, path, images(4))
    assert result.passed and [o["name"] for o in result.outputs] == ["output.0", "output.1", "pool.0"]


class Unbatched(torch.nn.Module):
    def __init__(self, out):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.out = out

    def forward(self, x):
        y = self.conv(x)
        return {"ok": y, "bad": self.conv.weight.sum(0)} if self.out == "unbatched" else (y, 3)


@pytest.mark.parametrize("out, match", [("unbatched", "output bad has shape .* batch as its first dimension"),
                                        ("number", "output1 is a int, not a tensor")])
def test_outputs_that_cannot_be_exported_are_refused(tmp_path, out, match):
    from compress.exporting.errors import ExportError

    with pytest.raises(ExportError, match=match):
        export_onnx(Unbatched(out), tmp_path / "u.onnx", input_size=[3, 32, 32], metadata=detection_metadata())
    assert not (tmp_path / "u.onnx").exists()


@pytest.mark.slow
def test_yolov8n_exports_its_detection_head_as_it_is(tmp_path):
    tasks = pytest.importorskip("ultralytics.nn.tasks", reason="ultralytics is optional (AGPL; the dev extra has it)")
    from compress.exporting.parity import onnx_session

    torch.manual_seed(0)
    model = lively_bn(tasks.DetectionModel("yolov8n.yaml", verbose=False))
    meta = metadata(input_size=[3, 160, 160], classes={str(i): f"c{i}" for i in range(80)})
    path = export_onnx(model, tmp_path / "yolo.onnx", input_size=[3, 160, 160], metadata=meta)
    proto = onnx.load(str(path))
    names = [o.name for o in proto.graph.output]
    assert names == ["output0", "output1.boxes", "output1.scores", "output1.feats.0", "output1.feats.1",
                     "output1.feats.2"]
    assert not {"NonMaxSuppression", "TopK"} & {n.op_type for n in proto.graph.node}  # no NMS added
    session = onnx_session(path)
    x = np.random.default_rng(0).standard_normal((3, 3, 160, 160)).astype(np.float32)
    assert [o.shape for o in session.run(None, {"input": x})][:3] == [(3, 84, 525), (3, 64, 525), (3, 80, 525)]
    result = check_parity(model, path, x)
    assert result.passed and len(result.outputs) == 6
    assert json.loads(next(p.value for p in proto.metadata_props if p.key == "compress.classes"))["79"] == "c79"
