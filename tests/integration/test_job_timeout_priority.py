"""dispy_job_timeout (enforced by the node) and dispy_job_priority (the client's queue, or
dispyscheduler's) against real dispynodes and a real dispyscheduler."""

from __future__ import annotations

import time

import pytest

import dispy
from tests.conftest import wait_started

pytestmark = pytest.mark.timeout(120)


def sleeper(seconds, stubborn=False):
    import time

    dispy_provisional_result("started")  # noqa: F821 (given by the node)
    try:
        time.sleep(seconds)
    except KeyboardInterrupt:
        if not stubborn:
            raise
        return "caught the interrupt"
    return seconds


def started_at(tag, seconds=0.05):
    import time

    start = time.time()
    time.sleep(seconds)
    return tag, start


def local(node, computation, **kw):
    return dispy.JobCluster(computation, nodes=["127.0.0.1"], node_port=node.port, port=0,
                            **kw)


def shared(sched, node, computation):
    return dispy.SharedJobCluster(computation, nodes=[dispy.NodeAllocate("127.0.0.1",
                                                                         node.port)],
                                  scheduler_node="127.0.0.1", scheduler_port=sched.port)


def check_timeouts(cluster):
    start = time.monotonic()
    late = cluster.submit(30, dispy_job_timeout=1)
    stubborn = cluster.submit(30, True, dispy_job_timeout=1.5)
    quick = cluster.submit(0.1, dispy_job_timeout=20)
    assert quick() == 0.1 and quick.status == dispy.DispyJob.Finished
    late()
    assert late.status == dispy.DispyJob.Terminated
    assert late.exception == "timed out after 1 s"
    assert time.monotonic() - start < 10
    # a job that catches the interrupt and returns still ends Terminated
    stubborn()
    assert stubborn.status == dispy.DispyJob.Terminated
    assert stubborn.exception == "timed out after 1.5 s"
    with pytest.raises(dispy.JobError, match="timed out after 1 s"):
        late.future.result()
    assert cluster.submit(1, dispy_job_timeout=-1) is None
    assert cluster.submit(1, dispy_job_timeout="soon") is None
    assert cluster.submit(1, dispy_job_priority=1.5) is None


def test_timeout_jobcluster(node):
    with local(node, sleeper) as cluster:
        check_timeouts(cluster)


def test_timeout_through_dispyscheduler(scheduler_factory, node):
    sched = scheduler_factory()
    with shared(sched, node, sleeper) as cluster:
        check_timeouts(cluster)


def check_priorities(cluster, blocker_cluster=None):
    blocker = (blocker_cluster or cluster).submit(0.5)
    assert blocker() == 0.5  # a longer job first: jobs are not sent ahead to the node
    blocker = (blocker_cluster or cluster).submit(2.0)
    wait_started(blocker)
    plan = [("low1", 0), ("high1", 5), ("mid", 1), ("low2", 0), ("high2", 5), ("neg", -3)]
    jobs = [cluster.submit(tag, dispy_job_priority=prio) for tag, prio in plan]
    results = [job() for job in jobs]
    assert all(job.status == dispy.DispyJob.Finished for job in jobs), jobs
    order = [tag for tag, _ in sorted(results, key=lambda r: r[1])]
    assert order == ["high1", "high2", "mid", "low1", "low2", "neg"]


def test_priority_jobcluster(node_factory):
    node = node_factory("-c", "1")
    with local(node, started_at) as cluster, local(node, sleeper) as blockers:
        check_priorities(cluster, blockers)


def test_priority_through_dispyscheduler(scheduler_factory, node_factory):
    node = node_factory("-c", "1")
    sched = scheduler_factory()
    with shared(sched, node, started_at) as cluster, shared(sched, node, sleeper) as blockers:
        check_priorities(cluster, blockers)
