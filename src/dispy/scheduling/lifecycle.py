"""The life of a job, from submission to its one final status: pure, no I/O, no clocks.

Events go in (submitted, dispatched by the core, result, refused, cancel, node lost,
cluster closed); instructions come out (send it, tell the node to cancel it, deliver
its result, resubmit it under a new id, end it with a status and a reason). The engine
that owns the sockets, the user's ``DispyJob`` objects and the journal carries the
instructions out and feeds back what happens. Whatever the order of events, a job ends
exactly once: every event about a job that already ended yields nothing.

After ``distributed/worker_state_machine.py`` in Dask, on a smaller scale.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any

from ..wire.records import Plain
from ..wire.status import CANCELLED, TERMINATED
from .core import SchedulerCore

NodeKey = Hashable



class State(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"  # sent to a node (it may still wait there for a CPU)
    FINAL = "final"


@dataclass(slots=True)
class JobRecord:
    uid: str
    cid: Hashable
    #: may run again elsewhere when its node is lost (reentrant, arguments kept, not pinned)
    resubmittable: bool
    pin: NodeKey | None = None
    state: State = State.QUEUED
    node: NodeKey | None = None
    #: dispy_job_priority (SchedulerCore: higher first), kept for a resubmission
    priority: int = 0
    #: the user cancelled it while it ran: should its node be lost or give it back
    #: unrun, it ends rather than running again
    cancel_asked: bool = False


# ---- instructions ----------------------------------------------------------------------


@dataclass(repr=False, eq=False)
class Send(Plain):
    """Send the job to ``node``."""
    uid: str
    cid: Hashable
    node: NodeKey


@dataclass(repr=False, eq=False)
class SendCancel(Plain):
    """Ask ``node`` to cancel the running job; it ends when the node reports."""
    uid: str
    cid: Hashable
    node: NodeKey


@dataclass(repr=False, eq=False)
class Deliver(Plain):
    """The job's result came from the node that ran it: decode it, end the job."""
    uid: str


@dataclass(repr=False, eq=False)
class Resubmit(Plain):
    """The job runs again under ``new_uid`` (a late result of the old run is dropped)."""
    uid: str
    cid: Hashable
    new_uid: str
    reason: str


@dataclass(repr=False, eq=False)
class End(Plain):
    """End the job with ``status`` and ``reason`` (no result)."""
    uid: str
    cid: Hashable
    status: int
    reason: str


Instruction = Send | SendCancel | Deliver | Resubmit | End


