"""Jobs sent ahead to a node (prefetch, for short jobs) keep the job semantics: they can
be cancelled while they wait on the node, and a node that dies with them ends or
resubmits each exactly once."""

from __future__ import annotations

import os
import signal
import time

import pytest
from conftest import wait_started

import dispy

pytestmark = pytest.mark.timeout(90)


def work(x, flag=None):
    """Quick for x < 0; else report start, then run until ``flag`` exists or x seconds."""
    if x < 0:
        return x
    dispy_provisional_result("started")  # noqa: F821 (bound on the node)
    deadline = time.time() + x
    while time.time() < deadline and not (flag and os.path.exists(flag)):
        time.sleep(0.05)
    return x


def _warm(cluster, n=10):
    """Short jobs make the client send jobs ahead to the node."""
    assert [cluster.submit(-1)() for _ in range(n)] == [-1] * n


def test_cancel_job_waiting_on_node(node_factory):
    node = node_factory("-c", "1")
    with dispy.JobCluster(work, nodes=["127.0.0.1"], node_port=node.port, port=0) as cluster:
        _warm(cluster)
        first = cluster.submit(5)
        wait_started(first)
        waiting = cluster.submit(30)
        deadline = time.monotonic() + 10
        while waiting.status != dispy.DispyJob.Running:  # sent to the node, waits there
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert waiting in cluster.node_jobs("127.0.0.1")
        assert cluster.cancel(waiting) == 0
        assert waiting() is None
        assert waiting.status == dispy.DispyJob.Cancelled
        assert first.status == dispy.DispyJob.ProvisionalResult  # still running
        assert first() == 5 and first.status == dispy.DispyJob.Finished
        assert cluster.submit(-1)() == -1


@pytest.mark.parametrize("reentrant", [True, False])
def test_node_dies_with_jobs_waiting_on_it(node_factory, tmp_path, reentrant):
    node = node_factory("-c", "1")
    flag = str(tmp_path / "go")
    finals: dict = {}

    def callback(job):
        if job.status in (dispy.DispyJob.Finished, dispy.DispyJob.Cancelled,
                          dispy.DispyJob.Terminated, dispy.DispyJob.Abandoned):
            finals.setdefault(job.id, []).append(job.status)

    other = node_factory("-c", "2", wait=False)
    other.stop(signal.SIGKILL)  # its port is known; it comes up after the first dies
    cluster = dispy.JobCluster(work, nodes=[("127.0.0.1", node.port), ("127.0.0.1", other.port)],
                               port=0, reentrant=reentrant, pulse_interval=1,
                               callback=callback)
    try:
        _warm(cluster)
        jobs = [cluster.submit(60, flag) for _ in range(3)]
        deadline = time.monotonic() + 10
        while any(j.status not in (dispy.DispyJob.Running, dispy.DispyJob.ProvisionalResult)
                  for j in jobs):  # one runs, two wait on the node
            assert time.monotonic() < deadline
            time.sleep(0.02)
        node.stop(signal.SIGKILL)
        again = node_factory("-c", "2", port=other.port)
        open(flag, "w").close()  # the resubmitted jobs end at once on the new node
        for job in jobs:
            job()
        assert cluster.wait(30)
        want = dispy.DispyJob.Finished if reentrant else dispy.DispyJob.Cancelled
        assert [j.status for j in jobs] == [want] * 3
        if reentrant:
            assert [j.result for j in jobs] == [60] * 3
            assert {j.ip_addr for j in jobs} == {"127.0.0.1"}
        cluster.close()
        for job in jobs:
            assert finals.get(job.id) == [want], finals
        again.stop()
    finally:
        cluster.close(timeout=0, terminate=True)


def test_big_arguments_are_not_sent_ahead(node_factory, tmp_path):
    """Megabytes waiting on a node would only take its memory: a job with big arguments
    is sent when a CPU is free, not ahead."""
    node = node_factory("-c", "1")
    flag = str(tmp_path / "go")
    with dispy.JobCluster(work, nodes=["127.0.0.1"], node_port=node.port, port=0) as cluster:
        _warm(cluster)
        first = cluster.submit(60, flag)
        wait_started(first)
        big = cluster.submit(-1, b"x" * 2_000_000)
        time.sleep(0.5)
        assert big.status == dispy.DispyJob.Created  # kept by the client
        open(flag, "w").close()
        assert first() == 60 and big() == -1
