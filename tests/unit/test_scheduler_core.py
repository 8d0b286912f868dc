"""SchedulerCore: ordering, CPU accounting, spreading, pinning, and a model-based check."""

from __future__ import annotations

import itertools
import random
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from dispy.scheduling import SchedulerCore

pytestmark = pytest.mark.timeout(30)


def core_with(nodes, clusters=("A",), alloc=None):
    """nodes: {key: cpus}; every cluster is ready on every node with ``alloc`` (default: all)."""
    core = SchedulerCore()
    for cid in clusters:
        core.add_cluster(cid)
    for key, cpus in nodes.items():
        core.set_node(key, cpus)
        for cid in clusters:
            core.node_ready(cid, key, cpus if alloc is None else alloc)
    return core


def drain(core):
    """Dispatch, finish everything that runs, repeat; returns the dispatch order."""
    order = []
    while True:
        out = core.dispatch()
        if not out:
            return order
        order += out
        for job, _, _ in out:
            core.finished(job)


# ---- ordering ------------------------------------------------------------------------


def test_fifo_across_clusters_by_submission_order():
    core = core_with({"n": 1}, clusters=("A", "B", "C"))
    for job, cid in [("a1", "A"), ("b1", "B"), ("a2", "A"), ("c1", "C"), ("b2", "B")]:
        core.submit(cid, job)
    assert [job for job, _, _ in drain(core)] == ["a1", "b1", "a2", "c1", "b2"]


def test_fifo_when_several_cpus_free():
    core = core_with({"n": 3}, clusters=("A", "B"))
    for job, cid in [("b1", "B"), ("a1", "A"), ("b2", "B"), ("a2", "A")]:
        core.submit(cid, job)
    out = core.dispatch()
    assert [job for job, _, _ in out] == ["b1", "a1", "b2"]
    assert all(key == "n" for _, _, key in out)
    assert core.queued("A") == 1 and core.queued("B") == 0


def test_backlog_says_whether_jobs_of_a_cluster_wait():
    """(a job takes a lane only with none of its cluster waiting: client/lanes.py)"""
    core = core_with({"n": 1}, clusters=("A", "B"))
    assert not core.backlog("A") and not core.backlog("Z")
    core.submit("A", "a1")
    core.submit("A", "a2")
    assert core.backlog("A") and not core.backlog("B")
    core.dispatch()
    assert core.backlog("A")  # a2 waits for the CPU
    core.cancel("a2")
    assert not core.backlog("A")  # (cancelled: not waiting)
    core.finished("a1")
    core.submit("A", "a3")
    core.dispatch()
    assert not core.backlog("A")


def test_dispatch_reports_cluster_and_node():
    core = core_with({"n": 1}, clusters=("A", "B"))
    core.submit("B", "j")
    assert core.dispatch() == [("j", "B", "n")]
    assert core.running_on("n") == ["j"]
    assert core.dispatch() == []


# ---- CPU limits ----------------------------------------------------------------------


def test_node_cpus_never_exceeded():
    core = core_with({"n": 2}, alloc=10)
    for i in range(5):
        core.submit("A", i)
    assert len(core.dispatch()) == 2
    assert core.node_busy("n") == 2
    assert core.dispatch() == []
    assert core.queued("A") == 3


def test_cluster_allocation_never_exceeded():
    core = SchedulerCore()
    core.add_cluster("A")
    core.add_cluster("B")
    core.set_node("n", 3)
    core.node_ready("A", "n", 2)
    core.node_ready("B", "n", 3)
    for i in range(5):
        core.submit("A", f"a{i}")
    for i in range(5):
        core.submit("B", f"b{i}")
    out = core.dispatch()
    assert Counter(cid for _, cid, _ in out) == {"A": 2, "B": 1}
    assert core.node_busy("n") == 3
    core.finished("b0")
    out = core.dispatch()
    assert [cid for _, cid, _ in out] == ["B"]  # A is still at its allocation of 2
    core.finished("a0")
    assert [cid for _, cid, _ in core.dispatch()] == ["A"]


