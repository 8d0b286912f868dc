"""A cluster's use of each node as a pure state machine (scheduling/nodesetup.py) and the
decision to send jobs ahead (scheduling/prefetch.py): no sockets, no clocks."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispy.scheduling.core import SchedulerCore
from dispy.scheduling.lifecycle import Deliver, End, JobLifecycle, Resubmit, Send
from dispy.scheduling.nodesetup import Change, NodeChanged, NodeSetups, Setup, matching
from dispy.scheduling.prefetch import PREFETCH_BELOW, RunTimes, per_cpu

pytestmark = pytest.mark.timeout(60)

NODES = ("n1", "n2", "n3")


def machine(cpus: int = 2) -> NodeSetups:
    core = SchedulerCore()
    core.add_cluster("c")
    core.admit()
    for n in NODES:
        core.set_node(n, cpus)
    ids = itertools.count(1000)
    return NodeSetups(JobLifecycle(core, lambda: f"r{next(ids)}"))


def ready(m: NodeSetups, node: str = "n1", cpus: int = 2) -> None:
    assert m.allocated(node, "c", cpus, cpus) == cpus
    out = m.setup_done(node, "c", True, "", cpus, node)
    assert out == [NodeChanged("c", node, Change.READY)]


def ends(out: list) -> dict[str, str]:
    return {i.uid: i.reason for i in out if isinstance(i, End)}


def test_nodeallocate_matching_takes_the_first_pattern_that_fits():
    class Alloc:
        def __init__(self, prefix, port=None):
            self.prefix, self.port = prefix, port

        def matches(self, ip, port=None):
            return ip.startswith(self.prefix) and (self.port is None or self.port == port)

    allocs = [Alloc("10.0.0.1", 9000), Alloc("10.0.0.")]
    assert matching(allocs, "10.0.0.1", 9000) is allocs[0]
    assert matching(allocs, "10.0.0.1", 51348) is allocs[1]
    assert matching(allocs, "10.9.0.1", 51348) is None


def test_zero_cpus_leave_the_node_unused_and_say_why():
    m = machine()
    assert m.allocated("n1", "c", 0, 4) == 0
    assert m.state("n1", "c") is Setup.UNUSED
    assert m.why("n1", "c") == "unused: NodeAllocate gave 0 CPUs"
    assert not m.pinnable("n1", "c") and not m.holds("n1") and m.known("n1", "c")
    assert m.allocated("n2", "c", 8, 4) == 4  # never more than the node has


def test_only_a_ready_node_gets_jobs_and_setup_failure_ends_its_pinned_jobs():
    m = machine()
    lc = m.lifecycle
    m.allocated("n1", "c", 2, 2)
    assert m.why("n1", "c") == "running setup" and m.pinnable("n1", "c") and m.holds("n1")
    lc.submit("a", "c", False, pin="n1")
    lc.submit("b", "c", False)
    assert lc.dispatch() == []  # nothing is ready yet
    out = m.setup_done("n1", "c", False, "Traceback ...\nValueError: no GPU\n", 2, "host1")
    assert ends(out) == {"a": "Cancelled: setup failed on node host1"}
    assert m.why("n1", "c") == "failed: ValueError: no GPU"
    assert m.setup_done("n1", "c", True, "", 2, "host1") == []  # a late answer changes nothing
    ready(m, "n2")
    assert [(s.uid, s.node) for s in lc.dispatch()] == [("b", "n2")]


def test_computation_lost_stops_jobs_going_there_and_ends_jobs_pinned_to_it():
    m = machine()
    lc = m.lifecycle
    ready(m, "n1")
    lc.submit("a", "c", False, pin="n1")
    lc.submit("b", "c", False, pin="n1")
    lc.submit("c1", "c", False, pin="n1")
    assert {s.uid for s in lc.dispatch()} == {"a", "b"}
    out = m.computation_lost("n1", "c", "host died", "host1")
    assert out[0] == NodeChanged("c", "n1", Change.LEFT)
    assert out[-1] == NodeChanged("c", "n1", Change.CLOSED)
    assert ends(out) == {"c1": "Cancelled: node host1 lost the computation: host died"}
    assert lc.result("a", "n1") == [Deliver("a")]  # running jobs still report
    lc.submit("d", "c", False)
    assert lc.dispatch() == []
    assert m.computation_lost("n1", "c", "again", "host1") == []


def test_deallocate_and_allocate_again():
    m = machine()
    lc = m.lifecycle
    ready(m, "n1")
    assert m.deallocate("n1", "c") and not m.deallocate("n1", "c")
    lc.submit("a", "c", False)
    assert lc.dispatch() == [] and m.holds("n1")
    m.reallocate("n1", "c", 1)
    assert m.state("n1", "c") is Setup.READY
    assert [s.uid for s in lc.dispatch()] == ["a"]
    m.allocated("n2", "c", 0, 2)
    m.reallocate("n2", "c", 1)  # an ended use starts over: met anew
    assert not m.known("n2", "c")


def test_close_node_ends_pinned_jobs_at_once_and_reports_closed_when_done():
    m = machine()
    lc = m.lifecycle
    ready(m, "n1")
    lc.submit("a", "c", False, pin="n1")
    lc.submit("b", "c", False, pin="n1")
    lc.submit("c1", "c", False, pin="n1")
    lc.dispatch()
    out = m.close("n1", "c", False, "host1")
    assert out is not None and ends(out) == {"c1": "Cancelled: node host1 was closed"}
    assert m.close("n1", "c", False, "host1") is None and m.closing("n1", "c")
    assert m.closed("n1", "c", 0, "host1") == [NodeChanged("c", "n1", Change.CLOSED)]
    assert m.why("n1", "c") == "closed: by close_node" and not m.holds("n1")
    assert m.closed("n1", "c", 0, "host1") == []


def test_resetup_sets_up_again_or_lets_go_when_allocate_gives_nothing():
    m = machine()
    lc = m.lifecycle
    ready(m, "n1")
    lc.submit("a", "c", False, pin="n1")
    lc.submit("b", "c", False, pin="n1")
    lc.submit("c1", "c", False, pin="n1")
    lc.dispatch()
    assert m.close("n1", "c", True, "host1") == []  # pinned jobs wait for the new setup
    assert m.closed("n1", "c", 2, "host1") == []
    assert m.state("n1", "c") is Setup.SETTING_UP
    m.setup_done("n1", "c", True, "", 2, "host1")
    m.close("n1", "c", True, "host1")
    out = m.closed("n1", "c", 0, "host1", "not connected")
    assert ends(out) == {"c1": "Cancelled: node host1 is not used any more (not connected)"}
    assert out[-1] == NodeChanged("c", "n1", Change.CLOSED)


def test_a_cut_link_restarts_setups_and_a_dead_node_is_forgotten():
    m = machine()
    ready(m, "n1")
    m.allocated("n2", "c", 2, 2)
    assert not m.link_down("n2") and not m.known("n2", "c")  # set up again when back
    assert m.link_down("n1") and m.state("n1", "c") is Setup.READY
    assert m.node_dead("n1") == [NodeChanged("c", "n1", Change.CLOSED)]
    assert not m.known("n1", "c") and m.clusters_on("n1") == []


def test_remove_cluster_says_what_each_node_had():
    m = machine()
    ready(m, "n1")
    m.allocated("n2", "c", 0, 2)
    assert m.remove_cluster("c") == {"n1": Setup.READY, "n2": Setup.UNUSED}
    assert m.remove_cluster("c") == {}


def test_short_jobs_are_sent_ahead_long_or_big_ones_not():
    runs = RunTimes()
    assert runs.ended(PREFETCH_BELOW / 10, False, 4) == per_cpu(PREFETCH_BELOW / 10) * 4
    # a cancelled job tells nothing
    assert runs.ended(0.0, False, 4) == per_cpu(PREFETCH_BELOW / 10) * 4
    for _ in range(20):
        last = runs.ended(1.0, False, 4)
    assert last == 0
    runs = RunTimes()
    assert runs.big_job() == 0
    assert runs.ended(0.001, False, 2) == 0  # still mostly big
    for _ in range(5):
        last = runs.ended(0.001, False, 2)
    assert runs.job_time is not None and last == per_cpu(runs.job_time) * 2


steps = st.lists(st.tuples(
    st.sampled_from(["submit", "submit_r", "dispatch", "result", "cancel", "allocate",
                     "allocate0", "setup_ok", "setup_failed", "lost_comp", "deallocate",
                     "reallocate", "close", "resetup", "closed", "link_down", "dead"]),
    st.integers(0, 7), st.sampled_from(NODES)), max_size=80)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_jobs_end_once_and_run_only_where_set_up_under_any_interleaving(events):
    """Whatever happens to nodes and their setups, no job goes to a node that is not
    ready for its cluster, and every job ends exactly once."""
    m = machine()
    lc = m.lifecycle
    origin: dict[str, str] = {}
    ended: dict[str, int] = {}
    submitted: list[str] = []

    def apply(out):
        for ins in out:
            if isinstance(ins, Resubmit):
                origin[ins.new_uid] = origin[ins.uid]
            elif isinstance(ins, (End, Deliver)):
                ended[origin[ins.uid]] = ended.get(origin[ins.uid], 0) + 1
            elif isinstance(ins, Send):
                assert m.state(ins.node, "c") is Setup.READY, (ins, m.state(ins.node, "c"))

    for kind, i, node in events:
        live = [u for u in origin if lc.state(u) is not None]
        uid = live[i % len(live)] if live else None
        if kind.startswith("submit"):
            if i == 0 and not m.pinnable(node, "c"):
                continue  # the engine refuses a pin to a node not (being) set up
            new = f"j{len(submitted)}"
            submitted.append(new)
            origin[new] = new
            apply(lc.submit(new, "c", kind == "submit_r", pin=node if i == 0 else None))
        elif kind == "dispatch":
            apply(lc.dispatch())
        elif kind == "result" and uid:
            apply(lc.result(uid, node))
        elif kind == "cancel" and uid:
            apply(lc.cancel(uid))
        elif kind in ("allocate", "allocate0") and not m.known(node, "c"):
            m.allocated(node, "c", 0 if kind == "allocate0" else 2, 2)
        elif kind in ("setup_ok", "setup_failed"):
            apply(m.setup_done(node, "c", kind == "setup_ok", "boom", 2, node))
        elif kind == "lost_comp":
            apply(m.computation_lost(node, "c", "host died", node))
        elif kind == "deallocate":
            m.deallocate(node, "c")
        elif kind == "reallocate":
            m.reallocate(node, "c", 2)
        elif kind in ("close", "resetup"):
            apply(m.close(node, "c", kind == "resetup", node) or [])
        elif kind == "closed":
            apply(m.closed(node, "c", i % 3, node))
        elif kind == "link_down":
            m.link_down(node)
        elif kind == "dead":
            apply(lc.node_lost(node, "lost"))
            apply(m.node_dead(node))
            m.core.set_node(node, 2)  # it comes back, to be met anew
    assert all(n == 1 for n in ended.values()), ended
    apply(lc.cluster_closing("c"))
    apply(lc.cluster_closed("c"))
    assert sorted(ended) == sorted(submitted) and set(ended.values()) <= {1}
