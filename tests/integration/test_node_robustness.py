"""An authenticated peer that sends malformed requests (issue 14, finding 7): a real
node, a raw client that knows the secret. Nothing it sends may wedge the node (busy
forever, a CPU lost) or make it allocate what a frame merely declares."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import cloudpickle
import psutil
import pytest

import dispy
from dispy import config
from dispy.client import shipping
from dispy.wire import codec
from dispy.wire.codec import Limits
from dispy.wire.connection import Connection, ConnectionClosed
from dispy.wire.handshake import client_handshake
from dispy.wire.sessions import new_session_key

pytestmark = pytest.mark.timeout(120)

SECRET = "sesame"
CID = "raw.1"


def nap(x: float) -> float:
    import time

    time.sleep(x)
    return x


def args(*a: Any) -> bytes:
    return shipping.pack_args(a, {})


async def raw_client(port: int) -> tuple[Connection, dict]:
    conn = await Connection.open("127.0.0.1", port, timeout=10)
    welcome = await client_handshake(
        conn, SECRET, {"client_id": "raw", "client_name": "raw", "session": new_session_key()},
        10, Limits(max_buffer=config.MaxFrameSize))
    return conn, welcome


async def until(conn: Connection, test, timeout: float = 30.0) -> list[dict]:
    """Frames until one passes ``test`` (that one last)."""
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        header, _ = await conn.recv(max(0.1, deadline - time.monotonic()))
        seen.append(header)
        if test(header):
            return seen


async def set_up(conn: Connection) -> None:
    package = shipping.package(nap, [], None, None)
    conn.send({"op": "compute", "cid": CID, "name": "nap", "dest_path": None, "cleanup": True,
               "pulse_interval": None, "kind": "function"}, [package.bundle])
    conn.send({"op": "setup", "cid": CID}, [cloudpickle.dumps(())])
    done = (await until(conn, lambda h: h.get("op") == "setup_done"))[-1]
    assert done["ok"], done


async def close_and_ack(conn: Connection, seen: list[dict]) -> list[dict]:
    """Close the computation and take every result: the node is then free."""
    conn.send({"op": "close", "cid": CID})
    seen += await until(conn, lambda h: h.get("op") == "closed")
    conn.send({"op": "ack", "uids": [h["uid"] for h in seen if h.get("op") == "done"]})
    conn.close()
    return seen


def busy_of(port: int) -> dict:
    async def ask() -> dict:
        conn, welcome = await raw_client(port)
        conn.close()
        return welcome
    return asyncio.run(ask())


def wait_idle(port: int, timeout: float = 30.0) -> dict:
    """The node's own account of itself once free (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        welcome = busy_of(port)
        if (welcome["busy"] == 0 and not welcome["busy_with"]) or time.monotonic() > deadline:
            return welcome
        time.sleep(0.1)


#: job frames with a missing or mistyped field: each refused, changing nothing
BAD_JOBS: list[tuple[dict, list[bytes]]] = [
    ({"op": "job", "cid": CID}, [args(0)]),                              # no uid
    *[({"op": "job", "cid": CID, "uid": bad}, [args(0)])
      for bad in (5, None, [], {}, "", "../x", "/abs", "a" * 300, True, 1.5)],
    *[({"op": "job", "cid": bad, "uid": "u1"}, [args(0)])
      for bad in (5, None, [], {}, "", "..", "/tmp", True)],
    *[({"op": "job", "cid": CID, "uid": "u2", "oob": bad}, [args(0)])
      for bad in ("1", -1, 3, 1.5, [1], {})],
    *[({"op": "job", "cid": CID, "uid": "u3", "pin": bad}, [args(0)])
      for bad in ("x", 5, {"a": 1})],
    *[({"op": "job", "cid": CID, "uid": "u4", "reply": bad}, [args(0)])
      for bad in (5, [], "../../x")],
    ({"op": "cancel", "cid": CID}, []),
    ({"op": "cancel", "cid": CID, "uid": 7}, []),
    ({"op": "close", "cid": CID, "terminate": "yes"}, []),
    ({"op": "close", "cid": 5}, []),
    ({"op": "ack", "uids": "abc"}, []),
    ({"op": "ack", "uids": [1, None]}, []),
    ({"op": "jobs_query", "uids": 5}, []),
    ({"op": "setup", "cid": [CID]}, []),
    ({"op": "file", "cid": CID, "path": "x", "size": -1}, [b""]),
    ({"op": "file", "cid": CID, "path": 5, "size": 1}, [b"x"]),
    ({"op": None}, []),
    ({"op": ["job"]}, []),
    ({}, []),
]

#: well-formed headers whose jobs cannot run: they end (with an error), never wedge
ODD_JOBS: list[tuple[dict, list[bytes]]] = [
    ({"op": "job", "cid": CID, "uid": "no-args"}, []),
    ({"op": "job", "cid": CID, "uid": "not-a-pickle"}, [b"\x80\x05junk"]),
    ({"op": "job", "cid": CID, "uid": "all-oob", "oob": 1}, [args(0)]),
    ({"op": "job", "cid": "unknown.9", "uid": "elsewhere"}, [args(0)]),
    ({"op": "cancel", "cid": CID, "uid": "never-sent"}, []),
]