def test_prefetch_sends_jobs_ahead_of_free_cpus():
    core = core_with({"n": 2})
    for i in range(6):
        core.submit("A", i)
    assert len(core.dispatch()) == 2
    core.set_prefetch("n", 2)
    assert [job for job, _, _ in core.dispatch()] == [2, 3]
    assert core.node_busy("n") == 4
    assert core.dispatch() == []
    core.finished(0)
    assert [job for job, _, _ in core.dispatch()] == [4]
    core.set_prefetch("n", 0)  # no new job until the node is below its CPUs again
    core.finished(1)
    assert core.dispatch() == []


def test_prefetch_not_for_a_cluster_limited_to_fewer_cpus():
    core = SchedulerCore()
    core.add_cluster("A")
    core.set_node("n", 2)
    core.set_prefetch("n", 2)
    core.node_ready("A", "n", 1)
    for i in range(4):
        core.submit("A", i)
    assert len(core.dispatch()) == 1  # the node would run a second one on its other CPU


def test_free_cpu_wins_over_prefetch_slot():
    core = core_with({"a": 1, "b": 1})
    core.set_prefetch("a", 1)
    core.set_prefetch("b", 1)
    core.submit("A", 0)
    core.submit("A", 1)
    assert {key for _, _, key in core.dispatch()} == {"a", "b"}


def test_prefetch_of_unknown_node_is_ignored():
    SchedulerCore().set_prefetch("nope", 3)


def test_zero_allocation_and_zero_cpus_get_nothing():
    core = SchedulerCore()
    core.add_cluster("A")
    core.set_node("zero-cpus", 0)
    core.node_ready("A", "zero-cpus", 2)
    core.set_node("zero-alloc", 2)
    core.node_ready("A", "zero-alloc", 0)
    core.submit("A", "j")
    assert core.dispatch() == []
    assert core.node_busy("zero-cpus") == core.node_busy("zero-alloc") == 0
    core.set_node("zero-cpus", 1)
    assert core.dispatch() == [("j", "A", "zero-cpus")]


def test_set_node_grows_capacity():
    core = core_with({"n": 1}, alloc=4)
    for i in range(3):
        core.submit("A", i)
    assert len(core.dispatch()) == 1
    core.set_node("n", 3)
    assert len(core.dispatch()) == 2
    assert core.node_busy("n") == 3


def test_set_node_shrinking_stops_new_jobs():
    core = core_with({"n": 3})
    for i in range(5):
        core.submit("A", i)
    assert len(core.dispatch()) == 3
    core.set_node("n", 1)
    core.finished(0)
    assert core.dispatch() == []  # 2 still run on a node that now has 1 CPU
    core.finished(1)
    core.finished(2)
    assert len(core.dispatch()) == 1


# ---- spreading -----------------------------------------------------------------------


def test_least_loaded_spreading_two_idle_nodes():
    core = core_with({"n1": 2, "n2": 2})
    core.submit("A", "j1")
    core.submit("A", "j2")
    out = core.dispatch()
    assert sorted(key for _, _, key in out) == ["n1", "n2"]


def test_spreading_uses_load_fraction():
    core = core_with({"big": 4, "small": 2})
    for i in range(3):
        core.submit("A", i)
    out = core.dispatch()
    assert Counter(key for _, _, key in out) == {"big": 2, "small": 1}


def test_spreading_prefers_idle_node():
    core = core_with({"n1": 2, "n2": 2})
    core.submit("A", "first")
    (job, _, busy_node), = core.dispatch()
    core.submit("A", "second")
    (_, _, key), = core.dispatch()
    assert key != busy_node


# ---- pinning -------------------------------------------------------------------------


def test_pinned_job_runs_only_on_its_node():
    core = core_with({"n1": 2, "n2": 2})
    core.node_unready("A", "n2")
    core.submit("A", "p", node="n2")
    assert core.dispatch() == []  # n1 is free, but p may run only on n2
    assert core.queued("A") == 1
    core.node_ready("A", "n2", 1)
    assert core.dispatch() == [("p", "A", "n2")]


def test_pinned_goes_before_unpinned():
    core = core_with({"n": 1})
    core.submit("A", "u1")
    core.submit("A", "p1", node="n")
    core.submit("A", "u2")
    assert [job for job, _, _ in drain(core)] == ["p1", "u1", "u2"]


def test_pinned_jobs_keep_their_order():
    core = core_with({"n1": 1, "n2": 1})
    for i in range(3):
        core.submit("A", f"p{i}", node="n2")
    order = drain(core)
    assert [job for job, _, _ in order] == ["p0", "p1", "p2"]
    assert {key for _, _, key in order} == {"n2"}


