import json
import math

import pytest
import torch

from compress.data import ImageSet
from compress.train import Recipe, distillation_loss, fit
from compress.models import create_model


def tiny_data(n=64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    images = torch.randint(0, 50, (n, 3, 32, 32), generator=gen, dtype=torch.uint8)
    images[:, labels % 3] = images[:, labels % 3] + 150  # learnable: class shows in colour
    return ImageSet(images, labels, ["a", "b", "c", "d"])


def test_recipes():
    paper = Recipe.named("paper")
    assert (paper.lr, paper.batch_size, paper.epochs, paper.weight_decay, paper.nesterov) == (0.1, 64, 160, 1e-4, True)
    assert paper.lr_at(79.9) == pytest.approx(0.1)
    assert paper.lr_at(80) == pytest.approx(0.01)
    assert paper.lr_at(120) == pytest.approx(0.001)
    fast = Recipe.named("fast", epochs=10)
    assert fast.lr_at(10) == pytest.approx(0.0, abs=1e-9) and fast.lr_at(1.0) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        Recipe.named("slow")


def test_interrupted_training_resumes_where_it_stopped(tmp_path):
    data = tiny_data()
    recipe = Recipe.named("fast", epochs=3, batch_size=16)
    kwargs = dict(mean=[0.5] * 3, std=[0.25] * 3, sparsity=1e-4, seed=0, progress=False)

    class Stop(Exception):
        pass

    def stop_after_two(record):
        if record["epoch"] == 2:
            raise Stop

    model = create_model("vgg11", num_classes=4, width=0.125)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(Stop):
        fit(model, data, data, tmp_path / "run", recipe, on_epoch=stop_after_two, **kwargs)
    resumed = create_model("vgg11", num_classes=4, width=0.125)
    result = fit(resumed, data, data, tmp_path / "run", recipe, **kwargs)
    assert [r["epoch"] for r in result["history"]] == [1, 2, 3]
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["epoch"] for ln in lines] == [1, 2, 3]

    straight = create_model("vgg11", num_classes=4, width=0.125)
    straight.load_state_dict(initial)
    reference = fit(straight, data, data, tmp_path / "straight", recipe, **kwargs)
    # Same data order and same state at the restart: the resumed run ends where an uninterrupted one does.
    assert result["last"]["train_loss"] == pytest.approx(reference["last"]["train_loss"], rel=1e-4)


def test_sparse_training_drives_gamma_down():
    data = tiny_data()
    recipe = Recipe.named("fast", epochs=2, batch_size=16, lr=0.05)
    dense = create_model("vgg11", num_classes=4, width=0.125)
    sparse = create_model("vgg11", num_classes=4, width=0.125)
    sparse.load_state_dict(dense.state_dict())
    common = dict(mean=[0.5] * 3, std=[0.25] * 3, progress=False, resume=False)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        fit(dense, data, data, d + "/a", recipe, sparsity=0.0, **common)
        fit(sparse, data, data, d + "/b", recipe, sparsity=1e-2, **common)

    def gamma_l1(m):
        return sum(float(b.weight.detach().abs().sum()) for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d))

    assert gamma_l1(sparse) < gamma_l1(dense)


def test_distillation_loss_matches_definition():
    s = torch.tensor([[2.0, 0.5, -1.0]])
    t = torch.tensor([[1.0, 1.5, -0.5]])
    y = torch.tensor([1])
    T, alpha = 3.0, 0.7
    ps, pt = torch.softmax(s / T, 1), torch.softmax(t / T, 1)
    kl = float((pt * (pt.log() - ps.log())).sum())
    ce = -math.log(float(torch.softmax(s, 1)[0, 1]))
    expected = alpha * kl * T * T + (1 - alpha) * ce
    assert float(distillation_loss(s, t, y, T, alpha)) == pytest.approx(expected, rel=1e-5)
