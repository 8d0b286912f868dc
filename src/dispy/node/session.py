"""A client program's session on the node: its connection, computations and results
not yet acknowledged."""

from __future__ import annotations

import time

from ..wire.connection import Connection
from ..wire.records import Record
from .computation import Computation


class Session:
    """A client program and its computations here. It is found by ``sid``, the digest of
    the secret session key the program's connections present after authenticating,
    never by the client id it claims (a second program knowing the cluster secret
    cannot take it over); ``sid`` also names its directory and its kept results."""

    def __init__(self, sid: str, client_id: str, name: str, addr: str) -> None:
        self.sid = sid
        self.client_id = client_id
        self.name = name
        self.addr = addr
        self.conn: Connection | None = None
        self.computations: dict[str, Computation] = {}
        self.undelivered: dict[str, tuple[dict, list]] = {}
        #: results not yet on disk -> when they were produced; uids already on disk
        self.unsaved: dict[str, float] = {}
        self.saved: set[str] = set()
        #: kept only for its results (client presumed gone, or node restarted): it does
        #: not hold the node; recover_jobs, connecting with this client id, fetches them
        self.orphan = False
        self.last_seen = time.monotonic()
        self.pulse_interval: float | None = None
        #: when the oldest pulse the client has not answered yet was sent (None: it
        #: answered, with any frame): a client connected but silent is a zombie too
        self.unanswered: float | None = None
        #: bytes the client's connection had handed to the kernel at the last look, and
        #: whether some were still waiting for the kernel then
        self.delivered = 0
        self.backlog = False

    def send(self, header: dict | Record, bufs: list | tuple = ()) -> bool:
        return self.conn is not None and self.conn.send(header, bufs)

    def flush(self) -> None:
        """Write the frames queued by ``send`` now (before a drain or a close)."""
        if self.conn is not None:
            self.conn.flush()

    def taking(self, conn: Connection) -> bool:
        """Whether the client reads what we send, a big result, since the last look (a
        pulse waits behind it meanwhile: the client is alive). Only a backlog the kernel
        could not take at once counts: small frames land in the kernel's buffers also
        when the client is stopped."""
        transport = conn.transport
        waiting = transport.get_write_buffer_size() if transport is not None else 0
        delivered, before, backlog = conn.bytes_out - waiting, self.delivered, self.backlog
        self.delivered, self.backlog = delivered, waiting > 0
        return (backlog or waiting > 0) and delivered != before

    def describe(self) -> str:
        return f"{self.name} at {self.addr}"