def test_pinned_job_respects_cluster_allocation():
    core = SchedulerCore()
    core.add_cluster("A")
    core.set_node("n", 4)
    core.node_ready("A", "n", 1)
    core.submit("A", "p1", node="n")
    core.submit("A", "p2", node="n")
    assert core.dispatch() == [("p1", "A", "n")]
    assert core.dispatch() == []


def test_blocked_pinned_head_does_not_block_other_cluster():
    core = SchedulerCore()
    core.add_cluster("A")
    core.add_cluster("B")
    core.set_node("n", 2)
    core.node_ready("A", "n", 1)
    core.node_ready("B", "n", 1)
    core.submit("A", "a1", node="n")
    core.submit("A", "a2", node="n")  # A is at its allocation once a1 runs
    core.submit("B", "b1", node="n")  # B has room and n has a free CPU
    assert {job for job, _, _ in core.dispatch()} == {"a1", "b1"}


# ---- cancel / finished -----------------------------------------------------------------


def test_cancel_queued_job():
    core = core_with({"n": 1})
    core.submit("A", "j1")
    core.submit("A", "j2")
    core.submit("A", "p", node="n")
    assert core.cancel("j2") is True
    assert core.cancel("p") is True
    assert core.cancel("j2") is False
    assert core.queued("A") == 1
    assert [job for job, _, _ in drain(core)] == ["j1"]


def test_cancel_running_or_unknown_job():
    core = core_with({"n": 1})
    core.submit("A", "j")
    core.dispatch()
    assert core.cancel("j") is False
    assert core.cancel("nobody") is False
    assert core.running_on("n") == ["j"]


def test_finished_frees_a_cpu():
    core = core_with({"n": 1})
    core.submit("A", "j1")
    core.submit("A", "j2")
    assert [job for job, _, _ in core.dispatch()] == ["j1"]
    assert core.dispatch() == []
    assert core.finished("j1") == "n"
    assert core.node_busy("n") == 0
    assert [job for job, _, _ in core.dispatch()] == ["j2"]
    assert core.finished("j1") is None  # twice
    assert core.finished("unknown") is None


# ---- nodes and clusters going away -----------------------------------------------------


def test_remove_node_returns_running_and_pinned():
    core = core_with({"n1": 1, "n2": 1})
    core.submit("A", "r1")
    core.submit("A", "r2")
    core.dispatch()
    on_n1 = core.running_on("n1")
    core.submit("A", "p1", node="n1")
    core.submit("A", "p2", node="n2")
    core.submit("A", "q")
    running, pinned = core.remove_node("n1")
    assert running == on_n1
    assert pinned == ["p1"]
    assert core.finished(on_n1[0]) is None
    assert "n1" not in list(core.nodes())
    assert core.remove_node("n1") == ([], [])
    assert core.queued("A") == 2  # p2 and q remain
    other = ({"r1", "r2"} - set(on_n1)).pop()
    core.finished(other)
    assert [job for job, _, _ in drain(core)] == ["p2", "q"]


def test_remove_cluster_returns_queued_jobs():
    core = core_with({"n1": 1, "n2": 1}, clusters=("A", "B"))
    core.submit("A", "run")
    core.dispatch()
    core.submit("A", "q1")
    core.submit("B", "b1")
    core.submit("A", "p1", node="n2")
    core.submit("A", "q2")
    core.cancel("q2")
    left = core.remove_cluster("A")
    assert sorted(left) == ["p1", "q1"]
    assert not core.usable("A")
    assert core.queued("A") == 0
    assert core.queued("B") == 1
    assert core.remove_cluster("A") == []
    # The running job of A goes on and can still finish.
    assert core.finished("run") in ("n1", "n2")
    assert [job for job, _, _ in drain(core)] == ["b1"]


def test_node_unready_stops_new_jobs_of_that_cluster_there():
    core = core_with({"n1": 2, "n2": 2}, clusters=("A", "B"))
    core.submit("A", "a0")
    core.submit("A", "a0b")
    core.dispatch()
    core.node_unready("A", "n1")
    assert core.usable("A")
    for i in range(4):
        core.submit("A", f"a{i + 1}")
    core.submit("B", "b1")
    out = core.dispatch()
    assert all(key == "n2" for job, cid, key in out if cid == "A")
    assert ("b1", "B", "n1") in out or ("b1", "B", "n2") in out
    # the job of A that was running on n1 before goes on and finishes normally
    assert len(core.running_on("n1")) >= 1
    core.node_unready("A", "n2")
    assert not core.usable("A")
    core.node_unready("A", "missing")  # no error for an unknown node


