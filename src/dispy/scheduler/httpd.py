"""dispyscheduler --httpd: the monitor page of ``dispy.httpd`` for every program's
computation at the scheduler (as 4.15's option did).

Each computation is shown as a cluster through ``ProgramView``, which reads the
scheduler's state on the scheduler's loop. The page only watches: programs manage their
own nodes and jobs, and the scheduler never unpickles a job's arguments to show them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from ..client.job import FINAL
from ..client.nodes import ClusterStatus
from ..web.monitor import DispyHTTPServer

log = logging.getLogger("dispy.scheduler")


class ProgramView:
    """One program's computation, as the monitor reads a cluster."""

    def __init__(self, cs: Any, loop: asyncio.AbstractEventLoop,
                 running: Callable[[str], int]) -> None:
        self.cs = cs
        self.loop = loop
        self._running = running
        #: its jobs running on nodes at the last ``status`` (the page's "running": the
        #: nodes' own counts include other programs' jobs)
        self.jobs_running = 0
        self.name = f"{cs.name} ({cs.session.name})"
        self.start_time = time.time()
        self.ended = 0
        self._callback: Callable[[int, Any, Any], None] | None = None

    @property
    def jobs_submitted(self) -> int:
        return self.ended + len(self.cs.jobs)

    def _chain_status(self, fn: Callable[[int, Any, Any], None] | None) -> Any:
        previous, self._callback = self._callback, fn
        return previous

    def event(self, status: int, node: Any, job: Any) -> None:
        if status in FINAL and job is not None:
            self.ended += 1
        if self._callback is not None:
            self._callback(status, node, job)

    def status(self) -> ClusterStatus:
        """(monitor thread) A snapshot taken on the scheduler's loop."""
        async def snap() -> ClusterStatus:
            self.jobs_running = running = self._running(self.cs.cid)
            return ClusterStatus(list(self.cs.nodes.values()),
                                 max(0, len(self.cs.jobs) - running))
        return asyncio.run_coroutine_threadsafe(snap(), self.loop).result(10)

    def node_jobs(self, node: Any) -> list:
        return []  # arguments stay pickled at the scheduler: nothing to show

    def _read_only(self, *_: Any, **__: Any) -> int:
        return -1

    cancel = set_node_cpus = allocate_node = deallocate_node = close_node = _read_only


class SchedulerMonitor:
    """The monitor server and a view per computation, kept in step with the scheduler."""

    def __init__(self, host: str, port: int, loop: asyncio.AbstractEventLoop,
                 running: Callable[[str], int]) -> None:
        self.loop = loop
        self.running = running
        self.server = DispyHTTPServer(None, host=host, port=port, show_job_args=False)
        self.views: dict[str, ProgramView] = {}

    def sync(self, computations: dict[str, Any]) -> None:
        """(scheduler loop) Show new computations, drop closed ones."""
        for cid, cs in computations.items():
            if cid not in self.views:
                self.views[cid] = view = ProgramView(cs, self.loop, self.running)
                self.server.add_cluster(view)
        for cid in [c for c in self.views if c not in computations]:
            self.server.del_cluster(self.views.pop(cid))

    def event(self, cs: Any, status: int, node: Any, job: Any) -> None:
        """(scheduler loop) A job or node event of computation ``cs``."""
        view = self.views.get(cs.cid)
        if view is None:  # a computation newer than the last sync
            view = self.views[cs.cid] = ProgramView(cs, self.loop, self.running)
            self.server.add_cluster(view)
        view.event(status, node, job)

    def shutdown(self) -> None:
        self.server.shutdown(wait=False)
