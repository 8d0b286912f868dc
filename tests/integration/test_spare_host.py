"""The node keeps one computation host started ahead (a spare): a new computation takes
it instead of waiting for an interpreter to start (issue 17, startup)."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

import dispy

pytestmark = pytest.mark.timeout(60)


def parent_pid(_):
    import os

    return os.getppid()  # the job process's parent: the computation host


def _hosts(node) -> list[int]:
    """The daemon's computation hosts now (a child that just ended, a zombie until the
    daemon reaps it, or is gone, is none)."""
    hosts = []
    for proc in psutil.Process(node.proc.pid).children():
        try:
            if "dispy.node.host" in " ".join(proc.cmdline()):
                hosts.append(proc.pid)
        except (psutil.ZombieProcess, psutil.NoSuchProcess):
            continue
    return hosts


def _wait_hosts(node, predicate) -> list[int]:
    deadline = time.monotonic() + 15
    while not predicate(hosts := _hosts(node)):
        assert time.monotonic() < deadline, hosts
        time.sleep(0.05)
    return hosts


def test_a_computation_takes_the_spare_and_a_new_one_is_started(node_factory):
    node = node_factory("-c", "1")
    [spare] = _wait_hosts(node, lambda h: len(h) == 1)
    with dispy.JobCluster(parent_pid, nodes=["127.0.0.1"], node_port=node.port,
                          port=0) as cluster:
        assert cluster.submit(0)() == spare
        hosts = _wait_hosts(node, lambda h: len(h) == 2)  # the computation's and a spare
        assert spare in hosts
    [again] = _wait_hosts(node, lambda h: len(h) == 1)
    assert again != spare


def test_a_killed_node_leaves_no_spare_behind(node_factory):
    node = node_factory("-c", "1")
    [spare] = _wait_hosts(node, lambda h: len(h) == 1)
    os.kill(node.proc.pid, signal.SIGKILL)  # the daemon only: its spare sees EOF
    node.proc.wait(10)
    deadline = time.monotonic() + 15
    while psutil.pid_exists(spare) and psutil.Process(spare).status() != "zombie":
        assert time.monotonic() < deadline, "the spare host outlived its daemon"
        time.sleep(0.05)


def slow_setup():
    import time

    time.sleep(2.0)  # longer than the node's --msg_timeout
    return 0


def test_a_setup_longer_than_msg_timeout_gets_its_job_processes_as_expected(node_factory):
    """The node expects a job process per CPU from the host as setup ends; the time they
    have (--msg_timeout) counts from then, not from the host's start, and no more are
    asked for than it has CPUs."""
    node = node_factory("-c", "2", "--msg_timeout", "1")
    with dispy.JobCluster(os.getpid, nodes=["127.0.0.1"], node_port=node.port, port=0,
                          setup=slow_setup) as cluster:
        jobs = [cluster.submit() for _ in range(20)]
        pids = {job() for job in jobs}
        assert all(job.status == dispy.DispyJob.Finished for job in jobs)
        assert len(pids) <= 2, pids
    # (a clock started with the host runs out during setup: the warning is there by now)
    assert "not started in" not in node.output(), node.output()
