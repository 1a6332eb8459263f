"""torch → ONNX: parity in ONNX Runtime for every model family (pruned and not), dynamic and
static batch, BatchNorm kept in the graph, and refusal of bad arguments."""

import collections

import numpy as np
import onnx
import pytest
import torch

from compress.exporting.onnx_export import export_onnx
from compress.exporting.parity import check_parity
from compress.models import create_model
from export_helpers import images, lively, metadata

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