def test_cancel_then_resubmit_same_token_to_other_cluster():
    core = core_with({"n": 2}, clusters=("A", "B"))
    core.submit("A", "j")
    assert core.cancel("j")
    core.submit("B", "j")
    assert core.queued("A") == 0
    assert core.queued("B") == 1
    assert core.remove_cluster("A") == []
    assert core.dispatch() == [("j", "B", "n")]


# ---- model-based check -------------------------------------------------------------------

NODE_KEYS = ("n0", "n1", "n2")
CLUSTERS = ("A", "B")


class SchedulerMachine(RuleBasedStateMachine):
    """Random operations against SchedulerCore, checked against a simple model."""

    @initialize()
    def setup(self):
        self.core = SchedulerCore()
        self.ids = itertools.count()
        self.nodes = {}  # key -> cpus
        self.alloc = {}  # (key, cid) -> cpus
        self.prefetch = {}  # key -> jobs that may wait there beyond its CPUs
        self.clusters = set()
        self.queued = {}  # job -> (cid, pinned node or None)
        self.running = {}  # job -> (cid, key)
        self.submitted = Counter()
        self.dispatched = Counter()
        self.gone = set()  # cancelled or returned as queued by remove_node / remove_cluster
        for cid in CLUSTERS:
            self.core.add_cluster(cid)
            self.clusters.add(cid)

    # -- helpers

    def cap(self, key):
        cpus = self.nodes[key]
        return cpus + self.prefetch.get(key, 0) if cpus > 0 else 0

    def limit(self, key, cid):
        """A cluster gets the node's prefetch slots only when it may use all its CPUs."""
        alloc = self.alloc.get((key, cid), 0)
        return alloc + self.prefetch.get(key, 0) if alloc >= self.nodes[key] > 0 else alloc

    def on(self, key, cid=None):
        return sum(1 for c, k in self.running.values() if k == key and (cid is None or c == cid))

    def do_dispatch(self):
        before = {key: self.on(key) for key in self.nodes}
        before_c = {(key, cid): self.on(key, cid) for key in self.nodes for cid in CLUSTERS}
        out = self.core.dispatch()
        got = Counter()
        for job, cid, key in out:
            assert job in self.queued, f"{job} dispatched but not queued"
            assert job not in self.running
            qcid, pin = self.queued.pop(job)
            assert qcid == cid
            assert pin is None or pin == key
            assert key in self.nodes
            assert self.alloc.get((key, cid), 0) > 0
            self.running[job] = (cid, key)
            self.dispatched[job] += 1
            got[key] += 1
        for key in got:
            assert self.on(key) <= max(self.cap(key), before[key])
            for cid in CLUSTERS:
                now = self.on(key, cid)
                if now > before_c[(key, cid)]:
                    assert now <= self.limit(key, cid)
        # Work conserving for unpinned jobs: no free CPU (or prefetch slot) is left idle
        # next to a runnable job.
        for key in self.nodes:
            if self.on(key) >= self.cap(key):
                continue
            for cid in CLUSTERS:
                if self.on(key, cid) < self.limit(key, cid):
                    waiting = [j for j, (c, p) in self.queued.items() if c == cid and p is None]
                    assert not waiting, f"{key} idle while {waiting} of {cid} wait"
        return out

    # -- rules

    @rule(key=st.sampled_from(NODE_KEYS), cpus=st.integers(0, 3))
    def set_node(self, key, cpus):
        self.core.set_node(key, cpus)
        self.nodes[key] = cpus

    @rule(key=st.sampled_from(NODE_KEYS), jobs=st.integers(0, 2))
    def set_prefetch(self, key, jobs):
        self.core.set_prefetch(key, jobs)
        if key in self.nodes:
            self.prefetch[key] = jobs

    @rule(key=st.sampled_from(NODE_KEYS), cid=st.sampled_from(CLUSTERS), cpus=st.integers(0, 3))
    def node_ready(self, key, cid, cpus):
        if key in self.nodes and cid in self.clusters:
            self.core.node_ready(cid, key, cpus)
            self.alloc[(key, cid)] = cpus

    @rule(key=st.sampled_from(NODE_KEYS), cid=st.sampled_from(CLUSTERS))
    def node_unready(self, key, cid):
        self.core.node_unready(cid, key)
        self.alloc.pop((key, cid), None)

    @rule(cid=st.sampled_from(CLUSTERS), pin=st.none() | st.sampled_from(NODE_KEYS),
          n=st.integers(1, 3))
    def submit(self, cid, pin, n):
        if cid not in self.clusters or (pin is not None and pin not in self.nodes):
            return
        for _ in range(n):
            job = next(self.ids)
            self.core.submit(cid, job, pin)
            self.queued[job] = (cid, pin)
            self.submitted[job] += 1

    @rule()
    def dispatch(self):
        self.do_dispatch()

    @precondition(lambda self: self.submitted)
    @rule(data=st.data())
    def cancel(self, data):
        job = data.draw(st.sampled_from(sorted(self.submitted)))
        expected = job in self.queued
        assert self.core.cancel(job) is expected
        if expected:
            del self.queued[job]
            self.gone.add(job)

    @precondition(lambda self: self.running)
    @rule(data=st.data())
    def finish(self, data):
        job = data.draw(st.sampled_from(sorted(self.running)))
        _, key = self.running.pop(job)
        assert self.core.finished(job) == key
        assert self.core.finished(job) is None

    @rule(key=st.sampled_from(NODE_KEYS), requeue=st.booleans())
    def remove_node(self, key, requeue):
        running, pinned = self.core.remove_node(key)
        assert len(running) == len(set(running)) and len(pinned) == len(set(pinned))
        assert set(running) == {j for j, (_, k) in self.running.items() if k == key}
        assert set(pinned) == {j for j, (_, p) in self.queued.items() if p == key}
        for job in pinned:
            del self.queued[job]
            self.gone.add(job)
        self.nodes.pop(key, None)
        self.prefetch.pop(key, None)
        for k in [k for k in self.alloc if k[0] == key]:
            del self.alloc[k]
        for job in running:
            cid, _ = self.running.pop(job)
            if requeue and cid in self.clusters:  # what the client engine does
                self.core.submit(cid, job)
                self.queued[job] = (cid, None)
                self.submitted[job] += 1

    @rule(cid=st.sampled_from(CLUSTERS))
    def remove_cluster(self, cid):
        left = self.core.remove_cluster(cid)
        assert len(left) == len(set(left))
        assert set(left) == {j for j, (c, _) in self.queued.items() if c == cid}
        for job in left:
            del self.queued[job]
            self.gone.add(job)
        self.clusters.discard(cid)
        for k in [k for k in self.alloc if k[1] == cid]:
            del self.alloc[k]

    @rule(cid=st.sampled_from(CLUSTERS))
    def add_cluster(self, cid):
        self.core.add_cluster(cid)
        self.clusters.add(cid)

    # -- invariants

    @invariant()
    def accounting_matches(self):
        if not hasattr(self, "core"):
            return
        for cid in self.clusters:
            want = sum(1 for c, _ in self.queued.values() if c == cid)
            assert self.core.queued(cid) == want
        for key in self.nodes:
            assert sorted(self.core.running_on(key)) == sorted(
                j for j, (_, k) in self.running.items() if k == key)
            assert self.core.node_busy(key) == self.on(key)
        assert set(self.core.nodes()) == set(self.nodes)
        for job, n in self.dispatched.items():
            assert n <= self.submitted[job]

    def teardown(self):
        if not hasattr(self, "core"):
            return
        # Make every queued job runnable, then finish jobs until all of them ran.
        for key, cpus in list(self.nodes.items()):
            if cpus == 0:
                self.set_node(key, 1)
            for cid in self.clusters:
                if self.alloc.get((key, cid), 0) == 0:
                    self.node_ready(key, cid, 1)
        self.set_node("extra", 2)
        for cid in self.clusters:
            self.node_ready("extra", cid, 2)
        for _ in range(len(self.submitted) + 5):
            for job in list(self.running):
                self.finish_job(job)
            if not self.do_dispatch() and not self.running:
                break
        assert not self.queued, f"never dispatched: {self.queued}"
        for job in self.submitted:
            assert self.dispatched[job] >= 1 or job in self.gone

    def finish_job(self, job):
        _, key = self.running.pop(job)
        assert self.core.finished(job) == key


