"""A cluster's use of each node, from first contact to close: pure, no I/O, no clocks.

For every (node, cluster) pair one state: not met yet (no entry), setting up, ready,
deallocated, closing, or ended (unused, failed, closed) with a reason. Events go in
(NodeAllocate's answer, setup done or failed, the computation lost, deallocate, close,
re-set-up, the link down, the node dead, the cluster closed); the scheduling core is told
which clusters may use which node's CPUs, and instructions come out: the job life
cycle's (jobs that can run nowhere else end) and ``NodeChanged`` (the cluster's view of
its nodes and its ``cluster_status`` callback). The engine owns the sockets and carries
them out; stall reports read ``why`` a node does not serve a cluster.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Any

from ..wire.records import Plain
from .lifecycle import Instruction, JobLifecycle

NodeKey = Hashable


class Setup(enum.Enum):
    SETTING_UP = "running setup"
    READY = "ready"
    #: set up, but no new job goes there (deallocate_node)
    DEALLOCATED = "deallocated"
    CLOSING = "closing"
    UNUSED = "unused"
    FAILED = "failed"
    CLOSED = "closed"


#: states in which the cluster holds the node: its link stays open for the cluster
HOLDING = frozenset({Setup.SETTING_UP, Setup.READY, Setup.DEALLOCATED, Setup.CLOSING})
#: states that end the cluster's use of the node (allocate_node may start over)
ENDED = frozenset({Setup.UNUSED, Setup.FAILED, Setup.CLOSED})


class Change(enum.Enum):
    READY = "ready"  # the cluster may use the node (its status callback: Initialized)
    LEFT = "left"  # the cluster stops using the node (no callback yet)
    CLOSED = "closed"  # the cluster no longer has the node (its status callback: Closed)


@dataclass(slots=True, repr=False, eq=False)
class NodeChanged(Plain):
    cid: Hashable
    node: NodeKey
    change: Change


Out = Instruction | NodeChanged


def matching(allocs: Iterable[Any], ip: str, port: int) -> Any:
    """The first of a cluster's node patterns (NodeAllocate, most specific first) that
    takes the node at ``ip``:``port``, or None: the cluster does not want the node."""
    for alloc in allocs:
        if alloc.matches(ip, port):
            return alloc
    return None


def all_matching(allocs: Iterable[Any], ip: str, port: int | None) -> list[Any]:
    """Every node pattern that takes the node, in order: each one's ``allocate`` is asked
    in turn until one gives it CPUs (a filter that says 0 lets the next one decide)."""
    return [alloc for alloc in allocs if alloc.matches(ip, port)]


@dataclass(slots=True)
class _Entry:
    state: Setup
    reason: str = ""


class NodeSetups:
    """Which cluster uses which node, and how far along it is."""

    def __init__(self, lifecycle: JobLifecycle) -> None:
        self.lifecycle = lifecycle
        self.core = lifecycle.core
        self._nodes: dict[NodeKey, dict[Hashable, _Entry]] = {}

    # -- what is known --

    def state(self, node: NodeKey, cid: Hashable) -> Setup | None:
        entry = self._nodes.get(node, {}).get(cid)
        return entry.state if entry is not None else None

    def why(self, node: NodeKey, cid: Hashable) -> str | None:
        """Why ``node`` does not run jobs of ``cid`` (None: ready, or not met yet)."""
        entry = self._nodes.get(node, {}).get(cid)
        if entry is None or entry.state is Setup.READY:
            return None
        return f"{entry.state.value}: {entry.reason}" if entry.reason else entry.state.value

    def known(self, node: NodeKey, cid: Hashable) -> bool:
        """The cluster met the node (in whatever state)."""
        return cid in self._nodes.get(node, {})

    def pinnable(self, node: NodeKey, cid: Hashable) -> bool:
        """Jobs of ``cid`` may be submitted for ``node`` alone (it is or becomes ready)."""
        return self.state(node, cid) in (Setup.READY, Setup.SETTING_UP)

    def clusters_on(self, node: NodeKey) -> list[Hashable]:
        return list(self._nodes.get(node, {}))

    def holds(self, node: NodeKey) -> bool:
        """Some cluster holds the node (set up, setting up, deallocated or closing)."""
        return any(e.state in HOLDING for e in self._nodes.get(node, {}).values())

    # -- setting up --

    def allocated(self, node: NodeKey, cid: Hashable, cpus: int, node_cpus: int,
                  reason: str = "NodeAllocate gave 0 CPUs") -> int:
        """NodeAllocate (or the program's allocate, through dispyscheduler) gave ``cpus``:
        the CPUs the cluster will use there (0: the node stays unused, for ``reason``)."""
        if cpus <= 0:
            self._set(node, cid, Setup.UNUSED, reason)
            return 0
        self._set(node, cid, Setup.SETTING_UP)
        return min(cpus, node_cpus)

    def asking(self, node: NodeKey, cid: Hashable) -> None:
        """The cluster's allocate is asked elsewhere (a program of dispyscheduler);
        ``allocated`` comes with the answer."""
        self._set(node, cid, Setup.SETTING_UP)

    def setup_done(self, node: NodeKey, cid: Hashable, ok: bool, reason: str, cpus: int,
                   where: str) -> list[Out]:
        """The node ran the cluster's setup (``ok``) or could not (``reason``)."""
        if self.state(node, cid) is not Setup.SETTING_UP:
            return []  # closed meanwhile (close_node during setup)
        if not ok:
            reason = reason.strip()
            self._set(node, cid, Setup.FAILED, reason.splitlines()[-1] if reason else "?")
            return list(self.lifecycle.unpinned(
                cid, node, f"Cancelled: setup failed on node {where}"))
        self._set(node, cid, Setup.READY)
        self.core.node_ready(cid, node, cpus)
        return [NodeChanged(cid, node, Change.READY)]

    def computation_lost(self, node: NodeKey, cid: Hashable, reason: str,
                         where: str) -> list[Out]:
        """The node lost the computation (its host process died): no more jobs there."""
        if self.state(node, cid) is not Setup.READY:
            return []
        self._set(node, cid, Setup.FAILED, reason)
        self.core.node_unready(cid, node)
        return self._leave(node, cid, f"{where} lost the computation: {reason}",
                           Change.CLOSED)

    # -- a cluster's node methods --

    def deallocate(self, node: NodeKey, cid: Hashable) -> bool:
        if self.state(node, cid) is not Setup.READY:
            return False
        self._set(node, cid, Setup.DEALLOCATED)
        self.core.node_unready(cid, node)
        return True

    def reallocate(self, node: NodeKey, cid: Hashable, cpus: int) -> None:
        """allocate_node names the node again: a deallocated node takes jobs again, one
        whose use ended may be set up again."""
        state = self.state(node, cid)
        if state is Setup.DEALLOCATED:
            self._set(node, cid, Setup.READY)
            self.core.node_ready(cid, node, cpus)
        elif state in ENDED:
            del self._nodes[node][cid]

    def set_cpus(self, node: NodeKey, cid: Hashable, cpus: int) -> bool:
        """set_node_cpus: True when the core now schedules with ``cpus`` there."""
        if self.state(node, cid) is not Setup.READY:
            return False
        self.core.node_ready(cid, node, cpus)
        return True

    def close(self, node: NodeKey, cid: Hashable, resetup: bool,
              where: str) -> list[Out] | None:
        """close_node (or resetup_node): no new job goes there from now on; None when the
        cluster does not use the node."""
        if self.state(node, cid) not in (Setup.READY, Setup.DEALLOCATED, Setup.SETTING_UP):
            return None
        self._set(node, cid, Setup.CLOSING, "resetup" if resetup else "")
        self.core.node_unready(cid, node)
        return [] if resetup else self._leave(node, cid, f"{where} was closed", None)

    def closing(self, node: NodeKey, cid: Hashable) -> bool:
        return self.state(node, cid) is Setup.CLOSING

    def closed(self, node: NodeKey, cid: Hashable, cpus: int, where: str,
               why: str = "NodeAllocate gave 0 CPUs") -> list[Out]:
        """The node closed the computation. For resetup_node, ``cpus`` > 0 are those
        NodeAllocate gives it now: it is set up again (else not, for ``why``)."""
        entry = self._nodes.get(node, {}).get(cid)
        if entry is None or entry.state is not Setup.CLOSING:
            return []  # the node was lost meanwhile
        if entry.reason == "resetup":
            if cpus > 0:
                self._set(node, cid, Setup.SETTING_UP)
                return []
            out = self._leave(node, cid, f"{where} is not used any more ({why})", None)
        else:
            out = []
        self._set(node, cid, Setup.CLOSED, "by close_node")
        return [*out, NodeChanged(cid, node, Change.CLOSED)]

    # -- links and nodes --

    def link_down(self, node: NodeKey) -> bool:
        """The connection broke: setups under way went down with it (they start over
        when it is back). True when some cluster has the node ready (worth waiting for)."""
        entries = self._nodes.get(node, {})
        for cid in [c for c, e in entries.items() if e.state is Setup.SETTING_UP]:
            del entries[cid]
        return any(e.state is Setup.READY for e in entries.values())

    def node_dead(self, node: NodeKey) -> list[Out]:
        """The node is presumed dead: every cluster forgets it (they meet it anew if it
        comes back)."""
        entries = self._nodes.pop(node, {})
        return [NodeChanged(cid, node, Change.CLOSED) for cid, e in entries.items()
                if e.state is Setup.READY]

    def remove_cluster(self, cid: Hashable) -> dict[NodeKey, Setup]:
        """The cluster is closed or let go: the state it had on each node."""
        out = {}
        for node, entries in self._nodes.items():
            entry = entries.pop(cid, None)
            if entry is not None:
                out[node] = entry.state
        return out

    # -- helpers --

    def _set(self, node: NodeKey, cid: Hashable, state: Setup, reason: str = "") -> None:
        self._nodes.setdefault(node, {})[cid] = _Entry(state, reason)

    def _leave(self, node: NodeKey, cid: Hashable, why: str,
               change: Change | None) -> list[Out]:
        """The cluster stops using the node: jobs that may run only there end."""
        out: list[Out] = [NodeChanged(cid, node, Change.LEFT)]
        out += self.lifecycle.unpinned(cid, node, f"Cancelled: node {why}")
        if change is not None:
            out.append(NodeChanged(cid, node, change))
        return out
