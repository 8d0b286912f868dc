"""Lanes (node/lanes.py, client/lanes.py): a job process's own stream to its program.
Jobs go there when a lane is idle; results come back there and the node keeps its
copy until acknowledged; a lane job that is cancelled, or whose process dies, ends once;
nobody but the program (its secret and session) gets a lane, and bytes that fail their
tag close the lane, not the job process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time

import pytest

import dispy
from dispy.client import lanes
from dispy.wire.codec import FULL, Limits
from dispy.wire.connection import ConnectionClosed
from dispy.wire.handshake import client_handshake
from dispy.wire.sessions import new_session_key

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def _lanes_after_one_result(monkeypatch):
    """(lanes open after a node's second result; here after its first, as a test waits)"""
    monkeypatch.setattr(lanes, "AFTER_RESULTS", 1)

SECRET = "lane-sesame"


def square(x):
    return x * x


def talks(x):
    print("out", x)
    if x < 0:
        raise ValueError("negative")
    return x


def sleeps(seconds):
    import time

    time.sleep(seconds)
    return seconds


def dies(x):
    import os

    if x:
        os.kill(os.getpid(), 9)
    return x


def lanes_of(cluster) -> list:
    return [lane for link in cluster._engine.links.values() for lane in link.lanes]


def wait_lanes(cluster, count: int, timeout: float = 20.0) -> list:
    deadline = time.monotonic() + timeout
    while len(lanes_of(cluster)) < count:
        assert time.monotonic() < deadline, f"lanes: {lanes_of(cluster)}"
        time.sleep(0.02)
    return lanes_of(cluster)


@contextlib.contextmanager
def one_lane(node_factory, computation, first):
    """A 1-CPU node, a cluster of ``computation`` on it, and its lane, open once the
    job ``computation(first)`` came back: (cluster, lane)."""
    node = node_factory("-c", "1", "-s", SECRET)
    with dispy.JobCluster(computation, nodes=[("127.0.0.1", node.port)], port=0,
                          secret=SECRET) as cluster:
        cluster.submit(first)()
        (lane,) = wait_lanes(cluster, 1)
        yield cluster, lane


def sent_on_lanes(cluster) -> int:
    return sum(lane.conn.bytes_out for lane in lanes_of(cluster))


def test_jobs_go_on_lanes_and_end_as_on_the_daemons_way(node_factory):
    node = node_factory("-c", "2", "-s", SECRET, "-d")
    with dispy.JobCluster(talks, nodes=[("127.0.0.1", node.port)], port=0,
                          secret=SECRET) as cluster:
        assert cluster.submit(1)() == 1  # (lanes open as setup ends)
        wait_lanes(cluster, 2)
        before = sent_on_lanes(cluster)
        jobs = [cluster.submit(x) for x in (2, 3, -1)]
        for job in jobs:
            job()
        assert sent_on_lanes(cluster) > before  # (jobs went there)
        assert [j.result for j in jobs[:2]] == [2, 3]
        assert [j.stdout for j in jobs[:2]] == ["out 2\n", "out 3\n"]
        assert jobs[2].status == dispy.DispyJob.Terminated
        assert "ValueError: negative" in jobs[2].exception
        seq = [cluster.submit(x)() for x in range(50)]  # sequential: one lane at a time
        assert seq == list(range(50))
    node.wait_for("handed to job process")
    # acknowledged: the node kept nothing (its copies of lane results went with the acks)
    assert "kept on disk" not in node.output()


def test_a_job_with_options_keeps_the_daemons_way(node_factory):
    with one_lane(node_factory, square, 2) as (cluster, lane):
        # same host: the lane is a Unix socket (the node's local path), as the link is
        assert lane.conn.get_extra_info("socket").family == socket.AF_UNIX
        before = lane.conn.bytes_out
        job = cluster.submit(3, dispy_job_timeout=30)
        assert job() == 9
        assert lane.conn.bytes_out == before


def echo(data):
    return data


def test_big_jobs_go_on_lanes_and_their_results_come_back_there(node_factory):
    """Out-of-band arguments and results cross no daemon: the node keeps its copy of the
    result in a result file until acknowledged, then removes it."""
    from test_result_files import result_dir, wait_empty

    node = node_factory("-c", "1", "-s", SECRET)
    with dispy.JobCluster(echo, nodes=[("127.0.0.1", node.port)], port=0,
                          secret=SECRET) as cluster:
        assert cluster.submit(b"x")() == b"x"
        (lane,) = wait_lanes(cluster, 1)
        data = os.urandom(3 << 20)
        sent, got = lane.conn.bytes_out, lane.conn.bytes_in
        assert cluster.submit(data)() == data
        assert lane.conn.bytes_out - sent > len(data)  # its argument went there
        assert lane.conn.bytes_in - got > len(data)  # its result came back there
        # with others waiting behind them too (a small job's lane waits for none)
        sent = lane.conn.bytes_out
        jobs = [cluster.submit(data) for _ in range(4)]
        assert all(job() == data for job in jobs), [j.exception for j in jobs]
        assert lane.conn.bytes_out - sent > len(data) * 2
    wait_empty(result_dir(node))  # acknowledged: the node's copies went
    assert "kept on disk" not in node.output()


def test_a_first_big_job_asks_for_lanes_at_once(node_factory, monkeypatch):
    monkeypatch.setattr(lanes, "AFTER_RESULTS", 1000)  # (no lane for results alone)
    node = node_factory("-c", "1", "-s", SECRET)
    with dispy.JobCluster(echo, nodes=[("127.0.0.1", node.port)], port=0,
                          secret=SECRET) as cluster:
        assert cluster.submit(b"x")() == b"x"
        assert lanes_of(cluster) == []
        data = os.urandom(1 << 20)
        assert cluster.submit(data)() == data  # (the node's way: no lane yet)
        wait_lanes(cluster, 1)
        assert cluster.submit(data)() == data


def late_big(seconds):
    import time

    time.sleep(seconds)
    return b"r" * (2 << 20)


def test_a_big_result_the_lane_cannot_carry_comes_the_nodes_way(node_factory):
    node = node_factory("-c", "1", "-s", SECRET, "-d")
    with dispy.JobCluster(late_big, nodes=[("127.0.0.1", node.port)], port=0,
                          secret=SECRET) as cluster:
        cluster.submit(0)()
        (lane,) = wait_lanes(cluster, 1)
        job = cluster.submit(1.0)
        deadline = time.monotonic() + 10
        while lane.uid != job._uid or job.status != dispy.DispyJob.Running:
            assert time.monotonic() < deadline, (lane.uid, job.status)
            time.sleep(0.01)
        lane.conn.close()  # (the process finds no program there: sent from the file)
        assert job(timeout=30) == b"r" * (2 << 20), job.exception
        assert job.status == dispy.DispyJob.Finished
        node.wait_for("lane of job process")  # (it found the lane gone as it sent)
        assert cluster.submit(0)(timeout=30) == b"r" * (2 << 20)


def forge_lane_file(planted):
    """A lane job that tells the node its result is in a file that is not its own."""
    from dispy.node import jobproc
    from dispy.wire import hostmsg
    from dispy.wire.sync import send_frame_sync

    if planted:
        send_frame_sync(jobproc._State.sock, hostmsg.LaneDoneInFile(
            uid=jobproc._State.uid, status=5, file=planted, lens=[17, 0, 0]), [])
    return "own result"


def test_a_lane_job_cannot_pass_off_another_file(node_factory):
    from test_result_files import result_dir

    node = node_factory("-c", "1", "-s", SECRET)
    files = result_dir(node)
    os.makedirs(files, exist_ok=True)
    other = f"1-{'0' * 16}-1"  # another computation's process's
    (files / other).write_bytes(b"another process's")  # 17 bytes
    with dispy.JobCluster(forge_lane_file, nodes=[("127.0.0.1", node.port)], port=0,
                          secret=SECRET) as cluster:
        assert cluster.submit(None)() == "own result"
        (lane,) = wait_lanes(cluster, 1)
        job = cluster.submit(other)
        job()
        assert lane.conn.bytes_out > 0
        assert job.result != b"another process's"
        assert job.status in (dispy.DispyJob.Finished, dispy.DispyJob.Terminated)
        assert cluster.submit(None)() == "own result"  # the process goes on
    node.wait_for("result of job")  # (the node refused the file)
    assert (files / other).read_bytes() == b"another process's"  # neither sent nor removed
    assert os.listdir(files) == [other]


def test_a_one_job_program_opens_no_lane(node_factory, monkeypatch):
    monkeypatch.setattr(lanes, "AFTER_RESULTS", 2)
    node = node_factory("-c", "1", "-s", SECRET)
    with dispy.JobCluster(square, nodes=[("127.0.0.1", node.port)], port=0,
                          secret=SECRET) as cluster:
        assert cluster.submit(2)() == 4
        assert cluster._engine.call(_nothing()).result(timeout=10) is None  # (a loop turn)
        assert lanes_of(cluster) == [] and cluster._engine._lanes_opening == 0
        assert cluster.submit(3)() == 9
        wait_lanes(cluster, 1)  # the second result opens it


async def _nothing() -> None:
    return None


def test_lanes_off(node_factory, monkeypatch):
    monkeypatch.setattr(lanes, "ENABLED", False)
    node = node_factory("-c", "2", "-s", SECRET)
    with dispy.JobCluster(square, nodes=[("127.0.0.1", node.port)], port=0,
                          secret=SECRET) as cluster:
        assert [cluster.submit(x)() for x in range(5)] == [0, 1, 4, 9, 16]
        time.sleep(0.5)
        assert lanes_of(cluster) == []


def test_a_busy_job_process_takes_a_lane(node_factory, monkeypatch):
    """A program that keeps a node busy (as with big jobs) still gets its lanes: the
    process reads it once the jobs sent to it are done."""
    monkeypatch.setattr(lanes, "ENABLED", False)  # (only the lane asked for here)
    node = node_factory("-c", "1", "-s", SECRET)
    with dispy.JobCluster(sleeps, nodes=[("127.0.0.1", node.port)], port=0,
                          secret=SECRET) as cluster:
        assert cluster.submit(0)() == 0
        job = cluster.submit(1.0)
        deadline = time.monotonic() + 10
        while job.status != dispy.DispyJob.Running:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.2)  # (running in its process)
        own = cluster._engine.session_key
        assert _lane_attempt(node.port, own, cluster._state.cid) == "lane_ready"
        assert job() == 1.0  # (the lane, closed meanwhile, is dropped after the job)
        assert cluster.submit(0.01)() == 0.01  # the process serves on


