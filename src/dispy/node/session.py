"""A client program's session on the node: its connection, computations and results
not yet acknowledged."""

from __future__ import annotations

import time

from ..wire.connection import Connection
from ..wire.pulses import PulseWatch
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
        #: results a lane carried (not sent here) -> when; sent the usual way if the
        #: program asks after the job (its lane closed before it read it)
        self.lane_sent: dict[str, float] = {}
        #: acks of results a lane carried that came before the job process's copy ->
        #: when (forgotten after LANE_ACKS_KEPT seconds)
        self.lane_acks: dict[str, float] = {}
        self.saved: set[str] = set()
        #: uid -> the result file (of the node's result directory) its result is in,
        #: removed when the client acknowledges the result
        self.result_files: dict[str, str] = {}
        #: kept only for its results (client presumed gone, or node restarted): it does
        #: not hold the node; recover_jobs, connecting with this client id, fetches them
        self.orphan = False
        self.last_seen = time.monotonic()
        self.pulse_interval: float | None = None
        #: its answers to our pulses (a client connected but silent is a zombie too)
        self.pulses = PulseWatch()

    def send(self, header: dict | Record, bufs: list | tuple = ()) -> bool:
        return self.conn is not None and self.conn.send(header, bufs)

    def flush(self) -> None:
        """Write the frames queued by ``send`` now (before a drain or a close)."""
        if self.conn is not None:
            self.conn.flush()

    def describe(self) -> str:
        return f"{self.name} at {self.addr}"