def test_scheduler_model():
    run_state_machine_as_test(
        SchedulerMachine,
        settings=settings(max_examples=80, stateful_step_count=40, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture]),
    )


def test_never_dispatched_twice_without_requeue():
    """Randomised: with no resubmission every job is dispatched exactly once."""
    rnd = random.Random(1234)
    for _ in range(30):
        core = core_with({f"n{i}": rnd.randint(1, 3) for i in range(3)}, clusters=("A", "B"),
                         alloc=2)
        seen = Counter()
        jobs = list(range(rnd.randint(1, 30)))
        for job in jobs:
            core.submit(rnd.choice("AB"), job, rnd.choice([None, None, "n0", "n2"]))
        for job, _, _ in drain(core):
            seen[job] += 1
        assert sorted(seen) == jobs
        assert set(seen.values()) == {1}


def test_assign_hands_out_jobs_one_at_a_time_and_the_rest_stay_queued():
    """``assign`` takes each job as it is asked for (the engine journals and sends it
    before the next is made): stopping early leaves the others queued, and they go in
    the next dispatch as if the first had been a whole one."""
    core = core_with({"n1": 2, "n2": 2})
    for j in range(6):
        core.submit("A", j)
    taken = core.assign()
    first = next(taken)
    assert first[0] == 0 and core.queued("A") == 5
    del taken  # the engine stopped (it raised, say): nothing more is taken
    rest = core.dispatch()
    assert [j for j, _, _ in rest] == [1, 2, 3]  # the three CPUs left, in order
    assert core.queued("A") == 2
    assert Counter(node for _, _, node in [first, *rest]) == {"n1": 2, "n2": 2}