def test_a_job_on_a_lane_is_cancelled(node_factory):
    with one_lane(node_factory, sleeps, 0) as (cluster, lane):
        job = cluster.submit(60)
        deadline = time.monotonic() + 10
        while lane.uid is None or job.status != dispy.DispyJob.Running:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.3)  # (running in its process)
        assert cluster.cancel(job) == 0
        job(timeout=20)
        assert job.status == dispy.DispyJob.Cancelled, (job.status, job.exception)
        assert cluster.submit(0.01)() == 0.01  # the process serves on


def test_a_lane_job_whose_process_dies_ends_once(node_factory):
    node = node_factory("-c", "1", "-s", SECRET)
    ends: list[int] = []

    def callback(job):
        if job.status in (dispy.DispyJob.Finished, dispy.DispyJob.Terminated,
                          dispy.DispyJob.Cancelled, dispy.DispyJob.Abandoned):
            ends.append(job.id)

    with dispy.JobCluster(dies, nodes=[("127.0.0.1", node.port)], port=0, secret=SECRET,
                          callback=callback) as cluster:
        assert cluster.submit(0)() == 0
        wait_lanes(cluster, 1)
        job = cluster.submit_job_id("dying", 1)
        job(timeout=30)
        assert job.status == dispy.DispyJob.Terminated, (job.status, job.exception)
        assert "SIGKILL" in (job.exception or ""), job.exception
        assert cluster.submit(0)(timeout=30) == 0  # another process took over
        cluster.wait(timeout=10)
    assert ends.count("dying") == 1, ends


