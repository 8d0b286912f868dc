"""Per-job options given to ``submit`` as ``dispy_job_timeout=S`` and
``dispy_job_priority=N``: checked when the job is made, carried in the job's header.

The timeout is enforced by the node (it starts when the job starts on a CPU, not while
it is queued); the priority orders the queue (SchedulerCore), at the client for
JobCluster and at dispyscheduler for SharedJobCluster.
"""

from __future__ import annotations

import math
from typing import Any

#: bounds of a priority (it travels as a JSON integer)
PRIORITY_LIMIT = 1 << 31


def pop(kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """Take the dispy_job_* options out of a job's keyword arguments; None if none.
    ValueError says what is wrong with one."""
    opts: dict[str, Any] = {}
    timeout = kwargs.pop("dispy_job_timeout", None)
    priority = kwargs.pop("dispy_job_priority", None)
    if timeout is not None:
        if (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                or not math.isfinite(timeout) or timeout <= 0):
            raise ValueError(f"dispy_job_timeout must be a positive number of seconds,"
                             f" not {timeout!r}")
        opts["timeout"] = float(timeout)
    if priority is not None:
        if isinstance(priority, bool) or not isinstance(priority, int) or not (
                -PRIORITY_LIMIT < priority < PRIORITY_LIMIT):
            raise ValueError(f"dispy_job_priority must be an integer, not {priority!r}")
        if priority:
            opts["priority"] = priority
    return opts or None


def priority(job: Any) -> int:
    opts = job._opts
    return opts.get("priority", 0) if opts else 0


def header_fields(job: Any) -> dict[str, Any]:
    """What goes into the job's header (to a node or to dispyscheduler)."""
    return job._opts or {}