def test_a_job_finished_while_assign_hands_out_others_frees_its_cpu_at_once():
    """The engine may end a job (its node unknown) between two jobs ``assign`` hands
    out: the pass goes on from the node's CPUs as they are then, and the accounting stays
    right."""
    core = core_with({"n1": 2})
    for j in range(4):
        core.submit("A", j)
    taken = core.assign()
    job, _, _ = next(taken)
    core.finished(job)
    assert [j for j, _, _ in taken] == [1, 2]  # the freed CPU is used in the same pass
    assert core.node_busy("n1") == 2 and core.dispatch() == [] and core.queued("A") == 1
    core.finished(1)
    assert [j for j, _, _ in core.dispatch()] == [3]


# ---- one cluster: node by node, the same counts ---------------------------------------


def test_one_cluster_jobs_come_node_by_node():
    """Jobs of one cluster are handed out node by node (each node's objects stay in the
    CPU's cache while its jobs are sent), in the counts least-loaded-first gives."""
    core = core_with({"n1": 4, "n2": 4, "n3": 4})
    for j in range(6):
        core.submit("A", j)
    assert core.dispatch() == [(0, "A", "n1"), (1, "A", "n1"), (2, "A", "n2"),
                               (3, "A", "n2"), (4, "A", "n3"), (5, "A", "n3")]


def test_node_by_node_no_job_waits_in_a_slot_while_a_later_one_runs():
    """Every free CPU is filled before any prefetch slot, node by node too: the jobs
    that wait on a node are the last ones taken (by priority, then order)."""
    core = core_with({"x": 1, "y": 1})
    core.set_prefetch("x", 1)
    for job, priority in (("a", 2), ("b", 1), ("c", 0)):
        core.submit("A", job, priority=priority)
    assert core.dispatch() == [("a", "A", "x"), ("b", "A", "y"), ("c", "A", "x")]
    core = core_with({"x": 4, "y": 4})
    for key in ("x", "y"):
        core.set_prefetch(key, 4)
    for j in range(16):
        core.submit("A", j)
    out = core.dispatch()
    assert [job for job, _, _ in out[:8]] == list(range(8))  # on CPUs, node by node
    assert Counter(node for _, _, node in out) == {"x": 8, "y": 8}


def test_a_job_pinned_to_a_free_node_goes_first_with_the_others_spread():
    core = core_with({"n1": 4, "n2": 4})
    for j in range(4):
        core.submit("A", j)
    core.submit("A", "p", node="n2")
    out = core.dispatch()
    assert ("p", "A", "n2") in out
    assert Counter(node for _, _, node in out) == {"n1": 3, "n2": 2}