class JobLifecycle:
    """Jobs by uid and the decisions about them; the core does queues and CPUs."""

    def __init__(self, core: SchedulerCore, new_uid: Callable[[], str]) -> None:
        self.core = core
        self.new_uid = new_uid
        self.jobs: dict[str, JobRecord] = {}
        #: node -> uids running there / queued only for it, in order (a lost node
        #: touches its own jobs, not every job: 100 of 1 000 nodes lost at once)
        self.on_node: dict[NodeKey, dict[str, None]] = {}
        self.pinned: dict[NodeKey, dict[str, None]] = {}
        #: clusters being closed: their jobs never run again
        self.closing: set[Hashable] = set()

    # -- queries --

    def state(self, uid: str) -> State | None:
        rec = self.jobs.get(uid)
        return rec.state if rec is not None else None

    def running_on(self, node: NodeKey) -> list[str]:
        return list(self.on_node.get(node, ()))

    # -- events --

    def submit(self, uid: str, cid: Hashable, resubmittable: bool,
               pin: NodeKey | None = None, priority: int = 0) -> list[Instruction]:
        if cid in self.closing:
            self.jobs[uid] = JobRecord(uid, cid, False)
            return self._end(uid, CANCELLED, "Cancelled: cluster closed")
        self.jobs[uid] = JobRecord(uid, cid, resubmittable and pin is None, pin,
                                   priority=priority)
        self.core.submit(cid, uid, pin, priority)
        if pin is not None:
            self.pinned.setdefault(pin, {})[uid] = None
        return []

    def dispatch(self) -> list[Send]:
        """Jobs the core assigned to free CPUs."""
        return list(self.sends())

    def sends(self) -> Iterator[Send]:
        """``dispatch``, one job at a time (see ``SchedulerCore.assign``): the engine
        journals each as it comes, and no Send outlives its job's turn."""
        jobs: dict[Any, JobRecord] = self.jobs  # (the core hands back the str uids given)
        on_node, running = self.on_node, State.RUNNING
        for uid, cid, node in self.core.assign():
            rec = jobs.get(uid)
            if rec is None or rec.state is not State.QUEUED:
                self.core.finished(uid)
                continue
            if rec.pin is not None:
                self._unpin(rec)
            rec.state, rec.node = running, node
            there = on_node.get(node)
            if there is None:
                there = on_node[node] = {}
            there[rec.uid] = None
            yield Send(rec.uid, cid, node)

    def send_failed(self, uid: str, reason: str) -> list[Instruction]:
        """The engine could not send it (e.g. its files could not be read)."""
        return self._end(uid, CANCELLED, f"Cancelled: {reason}")

    def result(self, uid: str, node: NodeKey) -> list[Instruction]:
        """A result came from ``node``: delivered only if the job runs there now."""
        rec = self.jobs.get(uid)
        if rec is None or rec.state is not State.RUNNING or rec.node != node:
            return []
        self._release(rec)
        return [Deliver(uid)]

    def refused(self, uid: str, node: NodeKey, reason: str,
                killed: bool = False) -> list[Instruction]:
        """The node gave the job back without running it to the end."""
        rec = self.jobs.get(uid)
        if rec is None or rec.state is not State.RUNNING or rec.node != node:
            return []
        return self._again_or_end(rec, reason, TERMINATED if killed else CANCELLED)

    def cancel(self, uid: str) -> list[Instruction]:
        """The user cancels: a queued job ends now, a running one when its node says."""
        rec = self.jobs.get(uid)
        if rec is None or rec.state is State.FINAL:
            return []
        if rec.state is State.QUEUED:
            return self._end(uid, CANCELLED, "Cancelled")
        rec.cancel_asked = True
        return [SendCancel(uid, rec.cid, rec.node)]

    def node_lost(self, node: NodeKey, reason: str) -> list[Instruction]:
        """``node`` is presumed dead: its jobs run again elsewhere or end."""
        self.core.remove_node(node)
        out: list[Instruction] = []
        for uid in list(self.on_node.get(node, ())):
            rec = self.jobs[uid]
            out += self._again_or_end(rec, f"node {reason}", CANCELLED)
        for uid in list(self.pinned.get(node, ())):
            out += self._end(uid, CANCELLED, f"Cancelled: node {reason}")
        self.on_node.pop(node, None)
        self.pinned.pop(node, None)
        return out

    def unpinned(self, cid: Hashable, node: NodeKey, reason: str) -> list[Instruction]:
        """The cluster stops using ``node``: jobs queued only for it end with ``reason``."""
        out: list[Instruction] = []
        for uid in self.core.unpin(cid, node):
            out += self._end(str(uid), CANCELLED, reason)
        return out

    def cluster_closing(self, cid: Hashable) -> list[Instruction]:
        """The cluster is being closed: its queued jobs end now (running ones report)."""
        self.closing.add(cid)
        out: list[Instruction] = []
        for uid in self.core.remove_cluster(cid):
            out += self._end(str(uid), CANCELLED, "Cancelled")
        return out

    def cluster_closed(self, cid: Hashable) -> list[Instruction]:
        """The nodes confirmed (or did not in time): every job left ends now."""
        out: list[Instruction] = []
        for rec in list(self.jobs.values()):
            if rec.cid == cid:
                out += self._end(rec.uid, CANCELLED, "Cancelled: cluster closed")
        self.closing.discard(cid)
        return out

    def forget_cluster(self, cid: Hashable) -> list[str]:
        """The engine lets go of the cluster without ending its jobs (they go on on
        their nodes, another program fetches them); returns their uids."""
        self.core.remove_cluster(cid)
        gone = [rec for rec in self.jobs.values() if rec.cid == cid]
        for rec in gone:
            del self.jobs[rec.uid]
            self._unpin(rec)
            self._off_node(rec)
        return [rec.uid for rec in gone]

    # -- helpers --

    def _release(self, rec: JobRecord) -> None:
        """The job leaves the machine: its CPU (or queue place) is given back."""
        if rec.state is State.RUNNING:
            self.core.finished(rec.uid)
            self._off_node(rec)
        elif rec.state is State.QUEUED:
            self.core.cancel(rec.uid)
            self._unpin(rec)
        rec.state = State.FINAL
        del self.jobs[rec.uid]

    def _off_node(self, rec: JobRecord) -> None:
        running = self.on_node.get(rec.node)
        if running is not None:
            running.pop(rec.uid, None)
            if not running:
                del self.on_node[rec.node]

    def _unpin(self, rec: JobRecord) -> None:
        if rec.pin is None:
            return
        queued = self.pinned.get(rec.pin)
        if queued is not None:
            queued.pop(rec.uid, None)
            if not queued:
                del self.pinned[rec.pin]

    def _again_or_end(self, rec: JobRecord, reason: str, status: int) -> list[Instruction]:
        if rec.resubmittable and not rec.cancel_asked and rec.cid not in self.closing:
            self._release(rec)
            new = self.new_uid()
            self.jobs[new] = JobRecord(new, rec.cid, True, priority=rec.priority)
            self.core.submit(rec.cid, new, None, rec.priority)
            return [Resubmit(rec.uid, rec.cid, new, reason)]
        name = "Terminated" if status == TERMINATED else "Cancelled"
        return self._end(rec.uid, status, f"{name}: {reason}")

    def _end(self, uid: str, status: int, reason: str) -> list[Instruction]:
        rec = self.jobs.get(uid)
        if rec is None:
            return []
        self._release(rec)
        return [End(uid, rec.cid, status, reason)]
