"""The asyncio event loop every dispy process runs: uvloop's where it is installed.

uvloop (libuv under asyncio's interface) makes each wake-up, read and write cheaper;
a job's round trip crosses a handful of them. ``DISPY_EVENT_LOOP=asyncio`` falls back
to the standard loop (to compare, or to rule uvloop out when chasing a bug).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Coroutine
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


async def within(aw: Awaitable[T], timeout: float | None) -> T:
    """``asyncio.wait_for`` that never swallows a cancellation.

    Before Python 3.12, ``wait_for`` returns the result instead of raising
    ``CancelledError`` when what it waits for finishes in the same turn as the cancel:
    a loop that ends by being cancelled (a sampler woken by an event as it is shut
    down) then runs on, and its thread never ends. Every wait with a timeout in dispy
    goes through here.
    """
    if sys.version_info >= (3, 12):
        return await asyncio.wait_for(aw, timeout)
    fut = asyncio.ensure_future(aw)
    try:
        done, _ = await asyncio.wait((fut,), timeout=timeout)
    except BaseException:
        fut.cancel()
        await asyncio.wait((fut,))  # as wait_for: it ends (and cleans up) first
        raise
    if not done:
        fut.cancel()
        await asyncio.wait((fut,))  # as wait_for: the waited-for thing has ended
        if not fut.cancelled():
            return fut.result()  # it finished as it was cancelled: keep the result
        raise asyncio.TimeoutError
    return fut.result()
