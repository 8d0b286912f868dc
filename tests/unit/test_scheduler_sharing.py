"""SchedulerCore as dispyscheduler uses it: several clusters on the same nodes, exclusive
clusters, and the fifo / fair policies between clusters. No network."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispy.scheduling import SchedulerCore

pytestmark = pytest.mark.timeout(30)


def shared(policy="fifo", nodes=None):
    core = SchedulerCore(policy)
    for key, cpus in (nodes or {"n1": 2, "n2": 2}).items():
        core.set_node(key, cpus)
    return core


def ready_everywhere(core, cid):
    for key in list(core.nodes()):
        core.node_ready(cid, key, 100)


def test_jobs_of_two_clusters_run_on_one_node_at_once():
    core = shared(nodes={"n1": 2})
    for cid in ("A", "B"):
        assert core.add_cluster(cid)
        ready_everywhere(core, cid)
    core.submit("A", "a1")
    core.submit("B", "b1")
    out = core.dispatch()
    assert sorted((job, cid, key) for job, cid, key in out) == [
        ("a1", "A", "n1"), ("b1", "B", "n1")]


def test_fifo_serves_earliest_job_over_all_clusters():
    core = shared(nodes={"n1": 1})
    for cid in ("A", "B"):
        core.add_cluster(cid)
        ready_everywhere(core, cid)
    for i in range(3):
        core.submit("A", f"a{i}")
    core.submit("B", "b0")
    order = []
    for _ in range(4):
        (job, _, _), = core.dispatch()
        order.append(job)
        core.finished(job)
    assert order == ["a0", "a1", "a2", "b0"]


def test_fair_gives_each_busy_cluster_its_share():
    core = shared("fair", nodes={"n1": 2, "n2": 2})
    for cid in ("A", "B"):
        core.add_cluster(cid)
        ready_everywhere(core, cid)
    for i in range(10):
        core.submit("A", f"a{i}")  # A submitted everything first
    for i in range(10):
        core.submit("B", f"b{i}")
    out = core.dispatch()
    assert Counter(cid for _, cid, _ in out) == {"A": 2, "B": 2}
    assert core.running("A") == core.running("B") == 2
    # as jobs end, the shares stay equal
    for job, _, _ in out:
        core.finished(job)
    assert Counter(cid for _, cid, _ in core.dispatch()) == {"A": 2, "B": 2}


def test_fair_lets_one_cluster_use_cpus_the_other_does_not_need():
    core = shared("fair", nodes={"n1": 4})
    for cid in ("A", "B"):
        core.add_cluster(cid)
        ready_everywhere(core, cid)
    for i in range(10):
        core.submit("A", f"a{i}")
    core.submit("B", "b0")
    assert Counter(cid for _, cid, _ in core.dispatch()) == {"A": 3, "B": 1}


def test_exclusive_cluster_waits_then_has_every_node():
    core = shared()
    assert core.add_cluster("A")
    ready_everywhere(core, "A")
    assert not core.add_cluster("X", exclusive=True)
    assert not core.admitted("X")
    assert core.waiting_for("X") == ["A"]
    # a cluster arriving after the exclusive one waits behind it (no starvation)
    assert not core.add_cluster("B")
    assert core.waiting_for("B") == ["A", "X"]
    core.submit("A", "a0")
    (job, _, _), = core.dispatch()
    core.finished(job)  # a cluster closes after its jobs ended
    assert core.remove_cluster("A") == []
    assert core.admit() == ["X"]
    assert core.admitted("X") and not core.admitted("B")
    ready_everywhere(core, "X")
    for i in range(4):
        core.submit("X", f"x{i}")
    out = core.dispatch()
    assert {cid for _, cid, _ in out} == {"X"} and len(out) == 4
    core.remove_cluster("X")
    assert core.admit() == ["B"]


def test_exclusive_cluster_admitted_at_once_when_nothing_runs():
    core = shared()
    assert core.add_cluster("X", exclusive=True)
    assert not core.add_cluster("A")
    core.remove_cluster("X")
    assert core.admit() == ["A"]


def test_waiting_cluster_removed_before_admission():
    core = shared()
    core.add_cluster("A")
    core.add_cluster("X", exclusive=True)
    core.add_cluster("B")
    core.remove_cluster("X")  # its client closed while it waited
    assert core.admit() == ["B"]
    assert core.admitted("A") and core.admitted("B")


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="fifo, fair"):
        SchedulerCore("random")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["add", "add_x", "remove"]),
                          st.integers(0, 5)), max_size=40))
def test_admission_invariants(ops):
    """At most one exclusive cluster is admitted and then alone; arrival order is kept."""
    core = SchedulerCore()
    present: list[str] = []
    exclusive: set[str] = set()
    names = itertools.count()
    for op, n in ops:
        if op == "remove" and present:
            cid = present.pop(n % len(present))
            core.remove_cluster(cid)
            core.admit()
        elif op != "remove":
            cid = f"c{next(names)}"
            present.append(cid)
            if op == "add_x":
                exclusive.add(cid)
            core.add_cluster(cid, exclusive=op == "add_x")
        admitted = [cid for cid in present if core.admitted(cid)]
        if any(cid in exclusive for cid in admitted):
            assert len(admitted) == 1
        # admitted clusters are a prefix of the arrival order
        assert admitted == present[:len(admitted)]
        # nothing waits when nothing runs
        if present:
            assert admitted


def test_early_serves_the_cluster_created_first():
    """4.15's --early_cluster_scheduler: jobs of the earliest-created cluster go first,
    even when a later cluster submitted earlier."""
    core = shared("early", nodes={"n1": 1})
    for cid in ("A", "B"):
        core.add_cluster(cid)
        ready_everywhere(core, cid)
    core.submit("B", "b0")
    core.submit("B", "b1")
    core.submit("A", "a0")
    order = []
    for _ in range(3):
        (job, _, _), = core.dispatch()
        order.append(job)
        core.finished(job)
    assert order == ["a0", "b0", "b1"]
