"""A device is checked before any work (compress/devices.py)."""

import pytest
import torch

from compress.devices import check_device
from compress.errors import CompressError


def test_a_name_torch_cannot_parse_is_refused_in_one_line():
    """torch's "Expected one of cpu, cuda, ... device type" came only after the data was loaded."""
    for bad in ("bogus", "", "cuda:x"):
        with pytest.raises(CompressError, match="is not a device name; use cpu, cuda or cuda:N"):
            check_device(bad)
    assert check_device(" cpu ") == torch.device("cpu")


def test_a_cuda_device_needs_a_gpu_and_an_index_this_machine_has(monkeypatch):
    """cuda:1 without a GPU failed mid-run with "Found no NVIDIA driver"; an index past the last GPU failed late."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(CompressError, match=r"'cuda:1' names a CUDA GPU, but torch finds none"):
        check_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(CompressError, match=r"'cuda:2' is not on this machine, which has 2 CUDA device\(s\)"):
        check_device("cuda:2")


def test_a_device_kind_this_machine_lacks_is_refused():
    """meta parses as a device and then failed deep inside training."""
    with pytest.raises(CompressError, match="'meta' is not available on this machine"):
        check_device("meta")
