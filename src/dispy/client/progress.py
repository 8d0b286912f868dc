"""Progress bars (tqdm.auto: a text bar in a terminal, a widget in Jupyter) for
``cluster.wait(progress=True)`` and ``Executor.map(..., progress=True)``: jobs done of
submitted, how many failed (ended other than Finished / raised), jobs/s and ETA."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any


def _bar(total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="job", desc="done", dynamic_ncols=True)


class FutureProgress:
    """A bar over futures, advanced by their done callbacks (any thread)."""

    def __init__(self, futures: Iterable[Any]) -> None:
        self._futures = futures = list(futures)
        self._lock = threading.Lock()
        self._failed = 0
        self._closed = False
        self.bar = _bar(len(futures))
        for fut in futures:
            fut.add_done_callback(self._done)

    @staticmethod
    def _failed_one(fut: Any) -> bool:
        return fut.cancelled() or fut.exception() is not None

    def _done(self, fut: Any) -> None:
        failed = self._failed_one(fut)
        with self._lock:
            if self._closed:
                return
            if failed:
                self._failed += 1
                self.bar.set_postfix(failed=self._failed, refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                # a result can be taken before its future's callbacks ran: count again
                done = [f for f in self._futures if f.done()]
                failed = sum(1 for f in done if self._failed_one(f))
                if failed != self._failed:
                    self.bar.set_postfix(failed=failed, refresh=False)
                self.bar.update(len(done) - self.bar.n)
                self.bar.close()


def wait_cluster(cluster: Any, timeout: float | None) -> bool:
    """``cluster.wait(timeout, progress=True)``: the bar follows the cluster's counts
    (refreshed on each ending job, at most every 0.2 s)."""
    import time

    deadline = None if timeout is None else time.monotonic() + timeout
    cond = cluster._lock
    bar = _bar(0)
    failed = -1
    try:
        while True:
            with cond:
                left = None if deadline is None else deadline - time.monotonic()
                step = 0.2 if left is None else max(0.0, min(0.2, left))
                cond.wait_for(lambda: cluster._pending == 0, step)
                total, pending = cluster._submitted, cluster._pending
            now_failed = cluster._state.failed
            bar.total = total
            if now_failed != failed:
                failed = now_failed
                bar.set_postfix(failed=failed, refresh=False)
            bar.update(total - pending - bar.n)
            if pending == 0:
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
    finally:
        bar.close()
