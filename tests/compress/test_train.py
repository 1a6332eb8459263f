import json
import math

import pytest
import torch

from compress.training import Recipe, distillation_loss, fit
from compress.models import create_model
from tests_support import tiny_data


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


def test_a_second_fit_with_another_recipe_into_one_folder_trains_instead_of_resuming(tmp_path):
    """With no caller's tag, any saved state was resumed: a second fit() with another learning rate and
    penalty returned the first call's weights and history without training a step."""
    data = tiny_data()
    kwargs = dict(mean=[0.5] * 3, std=[0.25] * 3, seed=0, progress=False)
    first = fit(create_model("vgg11", num_classes=4, width=0.125), data, data, tmp_path / "run",
                Recipe.named("fast", epochs=1, batch_size=16), sparsity=0.0, **kwargs)
    other = Recipe.named("fast", epochs=1, batch_size=16, lr=0.01)
    second = fit(create_model("vgg11", num_classes=4, width=0.125), data, data, tmp_path / "run", other,
                 sparsity=1e-2, **kwargs)
    assert second["history"][0]["lr"] != first["history"][0]["lr"]
    assert second["history"][0]["sparsity_lambda"] != first["history"][0]["sparsity_lambda"]


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


# --- options, the non-finite guard, checkpoints, log output ------------------------------------------------

def test_fit_options_and_the_keyword_form_train_alike(tmp_path):
    from compress.training import FitOptions

    data = tiny_data()
    recipe = Recipe.named("fast", epochs=1, batch_size=16)
    results = []
    for i, call in enumerate((dict(options=FitOptions(sparsity=1e-4, progress=False, seed=1)),
                              dict(sparsity=1e-4, progress=False, seed=1))):
        torch.manual_seed(0)
        model = create_model("vgg11", num_classes=4, width=0.125)
        results.append(fit(model, data, data, tmp_path / str(i), recipe, mean=[0.5] * 3, std=[0.25] * 3, **call))
    assert results[0]["last"]["train_loss"] == results[1]["last"]["train_loss"]
    with pytest.raises(TypeError, match="sparsty"):
        fit(create_model("vgg11", num_classes=4, width=0.125), data, data, tmp_path / "x", recipe,
            mean=[0.5] * 3, std=[0.25] * 3, sparsty=1e-4)


class NanAt(torch.nn.Module):
    """A network whose output turns NaN at one training call (counted from 1)."""

    def __init__(self, inner, at):
        super().__init__()
        self.inner, self.at, self.calls = inner, at, 0

    def forward(self, x):
        out = self.inner(x)
        if self.training:
            self.calls += 1
            if self.calls == self.at:
                out = out * float("nan")
        return out


def test_a_nan_loss_stops_training_naming_epoch_and_step_and_keeps_the_last_good_state(tmp_path):
    from compress.training import NonFiniteLoss

    data = tiny_data()  # 64 images, batch 16: 4 steps per epoch
    recipe = Recipe.named("fast", epochs=3, batch_size=16)
    model = NanAt(create_model("vgg11", num_classes=4, width=0.125), at=6)
    with pytest.raises(NonFiniteLoss) as err:
        fit(model, data, data, tmp_path / "run", recipe, mean=[0.5] * 3, std=[0.25] * 3, progress=False)
    message = str(err.value)
    assert "\n" not in message
    assert "epoch 2, step 2/4" in message and "last good state (epoch 1)" in message
    state = json.loads((tmp_path / "run" / "train_state" / "state.json").read_text())
    assert state["epoch"] == 1 and [r["epoch"] for r in state["history"]] == [1]
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 1
    assert not (tmp_path / "run" / "model.json").exists()


def test_the_cli_stops_on_a_diverging_run_in_one_line_and_writes_no_model(tmp_path):
    from click.testing import CliRunner
    from tests_support import make_image_folder

    from compress.cli import main

    data = make_image_folder(tmp_path / "ds", per_class=16, size=32)
    result = CliRunner().invoke(main, ["train", "--arch", "vgg11", "--width", "0.0625", "--lr", "100", "--data",
                                       str(data), "--epochs", "3", "--batch-size", "8", "--recipe", "paper",
                                       "--out", str(tmp_path / "out")],
                                env={"COMPRESS_CACHE": str(tmp_path / "cache")})
    assert result.exit_code == 2
    errors = [ln for ln in result.output.splitlines() if ln.startswith("Error")]
    assert len(errors) == 1 and "NaN or infinite" in errors[0] and "lower --lr" in errors[0]
    assert not (tmp_path / "out" / "model.json").exists()


