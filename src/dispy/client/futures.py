"""Jobs as ``concurrent.futures`` futures: ``job.future``, ``await job``, ``as_completed``,
``wait`` and ``cluster.map``.

A job's future is created only when someone asks for it (most jobs never are) and is
resolved when the job reaches its final status: ``Finished`` gives the job's result,
any other final status (Cancelled, Terminated, Abandoned) raises :class:`JobError`,
which carries the status and the job's exception text. ``future.cancel()`` follows the
stdlib: a queued job is cancelled (the future then is ``cancelled()``), a running one is
not (use ``cluster.cancel(job)`` to interrupt it). As with ProcessPoolExecutor, a job
already sent to a node (short jobs are sent ahead of a free CPU) counts as running.

Done callbacks of these futures run in the client's engine thread: keep them short and
never wait in them for another job.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from .job import FINAL, FUTURE_HOOKS, STATUS_NAMES, DispyJob

FIRST_COMPLETED = cf.FIRST_COMPLETED
FIRST_EXCEPTION = cf.FIRST_EXCEPTION
ALL_COMPLETED = cf.ALL_COMPLETED


class JobError(Exception):
    """A job ended other than Finished: ``status`` (e.g. ``DispyJob.Terminated``),
    ``status_name``, ``exception`` (the job's traceback or reason text) and ``job``."""

    def __init__(self, job: DispyJob) -> None:
        self.job = job
        self.status = job.status
        self.status_name = STATUS_NAMES.get(job.status, str(job.status))
        self.exception = job.exception
        text = (job.exception or "").strip()
        super().__init__(f"job {job.id!r} {self.status_name}" + (f": {text}" if text else ""))

    def __reduce__(self) -> Any:
        return (_job_error_stub, (str(self), self.status, self.exception))


def _job_error_stub(message: str, status: int, exception: str | None) -> Exception:
    """A JobError unpickled without its job (the job does not travel)."""
    err = JobError.__new__(JobError)
    Exception.__init__(err, message)
    err.job, err.status, err.exception = None, status, exception  # type: ignore[assignment]
    err.status_name = STATUS_NAMES.get(status, str(status))
    return err


class JobFuture(cf.Future):
    """The future of one job; ``cancel()`` cancels the job if it is still queued."""

    def __init__(self, job: DispyJob) -> None:
        super().__init__()
        self._job = job
        self._cancel_requested = False

    def running(self) -> bool:
        return not self.done() and self._job.status in (DispyJob.Running,
                                                        DispyJob.ProvisionalResult)

    def cancel(self) -> bool:
        if self.cancelled():
            return True
        if self.done() or self._job.status != DispyJob.Created:
            return False
        cluster = getattr(self._job._cluster, "cluster", None)
        if cluster is None or _on_loop(cluster):
            return False  # e.g. from a done callback: the engine cannot wait for itself
        self._cancel_requested = True
        cluster.cancel(self._job)  # resolves this future (cancelled) on the engine thread
        return self.cancelled()


def _on_loop(cluster: Any) -> bool:
    try:
        return asyncio.get_running_loop() is cluster._engine.loop
    except RuntimeError:
        return False


_settle_lock = threading.Lock()


def settle(job: DispyJob) -> None:
    """(engine) Resolve the job's future, if it has one, from its final status."""
    fut = job._future
    if fut is None:
        return
    with _settle_lock:
        if getattr(fut, "_settled", False):
            return
        fut._settled = True
    if job.status == DispyJob.Finished:
        fut.set_result(job.result)
    elif job.status == DispyJob.Cancelled and fut._cancel_requested:
        cf.Future.cancel(fut)
        fut.set_running_or_notify_cancel()
    else:
        fut.set_exception(JobError(job))


def future_of(job: DispyJob) -> JobFuture:
    """``job.future``: created on first use; already resolved for a job that ended."""
    fut = job._future
    if fut is None:
        with _settle_lock:
            fut = job._future
            if fut is None:
                fut = job._future = JobFuture(job)
        if job._ended:  # it may have ended before the future existed
            settle(job)
    return fut


def _futures(jobs: Iterable[DispyJob]) -> dict[cf.Future, DispyJob]:
    out: dict[cf.Future, DispyJob] = {}
    for job in jobs:
        if not isinstance(job, DispyJob):
            raise TypeError(f"expected DispyJob objects, got {type(job).__name__}"
                            " (submit returns None when a job could not be queued)")
        out[job.future] = job
    return out


def as_completed(jobs: Iterable[DispyJob], timeout: float | None = None) -> Iterator[DispyJob]:
    """Yield the jobs as they end (any final status); ``TimeoutError`` if ``timeout``
    seconds pass before all of them ended."""
    futures = _futures(jobs)
    for fut in cf.as_completed(futures, timeout):
        yield futures[fut]


class DoneAndNotDone(NamedTuple):
    done: set[DispyJob]
    not_done: set[DispyJob]


def wait(jobs: Iterable[DispyJob], timeout: float | None = None,
         return_when: str = ALL_COMPLETED) -> DoneAndNotDone:
    """Wait for the jobs as ``concurrent.futures.wait`` does: ``FIRST_EXCEPTION`` returns
    when a job ends other than Finished. Returns ``(done, not_done)`` sets of jobs."""
    if return_when not in (ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION):
        raise ValueError(f"return_when must be ALL_COMPLETED, FIRST_COMPLETED or"
                         f" FIRST_EXCEPTION, not {return_when!r}")
    futures = _futures(jobs)
    done, not_done = cf.wait(futures, timeout, return_when)
    return DoneAndNotDone({futures[f] for f in done}, {futures[f] for f in not_done})


def wait_job(job: DispyJob, timeout: float | None) -> None:
    """``job(timeout=...)``: wait for the final status or raise ``TimeoutError``."""
    if timeout is not None and timeout < 0:
        raise ValueError("timeout must not be negative")
    if not job.finish.wait(timeout):
        raise TimeoutError(f"job {job.id!r} did not end within {timeout} s")


def cluster_map(cluster: Any, iterables: tuple, timeout: float | None,
                chunksize: int) -> Iterator[Any]:
    """``cluster.map``: a job per item (the computation gets the items of ``iterables``
    zipped as its arguments); yields results in order. A job that did not finish raises
    its JobError; leaving the loop early cancels the jobs still queued."""
    if chunksize != 1:
        raise ValueError("cluster.map runs one job per item (chunksize=1): the computation"
                         " takes one item; dispy.Executor.map can batch items")
    if not iterables:
        raise TypeError("map() needs at least one iterable")
    deadline = None if timeout is None else time.monotonic() + timeout
    jobs: list[DispyJob] = []
    for args in zip(*iterables, strict=False):
        job = cluster.submit(*args)
        if job is None:
            for queued in jobs:
                queued.future.cancel()
            raise ValueError(f"cluster {cluster.name!r}: a job of map could not be"
                             " submitted (see the log)")
        jobs.append(job)
    return _results(jobs, deadline)


def _results(jobs: list[DispyJob], deadline: float | None) -> Iterator[Any]:
    try:
        jobs.reverse()
        while jobs:
            fut = jobs[-1].future
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            yield fut.result(left)
            jobs.pop()
    finally:
        for job in jobs:
            job.future.cancel()


__all__ = ["JobError", "JobFuture", "as_completed", "wait", "FIRST_COMPLETED",
           "FIRST_EXCEPTION", "ALL_COMPLETED", "DoneAndNotDone", "FINAL"]


FUTURE_HOOKS.update(settle=settle, future_of=future_of, wait_job=wait_job)