def test_service_end_gives_a_lane_job_back_to_run_elsewhere(node_factory, tmp_path,
                                                            monkeypatch):
    """As a job of the daemon's way (test_node_operator.py): killed when the window
    ends, and run again on another node (reentrant), never ended twice."""
    from conftest import free_port, wait_started
    from test_node_operator import set_clock, until, wait_for_file, windowed_node

    windowed, clock = windowed_node(node_factory, tmp_path, monkeypatch)
    other_port = free_port()
    statuses: list[int] = []
    cluster = dispy.JobCluster(wait_for_file, port=0, reentrant=True,
                               callback=lambda job: statuses.append(job.status),
                               nodes=[("127.0.0.1", windowed.port), ("127.0.0.1", other_port)])
    try:
        (tmp_path / "quick").touch()
        assert cluster.submit(str(tmp_path / "quick"), "x")() == "x"
        (lane,) = wait_lanes(cluster, 1)
        statuses.clear()
        job = cluster.submit(str(tmp_path / "go"))
        wait_started(job)
        assert lane.uid == job._uid  # (it went on the lane)
        node_factory("-c", "1", "--name", "always", port=other_port)
        set_clock(clock, 12, 30)
        windowed.wait_for("killed at service end")
        until(lambda: statuses.count(dispy.DispyJob.ProvisionalResult) == 2,
              "the job to start again on the other node")
        (tmp_path / "go").touch()
        assert job() == "always"
        assert job.status == dispy.DispyJob.Finished
        until(lambda: dispy.DispyJob.Finished in statuses, "its callback")
        cluster.wait(timeout=10)
        assert statuses.count(dispy.DispyJob.Finished) == 1
    finally:
        cluster.close(timeout=10, terminate=True)


