"""Jetson boards: detection, L4T/JetPack release, power mode, clock locking, and tegrastats lines.

Everything here is best effort: a field that cannot be read is None, never an exception, because
a benchmark must still run (and say what it could not record) on an unusual carrier board.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

# JetPack major release per L4T major release (minor releases map many-to-one, so only the
# major is derived; the exact JetPack comes from the nvidia-jetpack package when installed).
L4T_TO_JETPACK_MAJOR = {32: "4", 34: "5", 35: "5", 36: "6", 38: "7", 39: "7"}
# Rails that measure the whole module/board input; preferred over summing partial rails.
TOTAL_RAILS = ("VDD_IN", "VIN", "POM_5V_IN")
GPU_DEVFREQ_HINTS = ("gpu", "gv11b", "ga10b", "gp10b", "gb10b", "gk20a", "gm20b")


def is_jetson(root: str | Path = "/") -> bool:
    root = Path(root)
    if (root / "etc/nv_tegra_release").is_file():
        return True
    model = _read(root / "proc/device-tree/model") or ""
    return "jetson" in model.lower() or "tegra" in model.lower()


def parse_l4t_release(text: str) -> str | None:
    """'36.3.0' from '# R36 (release), REVISION: 3.0, GCID: ...'."""
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    if not m:
        return None
    return f"{m.group(1)}.{m.group(2)}"


def jetpack_major(l4t: str | None) -> str | None:
    if not l4t:
        return None
    try:
        return L4T_TO_JETPACK_MAJOR.get(int(l4t.split(".")[0]))
    except ValueError:
        return None


def jetson_info(root: str | Path = "/", run_commands: bool = True) -> dict | None:
    """Model, L4T, JetPack, power mode and clock state of a Jetson; None elsewhere."""
    root = Path(root)
    if not is_jetson(root):
        return None
    release = _read(root / "etc/nv_tegra_release") or ""
    l4t = parse_l4t_release(release)
    info = {
        "model": (_read(root / "proc/device-tree/model") or "").strip() or None,
        "l4t": l4t,
        "jetpack_major": jetpack_major(l4t),
        "jetpack": None,
        "nvpmodel": None,
        "clocks": clock_state(root),
    }
    if run_commands:
        info["jetpack"] = _jetpack_package_version()
        info["nvpmodel"] = nvpmodel_mode()
    return info


def parse_nvpmodel(text: str) -> dict | None:
    """{'name': 'MAXN', 'id': 0} from `nvpmodel -q` output ('NV Power Mode: MAXN' then the id)."""
    m = re.search(r"NV Power Mode:\s*(\S.*?)\s*$", text, re.MULTILINE)
    if not m:
        return None
    after = text[m.end():]
    mode_id = re.search(r"^\s*(\d+)\s*$", after, re.MULTILINE)
    return {"name": m.group(1), "id": int(mode_id.group(1)) if mode_id else None}


def nvpmodel_mode() -> dict | None:
    exe = shutil.which("nvpmodel")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "-q"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_nvpmodel(out.stdout + "\n" + out.stderr)


def clock_state(root: str | Path = "/") -> dict:
    """Whether CPU and GPU clocks are pinned (min == max, as `jetson_clocks` leaves them), from sysfs.

    `jetson_clocks --show` needs root; the sysfs limits tell the same story readably.
    """
    root = Path(root)
    cpu_locked = None
    cpus = sorted((root / "sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq"))
    states = []
    for c in cpus:
        lo, hi = _read_int(c / "scaling_min_freq"), _read_int(c / "scaling_max_freq")
        if lo is not None and hi is not None:
            states.append(lo == hi)
    if states:
        cpu_locked = all(states)
    gpu_locked = None
    gpu_cur = gpu_max = None
    for dev in sorted((root / "sys/class/devfreq").glob("*")):
        if not any(h in dev.name.lower() for h in GPU_DEVFREQ_HINTS):
            continue
        lo, hi = _read_int(dev / "min_freq"), _read_int(dev / "max_freq")
        if lo is not None and hi is not None:
            gpu_locked = lo == hi
            gpu_cur, gpu_max = _read_int(dev / "cur_freq"), hi
            break
    return {"cpu_locked": cpu_locked, "gpu_locked": gpu_locked, "gpu_cur_hz": gpu_cur, "gpu_max_hz": gpu_max,
            "method": "sysfs min_freq == max_freq"}


# --- tegrastats ---------------------------------------------------------------------------------

# "NAME 1234mW/1200mW[/1300mW]", "NAME 1234mW" or the older unit-less "NAME 1234/1200".
_RAIL = re.compile(r"(?<![\w@])([A-Z][A-Z0-9_]*)\s+(\d+)(mW)?(?:/(\d+)(?:mW)?)?(?:/(\d+)(?:mW)?)?(?=\s|$)")
_RAM = re.compile(r"\bRAM\s+(\d+)/(\d+)MB")
_GR3D = re.compile(r"\bGR3D_FREQ\s+(\d+)%")
_NOT_RAILS = {"RAM", "SWAP", "IRAM", "APE", "MTS", "EMC_FREQ", "GR3D_FREQ"}


def parse_tegrastats_line(line: str) -> dict:
    """One tegrastats line → {'ram_used_mb', 'ram_total_mb', 'gpu_util_pct', 'rails_mw': {name: mW}}.

    Formats differ by module and JetPack: JetPack 5/6 Orin print `VDD_GPU_SOC 5139mW/5139mW`
    (current/average), newer releases add a third (maximum) value, Thor prints `VDD_GPU`,
    `VDD_CPU_SOC_MSS`, `VIN_SYS_5V0` and the total `VIN`, JetPack 4 boards print unit-less
    `VDD_IN 5336/4970` or `POM_5V_IN 5336/4970`. Only the current (first) value is kept.
    """
    out: dict = {"ram_used_mb": None, "ram_total_mb": None, "gpu_util_pct": None, "rails_mw": {}}
    m = _RAM.search(line)
    if m:
        out["ram_used_mb"], out["ram_total_mb"] = int(m.group(1)), int(m.group(2))
    m = _GR3D.search(line)
    if m:
        out["gpu_util_pct"] = int(m.group(1))
    for name, cur, unit, avg, _mx in _RAIL.findall(line):
        # A lone number is a rail only with its unit ("APE 174" is a clock); pairs are rails either way.
        if name in _NOT_RAILS or (not unit and not avg):
            continue
        out["rails_mw"][name] = int(cur)
    return out


def board_power_mw(rails_mw: dict[str, int]) -> tuple[float | None, str]:
    """Board/module power from one sample's rails, and which rails it came from.

    A total-input rail (VDD_IN, VIN, POM_5V_IN) is used when present; otherwise (AGX Orin: VDD_GPU_SOC +
    VDD_CPU_CV + VIN_SYS_5V0) the rails are summed.
    """
    for name in TOTAL_RAILS:
        if name in rails_mw:
            return float(rails_mw[name]), name
    if not rails_mw:
        return None, "none"
    names = sorted(rails_mw)
    return float(sum(rails_mw[n] for n in names)), "+".join(names)


def _read(path: Path) -> str | None:
    try:
        return path.read_bytes().replace(b"\0", b"").decode("utf-8", "replace")
    except OSError:
        return None


def _read_int(path: Path) -> int | None:
    text = _read(path)
    try:
        return int(text.strip()) if text else None
    except ValueError:
        return None


def _jetpack_package_version() -> str | None:
    exe = shutil.which("dpkg-query")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "-W", "-f=${Version}", "nvidia-jetpack"], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
