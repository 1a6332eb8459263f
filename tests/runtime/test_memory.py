"""runtime.memory: the memory reading behind every bound, the training side's (compress.limits) included."""

from compress.runtime import memory


def test_a_cgroup_limit_bounds_the_memory_available(tmp_path, monkeypatch):
    """Inside a container MemAvailable is the host's: 1 GiB allowed, 256 MiB of it used, leaves 768 MiB."""
    (tmp_path / "memory.max").write_text(f"{1 << 30}\n")
    (tmp_path / "memory.current").write_text(f"{256 << 20}\n")
    monkeypatch.setattr(memory, "CGROUP_MEMORY", ((str(tmp_path / "memory.max"), str(tmp_path / "memory.current")),))
    assert memory.cgroup_room() == 768 << 20
    assert memory.available_memory() <= 768 << 20
    (tmp_path / "memory.max").write_text("max\n")
    assert memory.available_memory() > 0 and memory.cgroup_room() is None


def test_the_training_side_bounds_with_the_same_reading():
    from compress import limits

    assert limits.available_memory is memory.available_memory
