"""The way into the engine's loop from a program's threads.

A program's engine runs its asyncio loop in a background thread; the user's threads
hand work to it with ``post`` (batched: one wake-up for many submits, after which the
engine dispatches once) or ``call`` (a coroutine whose result they wait for).
dispyscheduler runs the engine on its own loop: no thread then.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from .. import eventloop

log = logging.getLogger("dispy")

#: why a call fails once the program is exiting (``stop``)
STOPPED = "dispy's engine has stopped: the program is exiting"


class LoopThread:
    def __init__(self, loop: asyncio.AbstractEventLoop | None,
                 after_batch: Callable[[], None]) -> None:
        #: run on the loop after each batch of posted calls
        self.after_batch = after_batch
        #: True while a batch of the program's calls runs (``after_batch`` ends it)
        self.draining = False
        self._inbox: deque = deque()
        self._inbox_lock = threading.Lock()
        self._wakeup_pending = False
        self.thread: threading.Thread | None = None
        #: the loop's thread was stopped (the program exits): calls fail at once
        self.stopped = False
        #: calls not finished yet: failed by ``stop`` (the loop will not run them)
        self._calls: weakref.WeakSet[concurrent.futures.Future] = weakref.WeakSet()
        if loop is not None:
            self.loop = loop
            return
        self.loop = eventloop.new_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="dispy-engine",
                                       daemon=True)
        self.thread.start()

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def settle(self) -> None:
        """Return once the loop handled everything posted so far; a no-op on the loop."""
        thread = self.thread
        if (thread is None or self.stopped or threading.current_thread() is thread
                or not thread.is_alive()):
            return

        async def nothing() -> None:
            pass

        # never hang a wait() on it, nor fail one as the program exits
        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            self.call(nothing()).result(timeout=10)

    def call(self, coro: Any) -> Any:
        """Run a coroutine on the engine loop; returns a concurrent Future."""
        with self._inbox_lock:  # (``stop`` sets ``stopped`` under it)
            if not self.stopped:
                fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
                if self.thread is not None:
                    self._calls.add(fut)
                return fut
        coro.close()
        raise RuntimeError(STOPPED)

    def stop(self, timeout: float = 5.0) -> None:
        """(the program exits) End the loop's thread before the interpreter finalizes.
        A daemon thread left in uvloop's loop is woken by its next timer or socket
        event, and its C callback then takes the GIL of an interpreter that is gone: the
        process ends in SIGSEGV after the program's last line. Later calls fail at
        once, and posts are dropped (nothing would run them)."""
        thread = self.thread
        if thread is None or self.stopped or threading.current_thread() is thread:
            return
        with self._inbox_lock:
            self.stopped = True
        if thread.is_alive():
            with contextlib.suppress(RuntimeError):  # (closed meanwhile)
                self.loop.call_soon_threadsafe(self.loop.stop)
            thread.join(timeout)
            if thread.is_alive():
                log.warning("dispy's engine did not stop within %g s at exit", timeout)
        for fut in list(self._calls):  # a (daemon) thread waiting on one never hangs
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                if not fut.done():
                    fut.set_exception(RuntimeError(STOPPED))

    def post(self, fn: Callable[[Any], None], arg: Any) -> None:
        """Queue ``fn(arg)`` for the loop, waking it at most once per batch. Kept as two
        items, not a tuple: a program submitting 20 000 jobs at once has them all in the
        inbox, and each tuple (and bound method) made there is one more object for the
        garbage collector to count and walk (``fn`` is bound once by the caller)."""
        with self._inbox_lock:
            if self.stopped:
                return
            self._inbox.append(fn)
            self._inbox.append(arg)
            if self._wakeup_pending:
                return
            self._wakeup_pending = True
        self.loop.call_soon_threadsafe(self._drain_inbox)

    def _drain_inbox(self) -> None:
        with self._inbox_lock:
            items, self._inbox = self._inbox, deque()
            self._wakeup_pending = False
        self.draining = True
        try:
            pairs = iter(items)
            for fn in pairs:
                try:
                    fn(next(pairs))
                except Exception:
                    log.exception("engine: %s failed", getattr(fn, "__name__", fn))
            self.after_batch()
        finally:
            self.draining = False
