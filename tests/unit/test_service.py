"""Service-window arithmetic: daily windows, midnight, validation, the test clock."""

from __future__ import annotations

import time

import pytest

from dispy.node import service
from dispy.node.service import CLOSED, OPEN, STOPPED, ServiceWindow


def hm(text: str) -> int:
    return service.parse_hhmm(text)


def window(start=None, stop=None, end=None) -> ServiceWindow:
    w = ServiceWindow.from_options(start, stop, end)
    assert w is not None
    return w


def test_parse_and_format():
    assert hm("00:00") == 0
    assert hm("7:05") == 7 * 3600 + 5 * 60
    assert hm(" 23:59 ") == 23 * 3600 + 59 * 60
    assert service.format_hhmm(hm("7:05")) == "07:05"
    assert service.format_hhmm(24 * 3600 + 60) == "00:01"
    for bad in ("24:00", "12:60", "1200", "12:5", "noon", "", "-1:00"):
        with pytest.raises(ValueError, match="HH:MM"):
            service.parse_hhmm(bad, "--service_start")


def test_no_options_no_window():
    assert ServiceWindow.from_options(None, None, None) is None
    assert ServiceWindow.from_options("", "", "") is None


@pytest.mark.parametrize("args,message", [
    (("17:00", None, None), "needs --service_stop or --service_end"),
    ((None, "07:00", None), "need --service_start"),
    ((None, None, "08:00"), "need --service_start"),
    (("17:00", "17:00", None), "same as --service_start"),
    (("17:00", None, "17:00"), "same as --service_start"),
    (("17:00", "09:00", "08:00"), "comes after --service_end"),
    (("08:00", "07:00", "09:00"), "comes after --service_end"),  # stop wraps to next day
    (("25:00", "07:00", None), "--service_start '25:00'"),
    (("17:00", "7", None), "--service_stop '7'"),
])
def test_validation_errors_are_clear(args, message):
    with pytest.raises(ValueError, match=message):
        ServiceWindow.from_options(*args)


def test_same_day_window():
    w = window("09:00", "17:00", "18:00")
    assert w.state(hm("08:59")) == CLOSED
    assert w.state(hm("09:00")) == OPEN
    assert w.state(hm("16:59")) == OPEN
    assert w.state(hm("17:00")) == STOPPED
    assert w.state(hm("17:59") + 59) == STOPPED
    assert w.state(hm("18:00")) == CLOSED
    assert w.state(hm("23:59")) == CLOSED
    assert w.state(0) == CLOSED


def test_window_across_midnight():
    w = window("17:00", "07:00", "08:00")  # the spec's example
    assert w.state(hm("16:59")) == CLOSED
    assert w.state(hm("17:00")) == OPEN
    assert w.state(hm("23:59")) == OPEN
    assert w.state(0) == OPEN
    assert w.state(hm("06:59")) == OPEN
    assert w.state(hm("07:00")) == STOPPED
    assert w.state(hm("07:59")) == STOPPED
    assert w.state(hm("08:00")) == CLOSED
    assert w.state(hm("12:00")) == CLOSED


def test_window_with_only_stop_never_kills():
    w = window("22:00", "06:00", None)
    assert w.state(hm("23:00")) == OPEN
    assert w.state(hm("05:59")) == OPEN
    assert w.state(hm("06:00")) == STOPPED
    assert w.state(hm("21:59")) == STOPPED  # stopped (not closed) until start again


def test_window_with_only_end():
    w = window("23:59", None, "00:01")
    assert w.state(hm("23:58")) == CLOSED
    assert w.state(hm("23:59")) == OPEN
    assert w.state(0) == OPEN
    assert w.state(hm("00:01")) == CLOSED


def test_stop_equal_to_end_is_allowed():
    w = window("10:00", "11:00", "11:00")
    assert w.state(hm("10:59")) == OPEN
    assert w.state(hm("11:00")) == CLOSED


def test_next_change():
    w = window("17:00", "07:00", "08:00")
    assert w.next_change(hm("16:00")) == (3600, OPEN)
    assert w.next_change(hm("23:00")) == (8 * 3600, STOPPED)
    assert w.next_change(hm("07:30")) == (1800, CLOSED)
    assert w.next_change(hm("08:00")) == (9 * 3600, OPEN)
    assert w.next_change(hm("17:00")) == (14 * 3600, STOPPED)
    only_stop = window("22:00", "06:00", None)
    assert only_stop.next_change(hm("06:00")) == (16 * 3600, OPEN)


def test_describe():
    text = window("17:00", "07:00", "08:00").describe()
    assert "17:00" in text and "07:00" in text and "08:00" in text


def test_clock_offset_and_file(monkeypatch, tmp_path):
    monkeypatch.delenv("DISPY_NODE_CLOCK_FILE", raising=False)
    monkeypatch.setenv("DISPY_NODE_CLOCK_OFFSET", "3600")
    assert abs(service.clock() - (time.time() + 3600)) < 5
    clock_file = tmp_path / "clock"
    clock_file.write_text("-7200")
    monkeypatch.setenv("DISPY_NODE_CLOCK_FILE", str(clock_file))
    assert abs(service.clock() - (time.time() - 3600)) < 5
    clock_file.write_text("")  # being rewritten: offset 0 from the file
    assert abs(service.clock() - (time.time() + 3600)) < 5
    monkeypatch.delenv("DISPY_NODE_CLOCK_OFFSET")
    monkeypatch.delenv("DISPY_NODE_CLOCK_FILE")
    assert abs(service.clock() - time.time()) < 5


def test_seconds_of_day():
    t = time.mktime((2024, 3, 5, 17, 30, 15, 0, 0, -1)) + 0.5
    assert service.seconds_of_day(t) == 17 * 3600 + 30 * 60 + 15.5