def _lane_attempt(port: int, session: str, cid: str, secret: str = SECRET) -> str:
    """Ask a node for a lane as a stranger would; what came of it."""
    async def attempt() -> str:
        from dispy.wire.connection import Connection

        conn = await Connection.open("127.0.0.1", port)
        try:
            await client_handshake(conn, secret, {"client_id": "x", "client_name": "x",
                                                  "session": session, "lane": cid},
                                   5.0, Limits(max_buffer=FULL.max_buffer))
            header, _ = await conn.recv(3.0)
            return str(header.get("op"))
        except (ConnectionClosed, asyncio.TimeoutError, OSError) as exc:
            return f"refused: {type(exc).__name__}"
        finally:
            conn.close()

    return asyncio.run(attempt())


def test_no_lane_for_another_session_or_cluster(node_factory, monkeypatch):
    monkeypatch.setattr(lanes, "PER_NODE", 1)  # (the program's own leave one process)
    node = node_factory("-c", "2", "-s", SECRET)
    with dispy.JobCluster(square, nodes=[("127.0.0.1", node.port)], port=0,
                          secret=SECRET) as cluster:
        assert cluster.submit(2)() == 4
        wait_lanes(cluster, 1)
        cid = cluster._state.cid
        # another session naming this program's cluster: no such computation there
        assert _lane_attempt(node.port, new_session_key(), cid).startswith("refused")
        # this program's session, a cluster it does not have: refused, with the reason
        own = cluster._engine.session_key
        assert _lane_attempt(node.port, own, "0" * 32) == "lane_refused"
        # the program's own session and cluster (what a lane is for): served
        assert _lane_attempt(node.port, own, cid) == "lane_ready"
        assert cluster.submit(3)() == 9


def test_a_tampered_lane_is_closed_and_its_process_serves_on(node_factory):
    with one_lane(node_factory, square, 2) as (cluster, lane):
        pid = lane.pid
        # a record whose tag does not match (as an attacker on the path would write)
        sock = lane.conn.transport.get_extra_info("socket")
        os.write(sock.fileno(), (64).to_bytes(8, "big") + b"\0" * 96)
        deadline = time.monotonic() + 10
        while lanes_of(cluster):
            assert time.monotonic() < deadline, "the lane stayed open"
            time.sleep(0.02)
        assert cluster.submit(5)() == 25
        (again,) = wait_lanes(cluster, 1)
        assert again.pid == pid  # the same process: it dropped the lane, not itself
        assert cluster.submit(6)() == 36


def slow_echo(data, seconds):
    import time

    time.sleep(seconds)
    return data


def test_a_lane_job_cancelled_before_its_process_takes_it_ends_cancelled(node_factory):
    """A big job waits on the lane behind the daemon's job there: the node learns of it
    only when the process takes it, and applies the program's cancel then."""
    node = node_factory("-c", "1", "-s", SECRET)
    with dispy.JobCluster(slow_echo, nodes=[("127.0.0.1", node.port)], port=0,
                          secret=SECRET) as cluster:
        for _ in range(5):  # (short jobs: the program sends the node jobs ahead)
            assert cluster.submit(b"x", 0)() == b"x"
        (lane,) = wait_lanes(cluster, 1)
        first = cluster.submit(b"", 2, dispy_job_timeout=60)  # (an option: the daemon's way)
        deadline = time.monotonic() + 10
        while first.status != dispy.DispyJob.Running:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        big = cluster.submit(os.urandom(2 << 20), 20)
        while lane.uid != big._uid:
            assert time.monotonic() < deadline, "the big job did not go on the lane"
            time.sleep(0.01)
        assert cluster.cancel(big) == 0
        big(timeout=60)
        assert big.status == dispy.DispyJob.Cancelled, (big.status, big.exception)
        assert first() == b""
        assert cluster.submit(b"y", 0)() == b"y"  # the process serves on
