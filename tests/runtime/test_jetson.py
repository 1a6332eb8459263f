"""Jetson detection, release parsing and tegrastats lines from several modules and JetPack releases.

The sample lines follow the formats tegrastats prints (NVIDIA Jetson Linux developer guide,
"tegrastats utility"): JetPack 5 on AGX Orin (current/average rails, per-GPC GR3D array), JetPack 6
on Orin Nano (VDD_IN total), JetPack 7 on AGX Orin (current/average/maximum), JetPack 7 on Thor
(VDD_GPU, VDD_CPU_SOC_MSS, total VIN, no GR3D) and JetPack 4 on Nano (unit-less POM_5V_IN).
"""

import os
import stat
import sys
import time

import pytest

from compress.runtime.jetson import (board_power_mw, clock_state, is_jetson, jetpack_major, jetson_info, parse_l4t_release,
                            parse_nvpmodel, parse_tegrastats_line)
from compress.runtime.power import TegrastatsSampler, energy_per_image_mj

JP5_AGX_ORIN = (
    "11-24-2026 10:15:02 RAM 8215/30536MB (lfb 5063x4MB) SWAP 0/15268MB (cached 0MB) "
    "CPU [12%@2201,5%@2201,3%@2201,8%@2201,0%@729,0%@729,0%@729,0%@729,off,off,off,off] "
    "EMC_FREQ 4%@3199 GR3D_FREQ 47%@[1300,1300] VIC_FREQ 729 APE 174 CV0@-256C CPU@48.343C Tboard@36C "
    "SOC2@44.406C Tdiode@38.25C SOC0@44.375C CV1@-256C GPU@43.343C tj@48.343C SOC1@43.281C CV2@-256C "
    "VDD_GPU_SOC 6388mW/6012mW VDD_CPU_CV 1596mW/1412mW VIN_SYS_5V0 4536mW/4498mW")
JP6_ORIN_NANO = (
    "11-24-2026 10:16:40 RAM 3342/7620MB (lfb 8x4MB) SWAP 0/3810MB (cached 0MB) "
    "CPU [9%@1510,4%@1510,2%@1510,6%@1510,3%@1510,1%@1510] EMC_FREQ 0%@2133 GR3D_FREQ 61%@[1020] "
    "NVENC off NVDEC off NVJPG off NVJPG1 off VIC off OFA off APE 200 cpu@47.781C soc2@46.218C soc0@46.5C "
    "gpu@47.187C tj@47.781C soc1@46.531C VDD_IN 7642mW/7425mW VDD_CPU_GPU_CV 2361mW/2208mW VDD_SOC 2167mW/2131mW")
JP7_AGX_ORIN = (
    "11-24-2026 10:18:11 RAM 20480/62841MB (lfb 2x4MB) CPU [20%@2201,11%@2201,6%@2201,15%@2201,28%@2201,"
    "17%@2201,9%@2201,12%@2201,31%@2201,8%@2201,4%@2201,25%@2201] EMC_FREQ 3%@3199 GR3D_FREQ 12%@[1300,1300] "
    "NVENC0 off NVDEC0 off VIC off OFA off NVDLA0 off NVDLA1 off PVA0_FREQ off APE 174 cpu@52.1C soc2@48.0C "
    "gpu@47.5C VDD_GPU_SOC 5120mW/5090mW/5310mW VDD_CPU_CV 3270mW/3201mW/3400mW VIN_SYS_5V0 5480mW/5460mW/5500mW")
JP7_THOR = (
    "11-24-2026 10:19:30 RAM 86120/125772MB (lfb 360x4MB) CPU [12%@972,10%@972,off,33%@1890] cpu@40.1C "
    "tj@40.2C soc012@38.9C gpu@40.0C soc345@38.7C VDD_GPU 3600mW/3580mW VDD_CPU_SOC_MSS 7890mW/7900mW "
    "VIN_SYS_5V0 7610mW/7600mW VIN 26700mW/26650mW")
JP4_NANO = (
    "RAM 1563/3964MB (lfb 57x4MB) SWAP 0/1982MB (cached 0MB) IRAM 0/252kB(lfb 252kB) CPU [12%@1479,8%@1479,off,off] "
    "EMC_FREQ 3%@1600 GR3D_FREQ 0%@76 APE 25 PLL@29.5C CPU@32C PMIC@100C GPU@30.5C AO@38C thermal@31.25C "
    "POM_5V_IN 2105/2105 POM_5V_GPU 0/0 POM_5V_CPU 402/402")


@pytest.mark.parametrize("line,rails,ram,gpu", [
    (JP5_AGX_ORIN, {"VDD_GPU_SOC": 6388, "VDD_CPU_CV": 1596, "VIN_SYS_5V0": 4536}, (8215, 30536), 47),
    (JP6_ORIN_NANO, {"VDD_IN": 7642, "VDD_CPU_GPU_CV": 2361, "VDD_SOC": 2167}, (3342, 7620), 61),
    (JP7_AGX_ORIN, {"VDD_GPU_SOC": 5120, "VDD_CPU_CV": 3270, "VIN_SYS_5V0": 5480}, (20480, 62841), 12),
    (JP7_THOR, {"VDD_GPU": 3600, "VDD_CPU_SOC_MSS": 7890, "VIN_SYS_5V0": 7610, "VIN": 26700}, (86120, 125772), None),
    (JP4_NANO, {"POM_5V_IN": 2105, "POM_5V_GPU": 0, "POM_5V_CPU": 402}, (1563, 3964), 0),
], ids=["jp5-agx-orin", "jp6-orin-nano", "jp7-agx-orin", "jp7-thor", "jp4-nano"])
def test_tegrastats_lines(line, rails, ram, gpu):
    parsed = parse_tegrastats_line(line)
    assert parsed["rails_mw"] == rails  # clocks like "APE 174" or "VIC_FREQ 729" are not rails
    assert (parsed["ram_used_mb"], parsed["ram_total_mb"]) == ram
    assert parsed["gpu_util_pct"] == gpu


