"""Runs user callbacks in one client thread, in order, never on the I/O loop's thread.

A callback given with a ``settle`` token reports it to ``on_settled`` once it has run
(or raised): the engine forgets a finished job and acknowledges its result only then,
so a program killed before its callback saw a result gets it from ``recover_jobs``."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("dispy")


class CallbackRunner:
    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable, tuple, Any] | None] = \
            queue.SimpleQueue()
        #: called on this thread with each settle token, after its callback ran
        self.on_settled: Callable[[Any], None] | None = None
        self._idle = threading.Condition()
        self._pending = 0
        self._thread = threading.Thread(target=self._run, name="dispy-callbacks", daemon=True)
        self._thread.start()

    def call(self, fn: Callable[..., Any], *args: Any, settle: Any = None) -> None:
        with self._idle:
            self._pending += 1
        self._queue.put((fn, args, settle))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, args, settle = item
            try:
                fn(*args)
            except Exception:
                log.exception("callback %s raised an exception", getattr(fn, "__name__", fn))
            finally:
                if settle is not None and self.on_settled is not None:
                    self.on_settled(settle)
                del item, fn, args, settle  # hold no job while waiting for the next
                with self._idle:
                    self._pending -= 1
                    if self._pending == 0:
                        self._idle.notify_all()

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every queued callback ran (not from a callback itself)."""
        if threading.current_thread() is self._thread:
            return True
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    @property
    def thread(self) -> threading.Thread:
        return self._thread