def test_fewer_jobs_than_free_nodes_go_to_the_least_loaded():
    core = core_with({"n1": 4, "n2": 4, "n3": 4})
    core.submit("A", "busy", node="n1")
    core.dispatch()
    core.submit("A", 1)
    core.submit("A", 2)
    assert core.dispatch() == [(1, "A", "n2"), (2, "A", "n3")]


def test_a_job_for_an_unknown_cluster_or_node_is_refused_and_leaves_nothing():
    core = core_with({"n": 2})
    with pytest.raises(KeyError):
        core.submit("B", "j")
    with pytest.raises(KeyError):
        core.submit("A", "k", node="gone")
    assert core.queued("A") == 0 and core.dispatch() == []
    assert not core._entries


def test_a_node_filled_by_a_pass_that_stopped_early_is_not_offered_again():
    core = core_with({"n1": 2, "n2": 2})
    for j in range(4):
        core.submit("A", j)
    taken = core.assign()
    assert [next(taken)[2], next(taken)[2]] == ["n1", "n1"]
    taken.close()  # the engine stopped taking right after n1 filled up
    assert set(core._free) == {"n2"}
    assert [node for _, _, node in core.dispatch()] == ["n2", "n2"]


@settings(max_examples=200, deadline=None)
@given(nodes=st.lists(st.tuples(st.integers(0, 8), st.just(8) | st.integers(0, 8),
                                st.integers(0, 3), st.integers(0, 6)), min_size=1, max_size=6),
       jobs=st.integers(0, 30), cancel=st.sets(st.integers(0, 30), max_size=6),
       priorities=st.lists(st.integers(0, 2), max_size=30), same_cpus=st.booleans())
def test_one_cluster_counts_are_those_of_least_loaded_one_at_a_time(nodes, jobs, cancel,
                                                                    priorities, same_cpus):
    """Against a plain model of the rule: each job goes to the node with the lowest load
    (busy / cpus; ties: the node added first) that may take one more; also with nodes of
    equal CPUs (``same_cpus``), where loads tie most."""
    if same_cpus:
        nodes = [(nodes[0][0], *rest) for _, *rest in nodes]
    core = SchedulerCore()
    core.add_cluster("A")
    for i, (cpus, alloc, prefetch, _) in enumerate(nodes):
        core.set_node(i, cpus)
        core.node_ready("A", i, min(alloc, cpus))
        core.set_prefetch(i, prefetch)
    warm = [("w", i, k) for i, (*_, busy) in enumerate(nodes) for k in range(busy)]
    for job in warm:  # some CPUs busy already: pinned jobs (those left over are unpinned)
        core.submit("A", job, job[1])
    core.dispatch()
    busy = {i: core.node_busy(i) for i in range(len(nodes))}
    for j in range(jobs):
        core.submit("A", j, priority=priorities[j] if j < len(priorities) else 0)
    for j in cancel:
        core.cancel(j)
    for i in range(len(nodes)):  # the pinned warm-up jobs that found no CPU
        core.unpin("A", i)
    left = [j for j in range(jobs) if j not in cancel]
    assert core.queued("A") == len(left)

    want: Counter = Counter()
    for _ in left:
        free = []
        for i, (cpus, alloc, prefetch, _) in enumerate(nodes):
            alloc = min(alloc, cpus)
            limit = alloc + prefetch if alloc >= cpus > 0 else alloc
            cap = min(cpus + (prefetch if cpus > 0 else 0), limit)
            if busy[i] + want[i] < cap:
                free.append(((busy[i] + want[i]) / cpus, i))
        if not free:
            break
        want[min(free)[1]] += 1
    out = core.dispatch()
    assert Counter(node for _, _, node in out) == want
    seen: Counter = Counter()  # no job to a slot before every CPU that frees is taken
    waiting = False
    for _, _, node in out:
        seen[node] += 1
        slot = busy[node] + seen[node] > nodes[node][0]
        assert not (waiting and not slot), out
        waiting = waiting or slot
    by_priority = sorted(left, key=lambda j: -(priorities[j] if j < len(priorities) else 0))
    assert [job for job, _, _ in sorted(out, key=lambda o: by_priority.index(o[0]))] == \
        by_priority[:len(out)]
    assert core.queued("A") == len(left) - len(out)

