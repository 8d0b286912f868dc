"""One long-lived, authenticated connection from the client to one node."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..wire.connection import Connection
from ..wire.messages import Ack, Record
from .nodes import DispyNode

#: Jobs shorter than this (moving average per node) are sent ahead: up to
#: PREFETCH_PER_CPU jobs per CPU wait on the node, so its CPUs need not idle for a round
#: trip to the client between jobs (and jobs, results and journal commits come in
#: batches). Longer jobs are not: the round trip is then small, and a job waiting behind
#: others on a busy node could have run on another node that frees up first; the bound
#: keeps that delay under PREFETCH_PER_CPU x PREFETCH_BELOW. Nor are jobs with big
#: (out-of-band) arguments or results: sending them ahead only piles megabytes up on
#: the node (fresh memory, page faults) while the transfers themselves keep it busy.
PREFETCH_BELOW = 0.02
PREFETCH_PER_CPU = 4
#: Acks of results wait at most this long for a journal commit to go with (the node
#: keeps unacknowledged results in memory for a second before it writes them to disk).
ACK_DELAY = 0.05
ACK_BATCH = 256


@dataclass(frozen=True)
class Profile:
    """What a cluster authenticates with; clusters with equal profiles share links."""

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
    #: cluster id -> "setup" | "ready" | "unused: why" | "failed: why"
    clusters: dict[str, str] = field(default_factory=dict)
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
    #: recent run time of this node's jobs (moving average), to decide on prefetching
    job_time: float | None = None
    #: moving share of its results that carried big (out-of-band) buffers
    job_big: float = 0.0

    @property
    def key(self) -> tuple:
        return (self.ip, self.port, self.profile)

    def send(self, header: dict | Record, bufs: list | tuple = ()) -> bool:
        if self.conn is None or not self.conn.send(header, bufs):
            return False
        if self.node is not None:
            self.node.tx += sum(len(b) for b in bufs) + 64
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

    def flush_acks(self) -> None:
        if self.ack_timer is not None:
            self.ack_timer.cancel()
            self.ack_timer = None
        if self.acks:
            if self.commit is not None:
                self.commit()  # forget jobs durably before the node may drop results
            self.send(Ack(uids=self.acks))
            self.acks = []

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
        if ran > 0:  # a job cancelled before it started tells nothing of run times
            self.job_time = ran if self.job_time is None else 0.8 * self.job_time + 0.2 * ran
        avg = self.job_time if self.job_time is not None else PREFETCH_BELOW
        self.job_big = 0.8 * self.job_big + 0.2 * big
        return PREFETCH_PER_CPU * node.cpus if avg < PREFETCH_BELOW and self.job_big < 0.5 else 0

    def describe(self) -> str:
        name = f"{self.node.name} " if self.node else ""
        return f"{name}{self.ip}:{self.port}"
