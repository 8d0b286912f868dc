"""Log lines cannot be forged by peer strings, and a flood of one message stays small."""

from __future__ import annotations

import io
import logging

import pytest

from dispy.log import RateLimit, SafeFormatter, detail, escape_controls, last_line, safe_handler

pytestmark = pytest.mark.timeout(10)


def _logger(name: str) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    lg = logging.getLogger(f"test.log.{name}")
    lg.handlers.clear()
    lg.propagate = False
    lg.setLevel(logging.DEBUG)
    lg.addHandler(safe_handler(logging.StreamHandler(out)))
    return lg, out


def test_escape_controls():
    assert escape_controls("1.0\n2026-01-01 INFO fake") == "1.0\\n2026-01-01 INFO fake"
    assert escape_controls("a\rb\tc\x1b[31md\x00\x7f\x85\u2028") == (
        "a\\rb\\tc\\x1b[31md\\x00\\x7f\\x85\\u2028")
    assert escape_controls("plain ünïcode") == "plain ünïcode"


def test_peer_string_stays_on_one_line():
    lg, out = _logger("oneline")
    lg.warning("refused %s: version %s", "10.0.0.9", "1.0\n2026-01-01 INFO fake")
    lg.warning("raw message\r\nFAKE")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert not any(line.startswith(("2026-01-01 INFO fake", "FAKE")) for line in lines)
    assert "1.0\\n2026-01-01 INFO fake" in lines[0]


def test_traceback_is_readable_and_indented():
    lg, out = _logger("traceback")
    try:
        raise ValueError("peer said\nFAKE line")
    except ValueError:
        lg.exception("handling failed")
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("handling failed")
    assert "  Traceback (most recent call last):" in lines
    assert any(line.strip().startswith('File "') for line in lines)
    assert all(line.startswith("  ") for line in lines[1:])  # nothing passes for a record


def test_formatter_leaves_record_intact():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "a %s", ("b\nc",), None)
    text = SafeFormatter("%(message)s").format(record)
    assert text == "a b\\nc"
    assert record.getMessage() == "a b\nc"


def test_rate_limit_lets_a_burst_through_then_summarises():
    now = [0.0]
    limit = RateLimit(burst=3, interval=10.0, clock=lambda: now[0])
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(SafeFormatter("%(message)s"))
    handler.addFilter(limit)
    lg = logging.getLogger("test.log.rate")
    lg.handlers[:] = [handler]
    lg.propagate = False
    lg.setLevel(logging.INFO)
    for i in range(100):
        try:
            raise OSError(24, "Too many open files")
        except OSError:
            lg.error("accept failed from %s", f"10.0.0.{i}", exc_info=True)
        lg.info("other template %d", i) if i < 2 else None
    text = out.getvalue()
    assert text.count("accept failed from") == 4  # 3 passed, 1 saying the rest are dropped
    assert "more similar messages are suppressed" in text
    assert text.count("Traceback") == 3  # the notice carries no traceback
    assert text.count("other template") == 2  # another template has its own budget
    now[0] = 11.0
    lg.error("accept failed from %s", "10.0.0.200")
    last = out.getvalue().splitlines()[-1]
    assert last.startswith("accept failed from 10.0.0.200")
    assert "suppressed 96 similar message(s)" in last


def test_rate_limit_table_is_bounded():
    limit = RateLimit(burst=1, interval=10.0, max_templates=16, clock=lambda: 0.0)
    for i in range(1000):
        record = logging.LogRecord("x", logging.INFO, __file__, 1, f"unique {i}", None, None)
        assert limit.filter(record)
    assert len(limit._seen) <= 16


def test_client_logger_escapes():
    import dispy

    handler = dispy.logger.handlers[0]
    assert isinstance(handler.formatter, SafeFormatter)
    assert any(isinstance(f, RateLimit) for f in handler.filters)


def test_why_is_never_blank() -> None:
    from dispy.log import why

    assert why(OSError("refused")) == "refused"
    assert why(TimeoutError(), "timed out") == "timed out"
    assert why(ConnectionResetError()) == "ConnectionResetError"
    assert why(AssertionError(), "") == "AssertionError"


def test_a_peers_traceback_is_shown_indented_below_the_message():
    """A node's traceback (setup or cleanup failed) keeps its lines, each indented, so
    none passes for a record; the message names its last line (the exception)."""
    lg, out = _logger("detail")
    tb = ("Traceback (most recent call last):\n  File \"x.py\", line 1, in f\n"
          "2026-01-01 INFO fake\r\x1b[31m\nValueError: boom\n")
    lg.warning("setup failed: %s", last_line(tb), extra=detail(tb))
    lg.warning("one line: %s", last_line("only this"), extra=detail("only this"))
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("setup failed: ValueError: boom")
    assert lines[1:5] == ["  Traceback (most recent call last):",
                          '    File "x.py", line 1, in f', "  2026-01-01 INFO fake\\r\\x1b[31m",
                          "  ValueError: boom"]
    assert lines[5].endswith("one line: only this") and len(lines) == 6
