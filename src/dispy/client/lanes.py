"""The program's end of lanes: a job process's own stream, so a job and its result do
not cross the node daemon (the node's end, and why: node/lanes.py).

A lane is opened to a node once a cluster has had two results from it, or sent it a
big job (out-of-band arguments: its bytes then cross no daemon, which is worth more
than a handshake): one more
connection with the program's own handshake and session, naming the cluster, which the
node hands to one of the cluster's job processes; that process answers first (``LaneReady``). A
lane carries one job at a time, and only jobs the node needs nothing else for: no
``dispy_job_timeout`` or other option, no ``dispy_job_depends`` files; the others, and
any job while the node's lanes are busy, go the usual way. A small job goes on a lane
only when none of its cluster's wait behind it (with a backlog the node's way sends
jobs ahead, in batches); a big one whenever a lane is idle. A result on a lane is
handled as one from the node (the node keeps its
own copy until the program acknowledges it, on its usual link). A lane that closes
with its job in flight leaves that job to the node: it reports it (its result, or
Terminated if its process died), and the program asks after it a moment later, as
after a reconnect.

``DISPY_LANES=0`` in the environment turns lanes off.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any

from ..wire import localpath, records
from ..wire.codec import FrameError, Limits
from ..wire.connection import Connection, ConnectionClosed
from ..wire.handshake import HandshakeError, client_handshake
from ..wire.messages import LaneReady, LaneRefused, MessageError

log = logging.getLogger("dispy")

#: lanes on unless DISPY_LANES=0
ENABLED = os.environ.get("DISPY_LANES", "1") != "0"
#: a node's lanes for a cluster are asked for once this many of its results came (a
#: program of one job per node opens none: their handshakes would only delay its end)
AFTER_RESULTS = 2
#: lanes to one node, at most (one per CPU the cluster has there, up to this; the
#: node refuses more: node/lanes.py)
PER_NODE = 4
#: lanes of one program, at most, with its cluster's refusals counted (a program of
#: many nodes keeps one link to each, and a cluster asks only so many nodes that have
#: none, as nodes of the simulator)
TOTAL = 32
#: a node that refused a lane is asked again this often, this many times (its first job
#: processes start as its setup ends)
RETRY_DELAY = 0.1
RETRIES = 30
#: after a lane closed with its job in flight, the node is asked after it this much later
CHECK_AFTER = 2.0
_ANSWERS: dict[str, type[records.Record]] = {"lane_ready": LaneReady,
                                             "lane_refused": LaneRefused}
#: a lane that closed is asked for again this much later (its process may have died)
REOPEN_AFTER = 0.5


class Lane:
    """One lane: its connection, its cluster, and the job it carries (uid) if any."""

    __slots__ = ("conn", "cid", "pid", "uid", "freed")

    def __init__(self, conn: Connection, cid: str, pid: int) -> None:
        self.conn = conn
        self.cid = cid
        self.pid = pid
        self.uid: str | None = None
        #: the job it carried whose result came the node's way first (its copy here is
        #: late, not a stranger's)
        self.freed: str | None = None

    def flush(self) -> None:
        self.conn.flush()

    def describe(self) -> str:
        return f"lane to job process {self.pid}"


def wanted(lanes: list[Lane], cid: str, cpus: int, total: int) -> bool:
    """Whether one more lane for cluster ``cid`` is wanted on a node with ``lanes``."""
    return (ENABLED and total < TOTAL
            and sum(1 for lane in lanes if lane.cid == cid) < min(cpus, PER_NODE))


def idle(lanes: list[Lane], cid: str) -> Lane | None:
    for lane in lanes:
        if lane.uid is None and lane.cid == cid:
            return lane
    return None


async def open_lane(ip: str, port: int, local_name: str | None, secret: str | bytes,
                    hello: dict[str, Any], cid: str, timeout: float,
                    limits: Limits) -> Lane | None:
    """A lane for cluster ``cid``, or None (the node refused, or has no idle job
    process of it yet: asked again RETRIES times)."""
    for _ in range(RETRIES):
        conn = None
        try:
            if local_name is not None:
                conn = await localpath.connect(local_name)
            else:
                conn = await Connection.open(ip, port, None, timeout)
            await client_handshake(conn, secret, {**hello, "lane": cid}, timeout, limits)
            header, _ = await conn.recv(timeout)
            answer = records.parse_op(header, _ANSWERS, "lane answer")
        except (HandshakeError, OSError, asyncio.TimeoutError, ConnectionClosed, FrameError,
                MessageError) as exc:  # (a node without lanes closes it)
            log.debug("node %s:%d: no lane: %s", ip, port, exc)
            if conn is not None:
                conn.close()
            return None
        if isinstance(answer, LaneReady):
            return Lane(conn, cid, answer.pid)
        conn.close()
        assert isinstance(answer, LaneRefused)
        log.debug("node %s:%d: no lane: %s", ip, port, answer.reason)
        if not answer.later:
            return None
        await asyncio.sleep(RETRY_DELAY)
    return None


def serve(lane: Lane, frame: Callable[[dict, list], None],
          after: Callable[[], None]) -> Any:
    """Read the lane's frames: each a result of the job it carries (``frame``)."""
    def on_frame(header: dict, bufs: list) -> None:
        if header.get("op") == "done" and lane.freed is not None \
                and header.get("uid") == lane.freed:
            lane.freed = None  # (a late copy: the result came the node's way first)
            return
        if header.get("op") != "done" or header.get("uid") != lane.uid:
            log.warning("%s sent %r for %r, not the job it carries: lane closed",
                        lane.describe(), str(header.get("op"))[:20],
                        str(header.get("uid"))[:40])
            lane.conn.close()
            return
        frame(header, bufs)

    return lane.conn.deliver_to(on_frame, after)