@pytest.mark.parametrize("field,value,option", [
    ("lr", 1e308, "--lr"), ("lr", 0.0, "--lr"), ("lr", float("nan"), "--lr"),
    ("weight_decay", 1e308, "--weight-decay"), ("weight_decay", -1e-4, "--weight-decay"),
    ("momentum", 1.0, "momentum must"), ("epochs", 0, "--epochs"), ("epochs", 2.5, "--epochs"),
    ("batch_size", 2 ** 40, "--batch-size"), ("label_smoothing", float("inf"), "label_smoothing must"),
])
def test_recipe_refuses_out_of_range_numbers_naming_the_option(field, value, option):
    # A field the CLI sets is named with its option; one only Python sets (momentum, label smoothing) by
    # its field name alone: there is no option to point at.
    from compress.errors import CompressError

    with pytest.raises(CompressError) as err:
        Recipe.named("paper", **{field: value})
    assert option in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("seed", [2 ** 63, 2 ** 70, -1, True, 1.5])
def test_a_seed_outside_what_a_generator_takes_is_refused_naming_it(seed):
    from compress.errors import CompressError
    from compress.training import FitOptions

    with pytest.raises(CompressError, match="seed"):
        FitOptions(seed=seed)


def test_a_seed_near_the_top_of_the_range_still_draws_epochs():
    from compress.data.memory import MAX_SEED, epoch_generator

    assert torch.randperm(5, generator=epoch_generator(MAX_SEED, 3)).sort().values.tolist() == [0, 1, 2, 3, 4]


def test_checkpoints_at_most_every_interval_and_always_after_the_last_epoch(tmp_path, monkeypatch):
    import compress.training as T

    saved = []
    real = T._save_state
    monkeypatch.setattr(T, "_save_state",
                        lambda d, m, o, epoch, *a, **k: (saved.append(epoch), real(d, m, o, epoch, *a, **k)))
    data = tiny_data()
    fit(create_model("vgg11", num_classes=4, width=0.125), data, data, tmp_path / "a",
        Recipe.named("fast", epochs=3, batch_size=16), mean=[0.5] * 3, std=[0.25] * 3, progress=False,
        checkpoint_every_s=3600)
    assert saved == [3]
    assert (tmp_path / "a" / "best.safetensors").exists()
    saved.clear()
    fit(create_model("vgg11", num_classes=4, width=0.125), data, data, tmp_path / "b",
        Recipe.named("fast", epochs=3, batch_size=16), mean=[0.5] * 3, std=[0.25] * 3, progress=False)
    assert saved == [1, 2, 3]  # on a CPU: after every epoch


def test_best_weights_always_belong_to_the_best_epoch_the_state_names_even_after_a_kill(tmp_path, monkeypatch):
    """best.safetensors was written before the checkpoint's state: a kill between the two left the weights of
    epoch 2, the resumed run never beat epoch 1, and it reported epoch 1's accuracy beside epoch 2's weights."""
    import compress.training as T
    from safetensors.torch import load_file

    accuracies = iter([0.25, 0.5, 0.125, 0.125])  # epochs 1, 2 (killed at its checkpoint), then 2 and 3 again
    real_evaluate = T.evaluate
    monkeypatch.setattr(T, "evaluate", lambda *a, **k: {**real_evaluate(*a, **k), "accuracy": next(accuracies)})

    class Killed(Exception):
        pass

    real_save = T._save_state

    def killed_at_epoch_2(d, m, o, epoch, *a, **k):
        if epoch == 2:
            raise Killed
        real_save(d, m, o, epoch, *a, **k)

    monkeypatch.setattr(T, "_save_state", killed_at_epoch_2)
    data, run = tiny_data(), tmp_path / "run"
    recipe = Recipe.named("fast", epochs=3, batch_size=16)
    kwargs = dict(mean=[0.5] * 3, std=[0.25] * 3, seed=0, progress=False)
    with pytest.raises(Killed):
        fit(create_model("vgg11", num_classes=4, width=0.125), data, data, run, recipe, **kwargs)
    epoch_1 = load_file(str(run / "train_state" / "model-1.safetensors"))

    def same(path):
        best = load_file(str(path))
        return best.keys() == epoch_1.keys() and all(torch.equal(best[k], epoch_1[k]) for k in epoch_1)

    assert same(run / "best.safetensors")
    (run / "best.safetensors").unlink()  # as if the kill had come after the state, before the copy
    monkeypatch.setattr(T, "_save_state", real_save)
    result = fit(create_model("vgg11", num_classes=4, width=0.125), data, data, run, recipe, **kwargs)
    assert result["best"]["epoch"] == 1 and result["best"]["test_accuracy"] == 0.25
    assert same(run / "best.safetensors")


