"""The contract between the engine, which manages nodes, and where jobs end.

The engine (engine.py) connects to nodes, sets computations up, carries out the job
life cycle's decisions (scheduling/lifecycle.py) and handles lost nodes. It hands every
event that concerns a job's owner to a sink: in a program, ``LocalSink``
(localsink.py: DispyJob, callbacks, recover file); in dispyscheduler, the sink of
scheduler/programs.py, which passes results on to the program that submitted the job.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..wire.messages import Done, SendFile
    from .clusterstate import ClusterState
    from .job import DispyJob
    from .links import NodeLink

log = logging.getLogger("dispy")


class JobSink(Protocol):
    def journal_for(self, cs: ClusterState) -> Any:
        """The journal that keeps ``cs``'s jobs (queued, dispatched, finished)."""

    def flush_journals(self) -> None:
        """Commit what the journals were told (before jobs go out, before acks)."""

    def forget_journal(self, journal: Any) -> None:
        """``journal`` keeps no cluster any more."""

    def allocates_later(self, link: NodeLink, cs: ClusterState, alloc: Any) -> bool:
        """True: the sink asks elsewhere and calls ``Engine.set_up`` itself."""

    def allocate(self, cs: ClusterState, link: NodeLink, alloc: Any) -> int:
        """CPUs of the node ``cs`` may use (0: none)."""

    def setup_payload(self, cs: ClusterState, link: NodeLink, alloc: Any) -> tuple[list, bytes]:
        """The files (FileSpec) and pickled setup_args for ``cs`` on this node."""

    def deliver(self, job: DispyJob, done: Done, bufs: list[bytes]) -> None:
        """A job's result came from its node ("done" frame and its buffers)."""

    def finish(self, job: DispyJob, status: int, reason: str) -> None:
        """The engine ended a job itself (cancelled, node lost): no result."""

    def provisional(self, job: DispyJob | None, bufs: list[bytes]) -> None:
        """A running job sent a provisional result."""

    def job_event(self, job: DispyJob) -> None:
        """A job changed status (queued again, running)."""

    def status(self, cs: ClusterState, status: int, node: Any, job: Any) -> None:
        """A node event for ``cs`` (DispyNode.Initialized, Closed, AvailInfo)."""

    def reports_stall(self, cs: ClusterState) -> bool:
        """Should the engine log why ``cs``'s jobs wait?"""

    def file_from_node(self, source: str, msg: SendFile, bufs: list[bytes]) -> None:
        """A job sent a file with ``dispy_send_file``."""

    def cleanup_failed(self, cs: Any, source: str, problem: str) -> None:
        """The computation's cleanup function failed on a node (its traceback)."""


def allocated_cpus(cs: ClusterState, link: NodeLink, alloc: Any) -> int:
    """How many CPUs of this node ``cs`` may use, by its NodeAllocate (0: none)."""
    node = link.node
    if node is None:  # not met yet: nothing to allocate on
        return 0
    try:
        cpus = alloc.allocate(cs.cluster, link.ip, node.name, node.cpus, node.avail_info,
                              node.platform)
    except Exception:
        log.exception("NodeAllocate.allocate failed for node %s", link.describe())
        return 0
    return cpus if isinstance(cpus, int) and cpus > 0 else 0
