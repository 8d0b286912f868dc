"""``dispy.logger``: stdlib logging with the original's interface (levels as attributes).

Log lines often quote what a peer sent (versions, client names, reasons), so dispy's
handlers escape control characters: a peer cannot start a fake log line with a newline.
They also rate-limit repeated messages, so a flood of bad connections cannot fill a disk.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable

LOG_FORMAT = "%(asctime)s %(name)s - %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"

#: C0 controls, DEL and C1 controls, plus the Unicode line and paragraph separators
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
#: the same without newline and tab, which tracebacks legitimately contain
_TRACEBACK_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char, f"\\x{ord(char):02x}"
                                                      if ord(char) < 0x100
                                                      else f"\\u{ord(char):04x}")


def escape_controls(text: str) -> str:
    """``text`` on one line: control characters shown as escapes (``\\n``, ``\\x1b``)."""
    return _CONTROLS.sub(_escape_char, text)


#: ``extra={DETAIL: text}``: several lines (a traceback from a node) shown after the
#: message, indented as a traceback is, so none of them can pass for a record
DETAIL = "dispy_detail"


def detail(text: str | None) -> dict[str, str]:
    """``log.warning(..., extra=detail(text))``: ``text`` shown below the message (when
    it has more than the line ``last_line`` gives the message)."""
    text = (text or "").strip()
    return {DETAIL: text if "\n" in text else ""}


def last_line(text: str | None) -> str:
    """The line that says what happened: a traceback's last (the exception)."""
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "?"


class SafeFormatter(logging.Formatter):
    """Escapes control characters in the message, so each record is one line; a
    traceback keeps its lines, indented, so no line of it can pass for a new record."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (stdlib name)
        message = record.message
        record.message = escape_controls(message)
        try:
            text = super().formatMessage(record)
        finally:
            record.message = message
        detail = getattr(record, DETAIL, None)
        if isinstance(detail, str) and detail.strip():  # a peer's traceback: its lines
            text += "\n" + _indent(detail.rstrip())
        return text

    def formatException(self, ei) -> str:  # noqa: N802 (stdlib name)
        return _indent(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 (stdlib name)
        return _indent(super().formatStack(stack_info))


def _indent(text: str) -> str:
    text = _TRACEBACK_CONTROLS.sub(_escape_char, text)
    return "\n".join("  " + line if line else line for line in text.split("\n"))


class RateLimit(logging.Filter):
    """Lets the first ``burst`` records of each message template (logger, level, format
    string) through per ``interval`` seconds; later ones in that window are counted and,
    when the template next appears after the window, one line says how many were
    suppressed."""

    def __init__(self, burst: int = 20, interval: float = 10.0, max_templates: int = 2048,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.burst = burst
        self.interval = interval
        self.max_templates = max_templates
        self.clock = clock
        #: template -> [window start, records passed in the window, records suppressed]
        self._seen: dict[tuple, list] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        with self._lock:
            state = self._seen.get(key)
            if state is None or now - state[0] >= self.interval:
                suppressed = state[2] if state is not None else 0
                if state is None and len(self._seen) >= self.max_templates:
                    self._forget_old(now)
                self._seen[key] = [now, 1, 0]
                if suppressed:
                    record.msg = (f"{record.msg} [suppressed {suppressed} similar message(s)"
                                  f" in the {self.interval:g} s before]")
                return True
            if state[1] < self.burst:
                state[1] += 1
                return True
            if state[1] == self.burst:  # say once that the rest of this window is dropped
                state[1] += 1
                record.msg = (f"{record.msg} [more similar messages are suppressed for"
                              f" up to {self.interval:g} s]")
                record.exc_info, record.exc_text, record.stack_info = None, None, None
                return True
            state[2] += 1
            return False

    def _forget_old(self, now: float) -> None:
        """Drop the templates whose window ended (called when the table is full)."""
        for key in [k for k, s in self._seen.items() if now - s[0] >= self.interval]:
            del self._seen[key]
        if len(self._seen) >= self.max_templates:  # all in use: start afresh
            self._seen.clear()


def safe_handler(handler: logging.Handler, datefmt: str | None = DATE_FORMAT) -> logging.Handler:
    """``handler`` with dispy's escaping formatter and rate limit."""
    handler.setFormatter(SafeFormatter(LOG_FORMAT, datefmt))
    if not any(isinstance(f, RateLimit) for f in handler.filters):
        handler.addFilter(RateLimit())
    return handler


class DispyLogger(logging.Logger):
    """A stdlib logger that also answers ``logger.DEBUG`` ... ``logger.CRITICAL``."""

    DEBUG = logging.DEBUG
    INFO = logging.INFO
    WARN = WARNING = logging.WARNING
    ERROR = logging.ERROR
    CRITICAL = FATAL = logging.CRITICAL


def _make() -> DispyLogger:
    old = logging.getLoggerClass()
    logging.setLoggerClass(DispyLogger)
    try:
        lg = logging.getLogger("dispy")
    finally:
        logging.setLoggerClass(old)
    if not isinstance(lg, DispyLogger):  # created earlier by someone else
        lg.__class__ = DispyLogger
    if not lg.handlers:
        lg.addHandler(safe_handler(logging.StreamHandler(sys.stderr)))
    if lg.level == logging.NOTSET:
        lg.setLevel(logging.WARNING)
    return lg  # type: ignore[return-value]


logger = _make()


def daemon_logging(debug: bool) -> None:
    """Logging for dispynode and dispyscheduler: everything through the root handler,
    escaped and rate-limited (asyncio's own messages too)."""
    level = logging.DEBUG if debug else logging.INFO
    logging.basicConfig(level=level, format=LOG_FORMAT)
    for handler in logging.getLogger().handlers:
        safe_handler(handler, datefmt=None)
    logger.handlers.clear()  # the root handler prints; no second copy
    logger.setLevel(level)


def why(exc: BaseException, empty: str = "") -> str:
    """An exception as a reason a user reads: its message, else ``empty`` (such as "timed
    out" for a timeout), else its class name. Never blank: a blank reason says nothing."""
    return str(exc) or empty or type(exc).__name__
