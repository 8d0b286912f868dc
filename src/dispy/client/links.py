"""One long-lived, authenticated connection from the client to one node."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from ..scheduling.prefetch import RunTimes
from ..wire.connection import Connection
from ..wire.messages import Ack, Record
from .nodes import DispyNode

#: Acks of results wait at most this long for a journal commit, or a job to the same
#: node, to go with: most ride in the same write (at 1 000 nodes, a separate write per
#: node every 0.05 s was half of the client's writes). The node only holds the
#: results (in its log, node/results.py) that much longer.
ACK_DELAY = 0.5
ACK_BATCH = 256


class Flushable(Protocol):
    """A link with frames queued for ``Engine.flush_later``."""

    def flush(self) -> None: ...

    def describe(self) -> str: ...


class Profile(NamedTuple):
    """What a cluster authenticates with; clusters with equal profiles share links.

    A tuple, not a dataclass: it is part of every link's key, and a key is hashed on
    each of the several lookups a job makes; a tuple hashes in C (a dataclass's
    ``__hash__`` was 8 Python calls per job, 2-3 us of a job's 40-50 at 1 000 nodes)."""

    #: the cluster's secret, or the key derived from it (recover_jobs has only that)
    secret: str | bytes = ""
    certfile: str | None = None
    keyfile: str | None = None


@dataclass
class NodeLink:
    ip: str
    port: int
    profile: Profile
    state: str = "new"  # new, connecting, connected, busy, refused, down, relay
    reason: str = "not contacted yet"
    node: DispyNode | None = None
    node_id: str | None = None
    conn: Connection | None = None
    running: dict[str, Any] = field(default_factory=dict)
    acks: list[str] = field(default_factory=list)
    #: sends the acks that no journal commit took along (ack_soon)
    ack_timer: asyncio.TimerHandle | None = None
    #: commits the journals (forget finished jobs durably) before acks go
    commit: Callable[[], None] | None = None
    closing: dict[str, asyncio.Future] = field(default_factory=dict)
    retry_at: float = 0.0
    lost_at: float | None = None
    last_heard: float = field(default_factory=time.monotonic)
    #: recent run times of this node's jobs, to decide on sending jobs ahead
    runs: RunTimes = field(default_factory=RunTimes)
    #: the node's local path, as its welcome offered it (lanes open there)
    local_name: str | None = None
    #: job processes' own streams to the program (client/lanes.py), asked for once
    #: lanes.AFTER_RESULTS results of a cluster came (cid -> results seen until then)
    lanes: list[Any] = field(default_factory=list)
    lanes_asked: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        #: how the engine and the scheduling core name this node (built once: looked up
        #: several times per job)
        self.key: tuple = (self.ip, self.port, self.profile)

    def send(self, header: dict | Record, bufs: list | tuple = (),
             flush_soon: bool = True) -> bool:
        if self.conn is None or not self.conn.send(header, bufs, flush_soon=flush_soon):
            return False
        if self.node is not None:
            self.node.tx += sum(map(len, bufs)) + 64
        return True

    def flush(self) -> None:
        """Write the frames queued by ``send`` now (before a drain or a close)."""
        if self.conn is not None:
            self.conn.flush()

    def ack_soon(self, uid: str | None = None, committed: bool = False) -> None:
        """Ack results now if the journal just forgot their jobs anyway (a dispatch
        commits); else soon, with a later commit: one commit per finished job would be
        the client's biggest cost for tiny jobs."""
        if uid is not None:
            self.acks.append(uid)
        if not self.acks:
            return
        if committed or len(self.acks) >= ACK_BATCH:
            self.flush_acks()
        elif self.ack_timer is None:
            self.ack_timer = asyncio.get_running_loop().call_later(ACK_DELAY, self.flush_acks)

    def flush_acks(self, flush_soon: bool = True) -> None:
        if self.ack_timer is not None:
            self.ack_timer.cancel()
            self.ack_timer = None
        if self.acks:
            if self.commit is not None:
                self.commit()  # forget jobs durably before the node may drop results
            self.send(Ack(uids=self.acks), flush_soon=flush_soon)
            self.acks = []

    def send_job(self, job: Record, bufs: list) -> bool:
        """Queue a job for the engine's flush (``flush_soon=False``); the acks waiting
        for their timer go with it, in the same write."""
        if not self.send(job, bufs, flush_soon=False):
            return False
        if self.acks:
            self.flush_acks(flush_soon=False)
        return True

    def job_ended(self, ran: float, big: bool) -> int | None:
        """A job's result came: count it for the node; how many jobs to send ahead to
        it now (None: the node is not met)."""
        node = self.node
        if node is None:
            return None
        node.busy = max(0, node.busy - 1)
        node.jobs_done += 1
        node.cpu_time += ran
        node.update_time = time.time()
        return self.runs.ended(ran, big, node.cpus)

    def describe(self) -> str:
        name = f"{self.node.name} " if self.node else ""
        return f"{name}{self.ip}:{self.port}"
