"""Per-job time limits (``dispy_job_timeout``) on the node.

The clock starts when the job starts on a CPU (not while it waits in the node's queue).
When it runs out the job is cancelled as ``cluster.cancel`` would (KeyboardInterrupt in
the job, then SIGTERM and SIGKILL from the computation host if it goes on), and its
final status is Terminated with the reason "timed out after S s", whatever the job did
after the interrupt. Two hooks in jobs.py: ``arm`` when a job starts, ``settle`` when
it ends (any way).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("dispy.node")

TERMINATED = 9


class _Timer:
    __slots__ = ("handle", "seconds", "fired")

    def __init__(self, handle: asyncio.TimerHandle, seconds: float) -> None:
        self.handle = handle
        self.seconds = seconds
        self.fired = False


def _timers(daemon: Any) -> dict[tuple[str, str], _Timer]:
    timers = getattr(daemon, "_job_timers", None)
    if timers is None:
        timers = daemon._job_timers = {}
    return timers


def arm(daemon: Any, comp: Any, uid: str, header: dict) -> None:
    """(loop) A job started: end it after ``header["timeout"]`` seconds, if given."""
    seconds = header.get("timeout")
    if not seconds:
        return
    key = (comp.cid, uid)
    handle = asyncio.get_running_loop().call_later(seconds, _fire, daemon, comp, key)
    _timers(daemon)[key] = _Timer(handle, seconds)


def _fire(daemon: Any, comp: Any, key: tuple[str, str]) -> None:
    timer = _timers(daemon).get(key)
    if timer is None or key[1] not in comp.running:
        return
    timer.fired = True
    log.info("job %s of %s timed out after %g s: cancelling it", key[1], comp.cid,
             timer.seconds)
    daemon._cancel(comp, key[1])


def settle(daemon: Any, comp: Any, header: dict) -> None:
    """(loop) A job ended: stop its clock; a job that timed out ends Terminated."""
    timers = getattr(daemon, "_job_timers", None)
    if not timers:
        return
    timer = timers.pop((comp.cid, header.get("uid")), None)
    if timer is None:
        return
    timer.handle.cancel()
    if timer.fired:
        header["status"] = TERMINATED
        header["exception"] = f"timed out after {timer.seconds:g} s"