@pytest.mark.parametrize("line,mw,source", [
    (JP6_ORIN_NANO, 7642, "VDD_IN"),
    (JP7_THOR, 26700, "VIN"),
    (JP4_NANO, 2105, "POM_5V_IN"),
    (JP5_AGX_ORIN, 6388 + 1596 + 4536, "VDD_CPU_CV+VDD_GPU_SOC+VIN_SYS_5V0"),
])
def test_board_power_prefers_the_total_input_rail(line, mw, source):
    assert board_power_mw(parse_tegrastats_line(line)["rails_mw"]) == (mw, source)


def test_line_without_rails():
    parsed = parse_tegrastats_line("RAM 100/200MB CPU [1%@100]")
    assert parsed["rails_mw"] == {} and board_power_mw(parsed["rails_mw"]) == (None, "none")


def test_sampler_windows_and_energy():
    sampler = TegrastatsSampler(exe="unused")
    for i, line in enumerate([JP6_ORIN_NANO, JP6_ORIN_NANO.replace("VDD_IN 7642", "VDD_IN 8642"), JP4_NANO]):
        sampler.feed(line, t=float(i))
    w = sampler.window(0.0, 1.0)
    assert w["samples"] == 2 and w["avg_power_w"] == pytest.approx(8.142)
    assert w["gpu_util_avg_pct"] == 61 and w["rails_avg_w"]["VDD_SOC"] == pytest.approx(2.167)
    # 8.142 W for 2 s over 1000 images = 16.284 mJ per image
    assert energy_per_image_mj(w["avg_power_w"], 2.0, 1000) == pytest.approx(16.284)
    assert energy_per_image_mj(None, 2.0, 1000) is None


@pytest.mark.skipif(sys.platform == "win32", reason="uses a shell script as a stand-in tegrastats")
def test_sampler_runs_tegrastats_in_the_background(tmp_path):
    """A stand-in executable prints lines the way tegrastats --interval does; the thread collects them."""
    script = tmp_path / "tegrastats"
    script.write_text("#!/bin/sh\n[ \"$1\" = --interval ] || exit 2\n"
                      f"while true; do echo '{JP6_ORIN_NANO}'; sleep 0.02; done\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    sampler = TegrastatsSampler(interval_ms=20, exe=str(script))
    t0 = time.perf_counter()
    with sampler:
        deadline = time.time() + 5
        while len(sampler.samples) < 3 and time.time() < deadline:
            time.sleep(0.02)
    assert sampler.error is None
    assert sampler._proc is None  # stopped and reaped
    w = sampler.window(t0, time.perf_counter())
    assert w["samples"] >= 3 and w["avg_power_w"] == pytest.approx(7.642)
    assert sampler.rails == "VDD_IN"


def test_sampler_reports_a_missing_tegrastats():
    sampler = TegrastatsSampler(exe=None)
    sampler.exe = None
    sampler.start()
    assert "not found" in sampler.error


def test_release_parsing():
    text = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025"
    assert parse_l4t_release(text) == "36.4.3"
    assert jetpack_major("36.4.3") == "6" and jetpack_major("35.5.0") == "5" and jetpack_major("38.2.0") == "7"
    assert parse_l4t_release("garbage") is None and jetpack_major(None) is None


def test_nvpmodel_output():
    assert parse_nvpmodel("NV Power Mode: MAXN\n0\n") == {"name": "MAXN", "id": 0}
    assert parse_nvpmodel("NVPM WARN: ...\nNV Power Mode: 15W\n2") == {"name": "15W", "id": 2}
    assert parse_nvpmodel("nvpmodel: command not permitted") is None


def _fake_board(root, locked: bool):
    (root / "etc").mkdir()
    (root / "etc/nv_tegra_release").write_text(
        "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug 1 2023\n")
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\0")
    for c in range(2):
        d = root / f"sys/devices/system/cpu/cpu{c}/cpufreq"
        d.mkdir(parents=True)
        (d / "scaling_min_freq").write_text("2201600\n" if locked else "115200\n")
        (d / "scaling_max_freq").write_text("2201600\n")
    g = root / "sys/class/devfreq/17000000.ga10b"
    g.mkdir(parents=True)
    (g / "min_freq").write_text("1300500000" if locked else "306000000")
    (g / "max_freq").write_text("1300500000")
    (g / "cur_freq").write_text("1300500000")


@pytest.mark.parametrize("locked", [True, False])
def test_detection_on_a_fake_board(tmp_path, locked):
    _fake_board(tmp_path, locked)
    assert is_jetson(tmp_path)
    info = jetson_info(tmp_path, run_commands=False)
    assert info["model"] == "NVIDIA Jetson AGX Orin Developer Kit"
    assert info["l4t"] == "35.4.1" and info["jetpack_major"] == "5"
    assert info["clocks"]["cpu_locked"] is locked and info["clocks"]["gpu_locked"] is locked
    assert info["clocks"]["gpu_max_hz"] == 1300500000


def test_not_a_jetson(tmp_path):
    assert not is_jetson(tmp_path)
    assert jetson_info(tmp_path) is None
    assert clock_state(tmp_path)["cpu_locked"] is None


@pytest.mark.skipif(not os.path.exists("/etc/nv_tegra_release"), reason="not a Jetson: no /etc/nv_tegra_release")
def test_this_jetson():
    info = jetson_info()
    assert info is not None and info["l4t"]
