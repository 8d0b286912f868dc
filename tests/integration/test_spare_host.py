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
