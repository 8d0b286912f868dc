"""Callbacks, cancel, wait and close against a real node."""

from __future__ import annotations

import threading
import time

import pytest
from conftest import wait_started

import dispy

pytestmark = pytest.mark.timeout(90)


def make(node, computation, **kw):
    return dispy.JobCluster(computation, nodes=["127.0.0.1"], node_port=node.port, port=0, **kw)


def slow(x):
    time.sleep(x)
    return x


def test_callback_sees_each_jobs_end_in_the_client_thread(node):
    """As in dispy 4.15: the job callback hears of results (provisional and final), not
    of Created and Running (cluster_status does)."""
    seen = []
    threads = set()

    def callback(job):
        seen.append((job.id, job.status))
        threads.add(threading.current_thread().name)

    with make(node, slow, callback=callback) as cluster:
        jobs = [cluster.submit(0.05) for _ in range(3)]
        for job in jobs:
            job()
        cluster.wait()
    for job in jobs:
        statuses = [s for i, s in seen if i == job.id]
        assert statuses == [dispy.DispyJob.Finished]
    assert threads == {"dispy-callbacks"}


def test_cluster_status_reports_nodes_and_jobs(node):
    events = []

    def status(st, node_, job):
        events.append((st, node_.ip_addr if node_ else None, job.id if job else None))

    cluster = make(node, slow, cluster_status=status)
    job = cluster.submit(0)
    job()
    cluster.close()
    kinds = [e[0] for e in events]
    assert kinds[0] == dispy.DispyJob.Created
    assert dispy.DispyNode.Initialized in kinds and kinds[-1] == dispy.DispyNode.Closed
    assert (dispy.DispyJob.Finished, "127.0.0.1", job.id) in events


def test_callback_exception_does_not_stop_cluster(node):
    def callback(job):
        raise RuntimeError("callback bug")

    with make(node, slow, callback=callback) as cluster:
        assert [cluster.submit(0)() for _ in range(3)] == [0, 0, 0]


def slow_started(x):
    dispy_provisional_result("started")  # noqa: F821
    time.sleep(x)
    return x


def test_cancel_queued_and_running(node):
    with make(node, slow_started) as cluster:
        running = [cluster.submit(30) for _ in range(2)]
        queued = cluster.submit(30)
        for job in running:  # "Running" is sent to the node: wait until they really run
            wait_started(job)
        assert cluster.cancel(queued) == 0
        assert queued() is None and queued.status == dispy.DispyJob.Cancelled
        for job in running:
            assert cluster.cancel(job) == 0
        for job in running:
            job()
            assert job.status == dispy.DispyJob.Cancelled
            assert "KeyboardInterrupt" in job.exception
        assert cluster.cancel(queued) == -1


def catches_interrupt(x):
    try:
        dispy_provisional_result("started")  # noqa: F821
        time.sleep(x)
    except KeyboardInterrupt:
        return "interrupted"
    return "slept"


def test_cancel_raises_keyboard_interrupt_in_job(node):
    with make(node, catches_interrupt) as cluster:
        job = cluster.submit(30)
        wait_started(job)
        cluster.cancel(job)
        assert job() == "interrupted" and job.status == dispy.DispyJob.Finished


def ignores_interrupt(x):
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    dispy_provisional_result("started")  # noqa: F821
    time.sleep(x)
    return "done"


def test_cancel_escalates_to_sigterm(node):
    with make(node, ignores_interrupt) as cluster:
        job = cluster.submit(60)
        wait_started(job)
        cancelled_at = time.time()
        cluster.cancel(job)
        assert job() is None
        assert job.status == dispy.DispyJob.Cancelled and "SIGTERM" in job.exception
        assert job.start_time < cancelled_at  # when it started, not when it ended
        assert cluster.submit(0)() == "done"  # the node replaced the job process


def test_wait_timeout_and_close_terminate(node):
    cluster = make(node, slow)
    jobs = [cluster.submit(30) for _ in range(3)]
    assert cluster.wait(timeout=0.5) is False
    assert cluster.close(timeout=0.5) is False
    assert cluster.close(timeout=0.5, terminate=True) is True
    for job in jobs:
        assert job() is None and job.status == dispy.DispyJob.Cancelled


def test_submit_node_pins_jobs(node):
    nodes = []

    def status(st, n, job):
        if st == dispy.DispyNode.Initialized:
            nodes.append(n)

    with make(node, slow, cluster_status=status) as cluster:
        cluster.submit(0)()
        cluster.wait()  # callbacks (cluster_status too) ran when it returns
        assert nodes
        job = cluster.submit_node(nodes[0], 0)
        assert job() == 0 and job.ip_addr == "127.0.0.1"
        job = cluster.submit_node("127.0.0.1", 0)
        assert job() == 0
        assert cluster.submit_node("10.255.255.1", 0) is None
