"""SchedulerCore priorities: higher first, FIFO within a priority, over clusters (fifo),
within a cluster (fair), for pinned jobs, with cancellation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispy.scheduling import SchedulerCore

pytestmark = pytest.mark.timeout(30)


def one_cpu(policy="fifo", clusters=("A",)):
    core = SchedulerCore(policy)
    core.set_node("n", 1)
    for cid in clusters:
        core.add_cluster(cid)
        core.node_ready(cid, "n", 1)
    return core


def run_all(core):
    order = []
    while True:
        batch = core.dispatch()
        if not batch:
            return order
        for job, _, _ in batch:
            order.append(job)
            core.finished(job)


def test_higher_priority_first_fifo_within():
    core = one_cpu()
    for job, prio in [("a", 0), ("b", 5), ("c", 0), ("d", 5), ("e", -1), ("f", 9)]:
        core.submit("A", job, priority=prio)
    assert run_all(core) == ["f", "b", "d", "a", "c", "e"]


def test_priority_across_clusters_fifo_policy():
    core = one_cpu(clusters=("A", "B"))
    core.submit("A", "a1")
    core.submit("B", "b1", priority=1)
    core.submit("A", "a2", priority=1)
    assert run_all(core) == ["b1", "a2", "a1"]


def test_fair_policy_shares_first_then_priority_within_cluster():
    core = SchedulerCore("fair")
    core.set_node("n", 2)
    for cid in ("A", "B"):
        core.add_cluster(cid)
        core.node_ready(cid, "n", 2)
    core.submit("A", "a-low")
    core.submit("A", "a-high", priority=3)
    core.submit("B", "b1")
    first = [job for job, _, _ in core.dispatch()]
    # one job of each cluster; A's is its highest priority one
    assert sorted(first) == ["a-high", "b1"]


def test_cancelled_and_queued_counts_with_priorities():
    core = one_cpu()
    for job, prio in [("a", 1), ("b", 2), ("c", 1)]:
        core.submit("A", job, priority=prio)
    assert core.queued("A") == 3
    assert core.cancel("b")
    assert core.queued("A") == 2
    assert run_all(core) == ["a", "c"]
    assert core.remove_cluster("A") == []


def test_remove_cluster_returns_queued_of_every_priority():
    core = SchedulerCore()
    core.add_cluster("A")
    core.submit("A", "x", priority=2)
    core.submit("A", "y")
    assert sorted(core.remove_cluster("A")) == ["x", "y"]


def test_pinned_jobs_by_priority():
    core = one_cpu()
    core.submit("A", "p1", node="n")
    core.submit("A", "p2", node="n", priority=4)
    core.submit("A", "p3", node="n")
    core.submit("A", "q", priority=10)  # pinned jobs still go first
    assert run_all(core) == ["p2", "p1", "p3", "q"]


@given(st.lists(st.integers(-3, 3), max_size=40))
def test_order_is_priority_then_submission(prios):
    core = one_cpu()
    for i, prio in enumerate(prios):
        core.submit("A", i, priority=prio)
    expected = sorted(range(len(prios)), key=lambda i: (-prios[i], i))
    assert run_all(core) == expected
