"""Job processes talk to the node daemon directly; the computation host only forks,
signals and reaps them. Whatever happens to either, every job ends once, with a reason,
and the node goes on serving."""

from __future__ import annotations

import os
import socket
import stat
import time

import psutil
import pytest
from conftest import wait_started

import dispy
from dispy.wire.sync import send_frame_sync

pytestmark = pytest.mark.timeout(90)


def fate(x):
    """0: the process exits; 1: it is killed; 2: it ignores KeyboardInterrupt; else x."""
    import os
    import signal
    import time
    if x == 0:
        os._exit(3)
    if x == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    if x == 2:
        dispy_provisional_result("started")  # noqa: F821 (bound on the node)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                time.sleep(0.05)
            except KeyboardInterrupt:
                pass
    if x == 3:
        dispy_provisional_result("started")  # noqa: F821
        time.sleep(60)
    return x


def make(node, computation, **kw):
    return dispy.JobCluster(computation, nodes=["127.0.0.1"], node_port=node.port, port=0, **kw)


def test_dying_job_process_ends_its_job_and_is_replaced(node):
    with make(node, fate) as cluster:
        exits, killed = cluster.submit(0), cluster.submit(1)
        assert exits() is None and killed() is None
        assert [cluster.submit(x)() for x in range(10, 16)] == list(range(10, 16))
    assert exits.status == dispy.DispyJob.Terminated
    assert "exited with code 3" in exits.exception
    assert killed.status == dispy.DispyJob.Terminated
    assert "killed by signal SIGKILL" in killed.exception


def test_cancelled_processes_take_new_jobs_after_settling(node_factory):
    """A job that swallows KeyboardInterrupt is escalated to SIGTERM; one that does not
    ends at once and its process runs the next jobs."""
    node = node_factory("-c", "1")
    with make(node, fate) as cluster:
        polite = cluster.submit(3)
        wait_started(polite)
        assert cluster.cancel(polite) == 0
        assert polite() is None and polite.status == dispy.DispyJob.Cancelled
        assert [cluster.submit(x)() for x in (20, 21, 22)] == [20, 21, 22]
        stubborn = cluster.submit(2)
        wait_started(stubborn)
        assert cluster.cancel(stubborn) == 0
        assert stubborn() is None and stubborn.status == dispy.DispyJob.Cancelled
        assert "SIGTERM" in stubborn.exception
        assert [cluster.submit(x)() for x in (30, 31)] == [30, 31]


def _host_of(node) -> psutil.Process:
    deadline = time.monotonic() + 15
    while True:
        for child in psutil.Process(node.proc.pid).children():
            if "dispy.node.host" in " ".join(child.cmdline()):
                return child
        assert time.monotonic() < deadline, "no computation host"
        time.sleep(0.05)


def slow(x, flag):
    import os
    import time
    dispy_provisional_result("started")  # noqa: F821
    while not os.path.exists(flag):
        time.sleep(0.02)
    return x


def test_host_killed_running_jobs_report_then_node_is_free(node, tmp_path):
    flag = str(tmp_path / "go")
    cluster = make(node, slow)
    try:
        jobs = [cluster.submit(i, flag) for i in range(4)]
        wait_started(jobs[0])
        wait_started(jobs[1])
        _host_of(node).kill()
        deadline = time.monotonic() + 15
        while "computation host exited" not in node.log.read_text():
            assert time.monotonic() < deadline, node.log.read_text()
            time.sleep(0.05)
        open(flag, "w").close()
        assert jobs[0]() == 0 and jobs[1]() == 1  # their processes outlived the host
    finally:
        cluster.close(timeout=5, terminate=True)
    for job in jobs[2:]:  # never sent again to a node that lost the computation
        assert job() is None and job.status == dispy.DispyJob.Cancelled
    with make(node, lambda x: x + 1) as again:  # the node was freed
        assert again.submit(1)() == 2


def test_job_socket_is_private_and_refuses_strangers(node):
    with make(node, fate) as cluster:
        assert cluster.submit(5)() == 5
        paths = [c.laddr for c in psutil.Process(node.proc.pid).net_connections("unix")
                 if c.laddr and c.laddr.endswith("/jobs")]
        assert paths, "no job socket"
        assert stat.S_IMODE(os.stat(paths[0]).st_mode) == 0o600
        for hello in ({"op": "hello", "token": "wrong", "pid": os.getpid()},
                      {"op": "done", "uid": "x"}):
            with socket.socket(socket.AF_UNIX) as sock:
                sock.connect(paths[0])
                send_frame_sync(sock, hello)
                sock.settimeout(10)
                assert sock.recv(1) == b""  # dropped
        assert [cluster.submit(x)() for x in (6, 7)] == [6, 7]
