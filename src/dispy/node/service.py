"""Daily service windows of a node (``--service_start/--service_stop/--service_end``).

Pure arithmetic on times of day, so the window logic is tested without waiting for
the clock. The daemon reads the time only through :func:`clock`, which tests can shift:
``DISPY_NODE_CLOCK_OFFSET`` (seconds) and the file named by ``DISPY_NODE_CLOCK_FILE``
(holding an offset in seconds, re-read on every call so a test can move a running
node's time) are added to the real time.

From ``start`` the node accepts jobs; from ``stop`` it accepts no new jobs but lets
running ones finish; from ``end`` it kills running jobs. The window repeats every day
and may cross midnight (start 17:00, stop 07:00, end 08:00).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass

OPEN, STOPPED, CLOSED = "open", "stopped", "closed"
DAY = 24 * 3600

_HHMM = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*$")


def clock() -> float:
    """The node's idea of now (seconds since the epoch); the one place time is read."""
    now = time.time()
    offset = os.environ.get("DISPY_NODE_CLOCK_OFFSET")
    if offset:
        now += float(offset)
    path = os.environ.get("DISPY_NODE_CLOCK_FILE")
    if path:
        try:
            with open(path) as fh:
                text = fh.read().strip()
            now += float(text or 0)
        except (OSError, ValueError):
            pass  # a file being rewritten: use the real time for this tick
    return now


def seconds_of_day(t: float) -> float:
    """Local time of day of the epoch time ``t``, in seconds since midnight."""
    tm = time.localtime(t)
    return tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec + (t % 1)


def parse_hhmm(text: str, option: str = "time") -> int:
    """'17:30' -> seconds since midnight; ValueError naming ``option`` otherwise."""
    match = _HHMM.match(str(text))
    if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise ValueError(f"{option} {text!r}: use HH:MM in 24-hour time, e.g. 17:00")
    return int(match.group(1)) * 3600 + int(match.group(2)) * 60


def format_hhmm(seconds: float) -> str:
    seconds = int(seconds) % DAY
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}"


@dataclass(frozen=True)
class ServiceWindow:
    """Times of day in seconds since midnight; ``stop`` and ``end`` are optional."""

    start: int
    stop: int | None = None
    end: int | None = None

    @classmethod
    def from_options(
        cls, start: str | None, stop: str | None, end: str | None
    ) -> ServiceWindow | None:
        """Build and check a window from HH:MM strings; None when no option is given."""
        if not (start or stop or end):
            return None
        if not start:
            raise ValueError("--service_stop and --service_end need --service_start")
        if not (stop or end):
            raise ValueError(
                "--service_start needs --service_stop or --service_end (when service stops)"
            )
        window = cls(
            parse_hhmm(start, "--service_start"),
            parse_hhmm(stop, "--service_stop") if stop else None,
            parse_hhmm(end, "--service_end") if end else None,
        )
        for name, value in (("--service_stop", window.stop), ("--service_end", window.end)):
            if value == window.start:
                raise ValueError(f"{name} {format_hhmm(value)} is the same as --service_start")
        if window.stop is not None and window.end is not None:
            if window._since_start(window.stop) > window._since_start(window.end):
                raise ValueError(
                    f"--service_stop {format_hhmm(window.stop)} comes after --service_end"
                    f" {format_hhmm(window.end)} (counting from --service_start"
                    f" {format_hhmm(window.start)})"
                )
        return window

    def _since_start(self, seconds: float) -> float:
        return (seconds - self.start) % DAY

    def state(self, seconds: float) -> str:
        """OPEN, STOPPED or CLOSED at ``seconds`` since midnight."""
        since = self._since_start(seconds)
        if self.end is not None and since >= self._since_start(self.end):
            return CLOSED
        if self.stop is not None and since >= self._since_start(self.stop):
            return STOPPED
        return OPEN

    def next_change(self, seconds: float) -> tuple[float, str]:
        """(seconds until the state changes, the state then), from ``seconds``."""
        since = self._since_start(seconds)
        marks = sorted(
            self._since_start(t) for t in (self.start, self.stop, self.end) if t is not None
        )
        for mark in marks:
            if mark > since:
                wait = mark - since
                break
        else:
            wait = DAY - since
        return wait, self.state(seconds + wait)

    def describe(self) -> str:
        parts = [f"accepts jobs from {format_hhmm(self.start)}"]
        if self.stop is not None:
            parts.append(f"stops accepting at {format_hhmm(self.stop)}")
        if self.end is not None:
            parts.append(f"kills running jobs at {format_hhmm(self.end)}")
        return ", ".join(parts)
