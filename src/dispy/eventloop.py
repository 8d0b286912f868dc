"""The asyncio event loop every dispy process runs: uvloop's where it is installed.

uvloop (libuv under asyncio's interface) makes each wake-up, read and write cheaper;
a job's round trip crosses a handful of them. ``DISPY_EVENT_LOOP=asyncio`` falls back
to the standard loop (to compare, or to rule uvloop out when chasing a bug).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

try:
    import uvloop as _uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
    _uvloop = None  # type: ignore[assignment]


def using_uvloop() -> bool:
    return _uvloop is not None and os.environ.get("DISPY_EVENT_LOOP", "") != "asyncio"


def new_loop() -> asyncio.AbstractEventLoop:
    """A new event loop for a thread of its own."""
    if using_uvloop():
        return _uvloop.new_event_loop()
    return asyncio.new_event_loop()


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on the loop ``new_loop`` makes (a daemon's main)."""
    if using_uvloop():
        return _uvloop.run(main)
    return asyncio.run(main)
