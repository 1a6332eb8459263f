"""compress.train_state: what a resumed run gets back, and what it refuses."""

import pytest
import torch
from torch import nn

from compress.errors import CompressError
from compress.train_state import load_state, save_state


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1)).to(
        memory_format=torch.channels_last)


def _stepped(net):
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.randn(2, 3, 8, 8).to(memory_format=torch.channels_last)).sum().backward()
    opt.step()
    return opt


def test_momentum_comes_back_in_each_parameters_own_layout(tmp_path):
    # CUDA's fused SGD refuses a momentum buffer whose strides differ from its parameter's; safetensors
    # gives every tensor back contiguous, so channels_last weights would fail their first step on a GPU.
    net = _net()
    opt = _stepped(net)
    save_state(tmp_path, net, opt, 1, None, [])
    fresh = _net()
    fresh_opt = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    assert load_state(tmp_path, fresh, fresh_opt, "cpu")[0] == 1
    conv = fresh[0].weight
    assert not conv.is_contiguous() and conv.is_contiguous(memory_format=torch.channels_last)
    for p_old, p_new in zip(net.parameters(), fresh.parameters()):
        buf = fresh_opt.state[p_new]["momentum_buffer"]
        assert buf.stride() == p_new.stride()
        assert torch.equal(buf, opt.state[p_old]["momentum_buffer"])


def test_a_momentum_of_the_wrong_shape_or_name_is_refused_and_nothing_is_loaded(tmp_path):
    from safetensors.torch import load_file, save_file

    net = _net()
    opt = _stepped(net)
    with torch.no_grad():  # saved weights that differ from a fresh network's, so that loading them would show
        for p in net.parameters():
            p.add_(1.0)
    save_state(tmp_path, net, opt, 1, None, [])
    path = tmp_path / "optimizer-1.safetensors"
    good = load_file(str(path))
    for bad, message in (({**good, "momentum.0": torch.zeros(8, 3, 3, 1)}, "momentum of parameter 0 is"),
                         ({**good, "momentum.99": torch.zeros(1)}, "unknown optimizer tensor 'momentum.99'"),
                         ({**good, "other": torch.zeros(1)}, "unknown optimizer tensor 'other'")):
        save_file(bad, str(path))
        fresh = _net()
        before = {k: v.clone() for k, v in fresh.state_dict().items()}
        fresh_opt = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
        with pytest.raises(CompressError, match=message):
            load_state(tmp_path, fresh, fresh_opt, "cpu")
        assert not fresh_opt.state
        assert all(torch.equal(v, before[k]) for k, v in fresh.state_dict().items())


def test_weights_of_the_wrong_shape_are_refused_and_the_model_is_left_as_it_was(tmp_path):
    from safetensors.torch import load_file, save_file

    net = _net()
    save_state(tmp_path, net, _stepped(net), 1, None, [])
    path = tmp_path / "model-1.safetensors"
    weights = load_file(str(path))
    weights["0.weight"] = weights["0.weight"] + 1.0  # would be copied first by load_state_dict
    weights["2.weight"] = torch.zeros(4, 8, 3, 3)
    save_file(weights, str(path))
    fresh = _net()
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(CompressError, match=r"2.weight is \(4, 8, 3, 3\), the model's \(4, 8, 1, 1\)"):
        load_state(tmp_path, fresh, torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9), "cpu")
    assert all(torch.equal(v, before[k]) for k, v in fresh.state_dict().items())


def test_a_truncated_or_missing_state_file_is_refused_in_one_line_naming_it(tmp_path):
    """A weights file cut to 1000 bytes raised safetensors' own SafetensorError (exit 1, no file named); a
    missing optimizer-1.safetensors was named optimizer.safetensors, a file that never exists."""
    net = _net()
    save_state(tmp_path, net, _stepped(net), 1, None, [])
    weights = tmp_path / "model-1.safetensors"
    weights.write_bytes(weights.read_bytes()[:40])
    fresh = _net()
    with pytest.raises(CompressError, match=r"cannot resume from .*a state file is damaged.*--no-resume"):
        load_state(tmp_path, fresh, torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9), "cpu")
    save_state(tmp_path, net, _stepped(net), 1, None, [])
    (tmp_path / "optimizer-1.safetensors").unlink()
    with pytest.raises(CompressError, match=r"optimizer-1\.safetensors"):
        load_state(tmp_path, fresh, torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9), "cpu")
