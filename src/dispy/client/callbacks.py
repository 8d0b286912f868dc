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


class _Mark:
    """Queued by ``drain``: set when every callback queued before it has run."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class CallbackRunner:
    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Any, tuple, Any] | None] = queue.SimpleQueue()
        #: called on this thread with each settle token, after its callback ran
        self.on_settled: Callable[[Any], None] | None = None
        self._thread = threading.Thread(target=self._run, name="dispy-callbacks", daemon=True)
        self._thread.start()

    def call(self, fn: Callable[..., Any], *args: Any, settle: Any = None) -> None:
        """Queue ``fn(*args)`` (up to three per job: no lock, one put)."""
        self._queue.put((fn, args, settle))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, args, settle = item
            if type(fn) is _Mark:
                fn.done.set()
                continue
            try:
                fn(*args)
            except Exception:
                log.exception("callback %s raised an exception", getattr(fn, "__name__", fn))
            if settle is not None and self.on_settled is not None:
                try:
                    self.on_settled(settle)
                except Exception:
                    log.exception("settling after callback %s failed",
                                  getattr(fn, "__name__", fn))
            del item, fn, args, settle  # hold no job while waiting for the next

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every queued callback ran (not from a callback itself)."""
        if threading.current_thread() is self._thread:
            return True
        if not self._thread.is_alive():  # a callback raised SystemExit: none run any more
            return False
        mark = _Mark()
        self._queue.put((mark, (), None))
        return mark.done.wait(timeout)

    @property
    def thread(self) -> threading.Thread:
        return self._thread
