"""A second program knowing the cluster secret claims a running program's client id
(issue 14, finding 3). Daemons key sessions by the secret session key a program
presents after authenticating, never by the id it claims: the impostor is told the
node is busy, cannot cancel or close the other program's work, and gets none of its
results; on dispyscheduler it gets a session of its own, empty."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

import dispy
from dispy.wire.connection import Connection, ConnectionClosed
from dispy.wire.handshake import client_handshake
from dispy.wire.sessions import new_session_key

pytestmark = pytest.mark.timeout(120)

SECRET = "sesame"


def run_when_told(go: str, x: int) -> int:
    """Says it started (a file), runs once ``go`` exists (bounded)."""
    import os
    import time

    open(go + ".started", "w").close()
    deadline = time.time() + 60
    while not os.path.exists(go) and time.time() < deadline:
        time.sleep(0.02)
    return 2 * x


def wait_file(path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


async def impostor(port: int, client_id: str) -> tuple[Connection, dict]:
    """Program B: the right secret, program A's client id, a session key of its own."""
    conn = await Connection.open("127.0.0.1", port, timeout=10)
    welcome = await client_handshake(
        conn, SECRET, {"client_id": client_id, "client_name": "impostor",
                       "session": new_session_key()}, 10)
    return conn, welcome


async def everything_until_closed(conn: Connection, timeout: float = 15.0) -> list[dict]:
    frames = []
    try:
        while True:
            header, _ = await conn.recv(timeout)
            frames.append(header)
    except ConnectionClosed:
        return frames


def attempts(cid: str, uid: str) -> list[dict[str, Any]]:
    """What B tries with A's ids: cancel its job, close its computation, take (ack) and
    ask for its results."""
    return [{"op": "cancel", "cid": cid, "uid": uid},
            {"op": "close", "cid": cid, "terminate": True},
            {"op": "ack", "uids": [uid]},
            {"op": "jobs_query", "uids": [uid]}]


def test_impostor_with_a_programs_client_id_gets_nothing_from_a_node(node_factory, tmp_path):
    node = node_factory("-c", "2", "-s", SECRET)
    go = tmp_path / "go"
    with dispy.JobCluster(run_when_told, nodes=["127.0.0.1"], node_port=node.port, port=0,
                          secret=SECRET) as cluster:
        job = cluster.submit(str(go), 21)
        wait_file(Path(str(go) + ".started"))
        client_id, cid, uid = cluster._engine.client_id, cluster._state.cid, job._uid

        async def attack() -> tuple[dict, list[dict]]:
            conn, welcome = await impostor(node.port, client_id)
            for header in attempts(cid, uid):
                conn.send(header)
            try:
                return welcome, await everything_until_closed(conn)
            finally:
                conn.close()

        welcome, frames = asyncio.run(attack())
        assert welcome["busy_with"] and "impostor" not in welcome["busy_with"]
        assert welcome["busy"] == 1
        assert frames == []  # the node closed the connection: no result, no reply
        go.touch()
        assert job.finish.wait(60)
        assert job.status == dispy.DispyJob.Finished and job.result == 42
        assert cluster.submit(str(go), 1)() == 2  # A's computation is still there


def test_impostor_with_a_programs_client_id_gets_nothing_from_a_scheduler(
        scheduler_factory, node_factory, tmp_path):
    node = node_factory("-c", "2", "-s", SECRET)
    sched = scheduler_factory("--cluster_secret", SECRET, "--node_secret", SECRET)
    go = tmp_path / "go"
    with dispy.SharedJobCluster(run_when_told, nodes=[dispy.NodeAllocate("127.0.0.1", node.port)],
                                scheduler_node="127.0.0.1", scheduler_port=sched.port,
                                secret=SECRET) as cluster:
        job = cluster.submit(str(go), 21)
        wait_file(Path(str(go) + ".started"))
        client_id, cid, uid = cluster._engine.client_id, cluster._state.cid, job._uid

        async def attack() -> tuple[dict, list[dict]]:
            conn, welcome = await impostor(sched.port, client_id)
            seen: list[dict] = []

            async def read() -> None:
                try:
                    while True:
                        seen.append((await conn.recv())[0])
                except ConnectionClosed:
                    pass

            reader = asyncio.ensure_future(read())
            try:
                for header in attempts(cid, uid)[:-1]:
                    conn.send(header)
                asked = await conn.request({"op": "jobs_query", "uids": [uid]}, timeout=15)
                assert asked is not None and asked["unknown"] == [uid]
                # A's job ends and its result reaches A ...
                await asyncio.to_thread(go.touch)
                assert await asyncio.to_thread(job.finish.wait, 60)
                # ... anything sent to B's session would have come before this reply
                assert await conn.request({"op": "jobs_query", "uids": [uid]}, timeout=15)
            finally:
                conn.close()
                await reader
            return welcome, seen

        welcome, frames = asyncio.run(attack())
        assert welcome["scheduler"] is True
        # B's close of an unknown (to B's session) computation is answered "closed":
        # that, and nothing else, is all B ever hears
        assert frames == [{"op": "closed", "cid": cid}], frames
        assert job.status == dispy.DispyJob.Finished and job.result == 42
        assert cluster.submit(str(go), 1)() == 2  # A's computation was not closed
