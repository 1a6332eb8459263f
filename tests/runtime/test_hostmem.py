"""runtime.hostmem: a reported peak is never below an RSS the same report shows."""

from compress.runtime import hostmem


def test_a_lazily_updated_high_water_mark_is_raised_to_the_rss_seen(monkeypatch):
    """On this VM's kernel getrusage's peak read 899,125,248 bytes right after an RSS of 899,362,816:
    the report said the process peaked below where it started."""
    readings = iter([1000, 1200, 1100])
    monkeypatch.setattr(hostmem, "rss_bytes", lambda: next(readings))
    monkeypatch.setattr(hostmem, "peak_rss_bytes", lambda: 900)
    memory = hostmem.HostMemory()
    for name in ("before_load", "after_load", "after_run"):
        memory.mark(name)
    summary = memory.summary()
    assert summary["peak_rss_bytes"] == 1200 >= summary["rss_before_load_bytes"]
    assert summary["peak_rss_growth_bytes"] == 200


def test_either_reading_alone_is_used_where_the_other_is_unknown(monkeypatch):
    monkeypatch.setattr(hostmem, "rss_bytes", lambda: None)
    monkeypatch.setattr(hostmem, "peak_rss_bytes", lambda: 900)
    memory = hostmem.HostMemory()
    memory.mark("after_run")
    assert memory.summary()["peak_rss_bytes"] == 900
    monkeypatch.setattr(hostmem, "rss_bytes", lambda: 700)
    monkeypatch.setattr(hostmem, "peak_rss_bytes", lambda: None)
    memory = hostmem.HostMemory()
    memory.mark("after_run")
    assert memory.summary()["peak_rss_bytes"] == 700