def test_malformed_requests_do_not_wedge_the_node(node_factory):
    node = node_factory("-c", "2", "-s", SECRET)

    async def attack() -> list[dict]:
        conn, _ = await raw_client(node.port)
        try:
            await set_up(conn)
            for header, bufs in BAD_JOBS + ODD_JOBS:
                conn.send(header, bufs)
            conn.send({"op": "job", "cid": CID, "uid": "good"}, [args(0.0)])
            seen = await until(conn, lambda h: h.get("op") == "done" and h["uid"] == "good")
            return await close_and_ack(conn, seen)
        finally:
            conn.close()

    seen = asyncio.run(attack())
    assert node.proc.poll() is None
    ended = {h["uid"] for h in seen if h.get("op") in ("done", "job_refused")}
    assert {"good", "no-args", "not-a-pickle", "all-oob", "elsewhere"} <= ended, seen
    out = node.output()
    assert "refused a request from raw" in out and "'job' without 'uid'" in out
    with dispy.JobCluster(nap, nodes=["127.0.0.1"], node_port=node.port, port=0,
                          secret=SECRET) as cluster:
        assert cluster.submit(0.0)() == 0.0
    welcome = wait_idle(node.port)
    assert welcome["busy"] == 0 and not welcome["busy_with"], welcome


def test_a_job_uid_sent_twice_does_not_wedge_the_node(node_factory):
    """Two jobs with one uid on a node with two CPUs: one CPU must not stay busy."""
    node = node_factory("-c", "2", "-s", SECRET)

    async def attack() -> list[dict]:
        conn, _ = await raw_client(node.port)
        try:
            await set_up(conn)
            conn.send({"op": "job", "cid": CID, "uid": "dup"}, [args(0.3)])
            conn.send({"op": "job", "cid": CID, "uid": "dup"}, [args(0.3)])
            conn.send({"op": "job", "cid": CID, "uid": "after"}, [args(0.5)])
            seen = await until(conn, lambda h: h.get("op") == "done" and h["uid"] == "after")
            return await close_and_ack(conn, seen)
        finally:
            conn.close()

    asyncio.run(attack())
    welcome = wait_idle(node.port)
    assert welcome["busy"] == 0 and not welcome["busy_with"], welcome
    with dispy.JobCluster(nap, nodes=["127.0.0.1"], node_port=node.port, port=0,
                          secret=SECRET) as cluster:
        jobs = [cluster.submit(0.2) for _ in range(2)]
        assert [job() for job in jobs] == [0.2, 0.2]
        assert max(j.end_time for j in jobs) - min(j.start_time for j in jobs) < 1.5


def test_a_declared_buffer_does_not_make_the_node_allocate_it(node_factory):
    """A record and a buffer declared 256 MiB, 8 bytes sent: the node's memory grows by
    the decoder's first allocation at most (16 MiB), not by the declared size."""
    node = node_factory("-c", "1", "-s", SECRET)
    proc = psutil.Process(node.proc.pid)
    declared = 256 << 20
    header = codec.dumps({"op": "job", "cid": CID, "uid": "big"})

    async def attack() -> tuple[int, int]:
        conn, _ = await raw_client(node.port)
        before = proc.memory_info().rss
        assert conn.transport is not None
        # the start of a sealed record; its tag would come after its 256 MiB
        conn.transport.write(codec.RECLEN.pack(declared + 1024) + codec.PREFIX.pack(
            len(header), 1) + header + codec.BUFLEN.pack(declared) + b"12345678")
        peak = before
        deadline = time.monotonic() + 2.0  # a window to watch the node's memory in
        while time.monotonic() < deadline:
            peak = max(peak, proc.memory_info().rss)
            await asyncio.sleep(0.05)
        conn.close()
        return before, peak

    before, peak = asyncio.run(attack())
    assert peak - before < 32 << 20, f"node grew {(peak - before) >> 20} MiB"
    with dispy.JobCluster(nap, nodes=["127.0.0.1"], node_port=node.port, port=0,
                          secret=SECRET) as cluster:
        assert cluster.submit(0.0)() == 0.0


def test_connection_closed_mid_record_frees_the_node(node_factory):
    """A peer gone in the middle of a record leaves the node serving others."""
    node = node_factory("-c", "1", "-s", SECRET)

    async def attack() -> None:
        conn, _ = await raw_client(node.port)
        assert conn.transport is not None
        conn.transport.write(codec.RECLEN.pack(1000) + b"\0" * 10)
        conn.close()
        with pytest.raises(ConnectionClosed):
            await conn.recv(5)

    asyncio.run(attack())
    with dispy.JobCluster(nap, nodes=["127.0.0.1"], node_port=node.port, port=0,
                          secret=SECRET) as cluster:
        assert cluster.submit(0.0)() == 0.0
