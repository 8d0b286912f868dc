"""The job life cycle as a pure state machine: every job ends exactly once, whatever the
order of node losses, link cuts, refusals, cancels and results."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispy.scheduling.core import SchedulerCore
from dispy.scheduling.lifecycle import (
    Deliver,
    End,
    JobLifecycle,
    Resubmit,
    Send,
    SendCancel,
    State,
)
from dispy.wire.status import CANCELLED, TERMINATED

pytestmark = pytest.mark.timeout(60)

NODES = ("n1", "n2", "n3")


def machine(cpus: int = 1) -> JobLifecycle:
    core = SchedulerCore()
    core.add_cluster("c")
    core.admit()
    for n in NODES:
        core.set_node(n, cpus)
        core.node_ready("c", n, cpus)
    ids = itertools.count(1000)
    return JobLifecycle(core, lambda: f"r{next(ids)}")


def test_a_job_runs_and_its_result_is_delivered_once():
    m = machine()
    m.submit("a", "c", resubmittable=False)
    (send,) = m.dispatch()
    assert isinstance(send, Send) and send.uid == "a"
    assert m.result("a", "n2" if send.node != "n2" else "n1") == []  # not from its node
    assert m.result("a", send.node) == [Deliver("a")]
    assert m.result("a", send.node) == [] and m.state("a") is None


@pytest.mark.parametrize("given_back", ["node_lost", "refused"])
def test_a_running_job_cancelled_by_the_user_is_not_run_again(given_back):
    """Cancelled while it ran, then its node is lost or gives it back unrun (a reconnect
    finds the node does not know it): it ends Cancelled, reentrant or not."""
    m = machine()
    m.submit("a", "c", resubmittable=True)
    (send,) = m.dispatch()
    assert m.cancel("a") == [SendCancel("a", "c", send.node)]
    out = (m.node_lost(send.node, "lost") if given_back == "node_lost"
           else m.refused("a", send.node, "it lost it with the connection"))
    (end,) = out
    assert isinstance(end, End) and end.status == CANCELLED and end.uid == "a"
    assert m.state("a") is None and m.dispatch() == []


def test_node_loss_resubmits_reentrant_jobs_under_a_new_id_and_ends_others():
    m = machine()
    m.submit("a", "c", resubmittable=True)
    m.submit("b", "c", resubmittable=False)
    sends = {i.uid: i.node for i in m.dispatch()}
    for uid, node in sends.items():
        out = m.node_lost(node, f"{node} lost")
        if uid == "a":
            (again,) = out
            assert isinstance(again, Resubmit) and again.uid == "a"
            assert m.state(again.new_uid) is State.QUEUED
            assert m.result("a", node) == []  # a late result of the first run is dropped
        else:
            assert out == [End("b", "c", CANCELLED, f"Cancelled: node {node} lost")]


def test_cancel_queued_ends_now_running_asks_the_node():
    m = machine(cpus=1)
    for uid in "abcd":
        m.submit(uid, "c", resubmittable=False)
    running = {i.uid: i.node for i in m.dispatch()}
    assert m.cancel("d") == [End("d", "c", CANCELLED, "Cancelled")]
    (ask,) = m.cancel("a")
    assert ask == SendCancel("a", "c", running["a"])
    assert m.refused("a", running["a"], "cancelled", killed=True) == [
        End("a", "c", TERMINATED, "Terminated: cancelled")]
    assert m.cancel("a") == []


def test_pinned_jobs_end_when_their_node_is_lost_or_dropped():
    m = machine(cpus=0)
    m.submit("p", "c", resubmittable=True, pin="n1")
    m.submit("q", "c", resubmittable=True, pin="n2")
    assert m.node_lost("n1", "n1 lost") == [End("p", "c", CANCELLED, "Cancelled: node n1 lost")]
    assert m.unpinned("c", "n2", "Cancelled: node n2 dropped") == [
        End("q", "c", CANCELLED, "Cancelled: node n2 dropped")]


def test_closing_a_cluster_ends_queued_then_running_jobs():
    m = machine(cpus=1)
    for uid in "abcde":
        m.submit(uid, "c", resubmittable=True)
    m.dispatch()
    queued = m.cluster_closing("c")
    assert sorted(i.uid for i in queued) == ["d", "e"]
    rest = m.cluster_closed("c")
    assert sorted(i.uid for i in rest) == ["a", "b", "c"]
    assert all(isinstance(i, End) and i.reason == "Cancelled: cluster closed" for i in rest)


events = st.lists(st.tuples(
    st.sampled_from(["submit", "submit_r", "dispatch", "result", "refused", "cancel",
                     "lost", "unpin", "close", "prefetch"]),
    st.integers(0, 7), st.sampled_from(NODES)), max_size=60)


@settings(max_examples=300, deadline=None)
@given(events, st.integers(1, 2))
def test_every_job_ends_exactly_once_under_any_interleaving(steps, cpus):
    m = machine(cpus)
    origin: dict[str, str] = {}  # uid (of any run) -> the user's job
    ended: dict[str, int] = {}
    submitted: list[str] = []
    closed = False

    def apply(out):
        for ins in out:
            if isinstance(ins, Resubmit):
                origin[ins.new_uid] = origin[ins.uid]
            elif isinstance(ins, (End, Deliver)):
                job = origin[ins.uid]
                ended[job] = ended.get(job, 0) + 1

    for kind, i, node in steps:
        uids = [u for u in origin if m.state(u) is not None]
        uid = uids[i % len(uids)] if uids else None
        if kind.startswith("submit"):
            new = f"j{len(submitted)}"
            submitted.append(new)
            origin[new] = new
            apply(m.submit(new, "c", resubmittable=kind == "submit_r",
                           pin=node if i == 0 else None))
        elif kind == "dispatch":
            apply(m.dispatch())
        elif kind == "result" and uid:
            apply(m.result(uid, node))
        elif kind == "refused" and uid:
            apply(m.refused(uid, node, "refused", killed=i % 2 == 0))
        elif kind == "cancel" and uid:
            apply(m.cancel(uid))
        elif kind == "lost":
            apply(m.node_lost(node, "lost"))
            m.core.set_node(node, cpus)  # it comes back
            if not closed:
                m.core.node_ready("c", node, cpus)
        elif kind == "unpin":
            apply(m.unpinned("c", node, "Cancelled: dropped"))
        elif kind == "close" and not closed:
            closed = True
            apply(m.cluster_closing("c"))
        elif kind == "prefetch":
            m.core.set_prefetch(node, i % 3)
        check_indexes(m)
    assert all(n == 1 for n in ended.values()), ended  # never twice
    apply(m.cluster_closing("c") if not closed else [])
    apply(m.cluster_closed("c"))
    assert sorted(ended) == sorted(submitted) and set(ended.values()) <= {1}
    assert not m.jobs and not m.on_node and not m.pinned


def check_indexes(m: JobLifecycle) -> None:
    """The per-node indexes (a lost node touches only its jobs) say what a scan of
    every job would, and the core agrees on what runs where."""
    for node in NODES:
        running = {r.uid for r in m.jobs.values()
                   if r.state is State.RUNNING and r.node == node}
        pinned = {r.uid for r in m.jobs.values() if r.state is State.QUEUED and r.pin == node}
        assert set(m.running_on(node)) == running
        assert set(m.pinned.get(node, ())) == pinned
        assert set(m.core.running_on(node)) == running
    core = m.core
    assert set(core._free) == {k for k, n in core._nodes.items() if n.free() > 0}


def test_a_job_that_cannot_be_sent_ends_while_the_others_are_handed_out():
    """The engine takes Sends one at a time (``sends``) and may fail one (its files
    could not be read) before taking the next: that job ends once, the others run, and
    its CPU is taken by the next job in the same pass."""
    m = machine(cpus=1)
    for uid in ("a", "b", "c", "d"):
        m.submit(uid, "c", resubmittable=False)
    taken = m.sends()
    first = next(taken)
    (end,) = m.send_failed(first.uid, "unreadable file")
    assert isinstance(end, End) and end.uid == first.uid and m.state(first.uid) is None
    rest = list(taken)
    assert [s.uid for s in rest] == ["b", "c", "d"]  # the others' CPUs, then its own
    assert m.dispatch() == []
    assert all(m.state(uid) is State.RUNNING for uid in "bcd")
    assert m.send_failed(first.uid, "again") == []  # it ended once
