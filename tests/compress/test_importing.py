"""compress.importing: state dicts read from checkpoint files without unpickling anything."""

import pytest
import torch
import torchvision

from compress.errors import CompressError
from compress.importing import read_state_dict


def test_wrapped_and_data_parallel_checkpoints_are_unwrapped(tmp_path):
    net = torchvision.models.resnet18(num_classes=2)
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    torch.save({"epoch": 3, "state_dict": state}, tmp_path / "ckpt.pt")
    unwrapped = read_state_dict(tmp_path / "ckpt.pt")
    assert set(unwrapped) == set(net.state_dict())


def test_pickled_code_is_refused(tmp_path):
    torch.save({"model": torchvision.models.resnet18(num_classes=2)}, tmp_path / "whole.pt")
    with pytest.raises(CompressError, match="weights-only"):
        read_state_dict(tmp_path / "whole.pt")
