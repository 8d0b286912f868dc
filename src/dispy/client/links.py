"""One long-lived, authenticated connection from the client to one node."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from ..wire.connection import Connection
from ..wire.messages import Record
from .nodes import DispyNode


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
    #: sends the acks that no journal commit took along (see Engine._ack_soon)
    ack_timer: asyncio.TimerHandle | None = None
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

    def describe(self) -> str:
        name = f"{self.node.name} " if self.node else ""
        return f"{name}{self.ip}:{self.port}"
