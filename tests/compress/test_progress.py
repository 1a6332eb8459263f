"""compress.progress: a live bar on a terminal, whole lines (no carriage-return frames) in a log file."""

import io

import pytest

from compress import progress
from compress.progress import Progress, say


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture(autouse=True)
def no_override(monkeypatch):
    monkeypatch.delenv(progress.PROGRESS_ENV, raising=False)


def test_a_log_gets_no_frames_only_the_callers_line():
    log = io.StringIO()
    with Progress(500, "train 1/3", unit="batch", stream=log) as bar:
        for _ in bar.wrap(range(500)):
            if bar.due():
                bar.show(loss="1.0")
    say("train epoch 1/3: loss 1.0", stream=log)
    assert log.getvalue() == "train epoch 1/3: loss 1.0\n"


def test_a_log_gets_a_heartbeat_line_when_one_unit_of_work_runs_long(monkeypatch):
    clock = iter([0.0, 50.0, 130.0, 130.0, 200.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    log = io.StringIO()
    bar = Progress(10, "decode", unit="img", stream=log, every_s=120)
    bar.update(4)
    assert not bar.due()  # 50 s in
    bar.update(3)
    assert bar.due()  # 130 s in
    bar.show(rate="3/s")
    assert not bar.due()  # 70 s after that line
    assert log.getvalue() == "decode: 7/10 img (70%) after 2m10s, rate 3/s\n"
    assert "\r" not in log.getvalue()


def test_a_terminal_gets_a_bar_and_lines_above_it():
    term = Terminal()
    with Progress(3, "train 1/1", unit="batch", stream=term) as bar:
        bar.update(3)
        say("a line while the bar is drawn", stream=term)
    text = term.getvalue()
    assert "\r" in text and "train 1/1" in text
    assert "a line while the bar is drawn\n" in text


@pytest.mark.parametrize("forced,expected", [("lines", "lines"), ("bar", "bar"), ("off", "off"), ("", "bar")])
def test_the_environment_overrides_the_choice(monkeypatch, forced, expected):
    monkeypatch.setenv(progress.PROGRESS_ENV, forced)
    assert progress.mode(Terminal()) == expected


def test_off_prints_nothing(monkeypatch):
    monkeypatch.setenv(progress.PROGRESS_ENV, "off")
    log = io.StringIO()
    with Progress(2, "x", stream=log) as bar:
        bar.update(2)
        assert not bar.due()
    say("nothing", stream=log)
    assert log.getvalue() == ""


def test_a_stream_without_isatty_counts_as_a_log():
    class Bare:
        def write(self, _):
            pass

    assert progress.mode(Bare()) == "lines"
