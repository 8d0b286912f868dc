"""Per-job time limits (``dispy_job_timeout``) on the node.

The clock starts when the job starts on a CPU (not while it waits in the node's queue).
When it runs out the job is cancelled as ``cluster.cancel`` would (KeyboardInterrupt in
the job, then SIGTERM and SIGKILL from the computation host if it goes on), and its
final status is Terminated with the reason "timed out after S s", whatever the job did
after the interrupt. The job runner (jobs.py) arms a job's clock when it starts and settles it
when it ends (any way).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from ..wire.messages import Done
from ..wire.status import TERMINATED

log = logging.getLogger("dispy.node")



class _Timer:
    __slots__ = ("handle", "seconds", "fired")

    def __init__(self, handle: asyncio.TimerHandle, seconds: float) -> None:
        self.handle = handle
        self.seconds = seconds
        self.fired = False


class JobTimers:
    """The running jobs' clocks; ``cancel(comp, uid)`` is how a late job is stopped."""

    def __init__(self, cancel: Callable[[Any, str], None]) -> None:
        self.cancel = cancel
        self.timers: dict[tuple[str, str], _Timer] = {}

    def arm(self, comp: Any, uid: str, seconds: float | None) -> None:
        """(loop) A job started: end it after ``seconds`` (its dispy_job_timeout), if given."""
        if not seconds:
            return
        key = (comp.cid, uid)
        handle = asyncio.get_running_loop().call_later(seconds, self._fire, comp, key)
        self.timers[key] = _Timer(handle, seconds)

    def disarm(self, comp: Any, uid: str) -> None:
        """(loop) The job has not started after all (a lane's job runs before it)."""
        timer = self.timers.pop((comp.cid, uid), None)
        if timer is not None:
            timer.handle.cancel()

    def _fire(self, comp: Any, key: tuple[str, str]) -> None:
        timer = self.timers.get(key)
        if timer is None or key[1] not in comp.running:
            return
        timer.fired = True
        log.info("job %s of %s timed out after %g s: cancelling it", key[1], comp.cid,
                 timer.seconds)
        self.cancel(comp, key[1])

    def settle(self, comp: Any, done: Done) -> Done:
        """(loop) A job ended: stop its clock. Returns its result, which for a job that
        timed out is Terminated (whatever the job did after the interrupt)."""
        if not self.timers:
            return done
        timer = self.timers.pop((comp.cid, done.uid), None)
        if timer is None:
            return done
        timer.handle.cancel()
        if not timer.fired:
            return done
        return dataclasses.replace(done, status=TERMINATED,
                                   exception=f"timed out after {timer.seconds:g} s")