def test_a_log_of_training_holds_one_line_per_epoch(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("COMPRESS_PROGRESS", raising=False)
    data = tiny_data()
    fit(create_model("vgg11", num_classes=4, width=0.125), data, data, tmp_path / "run",
        Recipe.named("fast", epochs=2, batch_size=8), mean=[0.5] * 3, std=[0.25] * 3, desc="sparse")
    captured = capsys.readouterr()
    assert "\r" not in captured.err and captured.out == ""
    lines = captured.err.splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["sparse epoch 1/2", "sparse epoch 2/2"]


@pytest.mark.slow
def test_compiled_training_reuses_the_graph_for_a_second_model_of_the_same_shapes(tmp_path):
    from torch._dynamo.utils import counters

    data = tiny_data(32)
    recipe = Recipe.named("fast", epochs=1, batch_size=16)
    torch._dynamo.reset()
    for name in ("a", "b"):
        fit(create_model("vgg11", num_classes=4, width=0.125), data, data, tmp_path / name, recipe,
            mean=[0.5] * 3, std=[0.25] * 3, progress=False, compile="aot_eager")
        if name == "a":
            graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 1 and counters["stats"]["unique_graphs"] == graphs


@pytest.mark.parametrize("args,message", [
    (["--batch-size", "1"], "batch size (--batch-size) 1: BatchNorm needs at least 2 images per training batch; "
                             "use --batch-size 2 or more"),
    (["--train-limit", "1"], "1 training image: BatchNorm needs at least 2 images per training batch; train on 2 "
                             "images or more (--train-limit)"),
])
def test_a_batch_of_one_image_is_refused_before_training_and_writes_nothing(tmp_path, args, message):
    """A batch of one image crashed mid-epoch with torch's "Expected more than 1 value per channel", exit 1."""
    from click.testing import CliRunner
    from tests_support import make_image_folder

    from compress.cli import main

    data = make_image_folder(tmp_path / "ds", per_class=8, size=16)
    result = CliRunner().invoke(main, ["train", "--arch", "vgg11", "--width", "0.0625", "--epochs", "1", "--recipe",
                                       "fast", "--device", "cpu", "--data", str(data), *args,
                                       "--out", str(tmp_path / "out")], env={"COMPRESS_CACHE": str(tmp_path / "c")})
    assert result.exit_code == 2, result.output
    assert result.output.splitlines()[-1] == f"Error: {message}"
    assert not (tmp_path / "out").exists()


def test_an_epoch_never_ends_in_a_batch_of_one_image(tmp_path):
    """17 images in batches of 16 ended each epoch in a batch of one, which BatchNorm cannot train on."""
    from compress.training import drops_last

    assert [drops_last(n, 16) for n in (16, 17, 18, 31, 32, 33)] == [False, True, False, False, True, True]
    assert not drops_last(1, 16)  # the only batch: a network without BatchNorm still trains on it
    data = tiny_data(n=17)
    model = create_model("vgg11", num_classes=4, width=0.0625)
    result = fit(model, data, data, tmp_path, Recipe.named("fast", epochs=1, batch_size=16), mean=[0.5] * 3,
                 std=[0.25] * 3, progress=False)
    assert result["last"]["epoch"] == 1
