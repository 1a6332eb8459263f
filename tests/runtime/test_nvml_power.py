"""Which GPU NVML reads, and how a window's power is taken from it, against a fake NVML (no GPU here)."""

import types

import pytest

from compress.runtime import nvml as nvml_module
from compress.runtime.power import NvmlSampler


def fake_nvml(names, uuids=None):
    """NVML with GPUs `names` in PCI bus order; handles are ('gpu', index)."""
    uuids = uuids or [f"GPU-{i:04d}" for i in range(len(names))]
    return types.SimpleNamespace(
        nvmlDeviceGetCount=lambda: len(names),
        nvmlDeviceGetHandleByIndex=lambda i: ("gpu", i),
        nvmlDeviceGetHandleByUUID=lambda u: ("gpu", uuids.index(u)),
        nvmlDeviceGetName=lambda h: names[h[1]].encode())


@pytest.fixture
def env(monkeypatch):
    for name in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_cuda_numbers_are_mapped_to_nvml_through_cuda_visible_devices(env):
    nvml = fake_nvml(["H100", "H100", "H100", "H100"])
    assert nvml_module.cuda_device_handle(nvml, 1) == ("gpu", 1)
    env.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    # CUDA's device 0 is the machine's GPU 2: reading NVML's GPU 0 would be another card.
    assert nvml_module.cuda_device_handle(nvml, 0) == ("gpu", 2)
    env.setenv("CUDA_VISIBLE_DEVICES", "GPU-0003")
    assert nvml_module.cuda_device_handle(nvml, 0) == ("gpu", 3)
    with pytest.raises(ValueError, match="shows no CUDA device 1"):
        nvml_module.cuda_device_handle(nvml, 1)


def test_gpus_of_several_models_need_the_bus_order(env):
    """Fastest first may put the second card first: without PCI_BUS_ID order the mapping is unknown."""
    nvml = fake_nvml(["T4", "A100"])
    with pytest.raises(ValueError, match="CUDA_DEVICE_ORDER=PCI_BUS_ID"):
        nvml_module.cuda_device_handle(nvml, 0)
    env.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    assert nvml_module.cuda_device_handle(nvml, 1) == ("gpu", 1)


def test_power_available_reads_the_mapped_gpu(env):
    polled = []
    nvml = fake_nvml(["L4", "L4", "L4"])
    nvml.nvmlInit = lambda: None
    nvml.nvmlDeviceGetPowerUsage = lambda h: polled.append(h) or 70_000
    env.setattr(nvml_module, "_init", lambda: nvml)
    env.setenv("CUDA_VISIBLE_DEVICES", "2")
    assert nvml_module.power_available(0) and polled == [("gpu", 2)]


def sampler_with(samples):
    """An NvmlSampler holding (t, mW, energy mJ or None) polls, without a thread."""
    s = NvmlSampler()
    for t, mw, mj in samples:
        s._add(t, mw, {"energy_mj": mj} if mj is not None else None)
    return s


def test_a_window_takes_the_energy_counter_where_there_is_one():
    """The counter moves by 100 mJ per 0.1 s (1 W) inside the window; the readings (a trailing mean of power
    drawn before the loop) say 50 W and are not used."""
    polls = [(1.0 + 0.1 * i, 50_000.0, 1000.0 + 100.0 * i) for i in range(21)]
    w = sampler_with(polls).window(1.0, 3.0)
    assert w["avg_power_w"] == pytest.approx(1.0) and "TotalEnergy" in w["rails"]


def test_without_a_counter_readings_from_the_first_second_are_left_out():
    """Readings in the loop's first second still average power drawn before it (Ampere and newer)."""
    polls = [(1.0 + 0.1 * i, 90_000.0 if i < 10 else 30_000.0, None) for i in range(26)]
    assert sampler_with(polls).window(1.0, 3.5)["avg_power_w"] == pytest.approx(30.0)
    short = sampler_with(polls).window(1.0, 1.8)
    assert short["samples"] == 0 and short["avg_power_w"] is None and "averages the last 1 s" in short["why"]
