"""Matching queued jobs to free node CPUs: pure logic, no I/O, no clocks.

Jobs are opaque hashable tokens. A node has a number of CPUs; each cluster that is set
up on a node may use up to its own allocation of them. Jobs pinned to a node go
first; otherwise the policy picks the cluster: ``fifo`` (default) serves the job
submitted earliest over all clusters, ``fair`` serves the cluster with the fewest
running jobs, so each busy cluster gets an equal share of the CPUs, ``early`` serves the
cluster created first (4.15's ``--early_cluster_scheduler``). Jobs are spread to
the least-loaded node (when one cluster's jobs alone wait, at least one per free node,
a pass hands them out node by node, in the counts that rule gives). The caller turns
each decision into messages and reports back when a job ends or a node goes away.

A job may have a priority (an int, default 0): higher priorities go first, over all
clusters with ``fifo`` and within each cluster with ``fair``; equal priorities keep the
order of submission (pinned jobs too).

Clusters are admitted in the order they arrive: an ``exclusive`` cluster waits until
every admitted cluster is removed, and while it is admitted no other cluster is. The
caller sets up on nodes only the clusters that are admitted.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field

Job = Hashable
NodeKey = Hashable


@dataclass
class _Node:
    key: NodeKey
    cpus: int
    busy: int = 0
    #: jobs that may wait on the node beyond its CPUs (sent ahead of a free CPU)
    prefetch: int = 0
    #: cluster id -> CPUs that cluster may use here
    alloc: dict[Hashable, int] = field(default_factory=dict)
    #: cluster id -> jobs of that cluster running here
    used: dict[Hashable, int] = field(default_factory=dict)
    pinned: deque = field(default_factory=deque)
    #: some pinned job has a priority other than 0 (then the whole list is looked at)
    pinned_priorities: bool = False
    #: jobs running here -> their cluster, in the order they were sent (a lost node: no
    #: scan of all)
    jobs: dict = field(default_factory=dict)
    #: when it was added: breaks ties between equally loaded nodes
    order: int = 0

    def free(self) -> int:
        return self.cpus + (self.prefetch if self.cpus > 0 else 0) - self.busy

    def limit(self, cid: Hashable) -> int:
        """Jobs of ``cid`` the node may hold. Jobs sent ahead only for a cluster that may
        use every CPU: the node runs waiting jobs on whichever CPU frees up, so extra jobs
        of a cluster limited to fewer CPUs would run beyond its allocation."""
        cpus = self.alloc.get(cid, 0)
        return cpus + self.prefetch if cpus >= self.cpus > 0 else cpus

    def room(self, cid: Hashable) -> int:
        """Jobs of ``cid`` it may take now: its free CPUs and slots, within the limit."""
        return min(self.free(), self.limit(cid) - self.used.get(cid, 0))


@dataclass(slots=True)
class _Queued:
    """One queued job (slots: there is one per queued job, tens of thousands of them)."""

    seq: int
    job: Job
    cid: Hashable
    node: NodeKey | None
    priority: int = 0


class _Queue:
    """A cluster's queue: one deque per priority, the highest first. Nearly always one
    priority is in use, so this costs about what a single deque does."""

    __slots__ = ("levels", "order", "live")

    def __init__(self) -> None:
        self.levels: dict[int, deque[_Queued]] = {}
        #: priorities in use, highest first
        self.order: list[int] = []
        #: entries still queued (a cancelled one stays in its deque until it is reached)
        self.live = 0

    def append(self, entry: _Queued) -> None:
        self.live += 1
        level = self.levels.get(entry.priority)
        if level is None:
            level = self.levels[entry.priority] = deque()
            self.order.append(entry.priority)
            self.order.sort(reverse=True)
        level.append(entry)

    def __iter__(self) -> Iterator[_Queued]:
        for priority in self.order:
            yield from self.levels[priority]

    def head(self, live: Callable[[_Queued], bool]) -> _Queued | None:
        """The first live entry (dropping dead ones and emptied priorities on the way)."""
        while self.order:
            priority = self.order[0]
            level = self.levels[priority]
            while level and not live(level[0]):
                level.popleft()
            if level:
                return level[0]
            del self.levels[priority]
            self.order.pop(0)
        return None

    def popleft(self) -> _Queued:
        """Take the entry ``head`` returned (a live one)."""
        self.live -= 1
        return self.levels[self.order[0]].popleft()


POLICIES = ("fifo", "fair", "early")


class SchedulerCore:
    """Queues per cluster, CPU accounting per node, and the dispatch decision."""

    def __init__(self, policy: str = "fifo") -> None:
        if policy not in POLICIES:
            raise ValueError(f"scheduling policy must be one of {', '.join(POLICIES)}")
        self.policy = policy
        self._seq = itertools.count()
        #: clusters allowed to run; the exclusive one among them, if any
        self._admitted: set[Hashable] = set()
        self._exclusive: Hashable | None = None
        self._waiting: deque[tuple[Hashable, bool]] = deque()
        #: cluster id -> its jobs running anywhere (for the fair policy)
        self._runs: dict[Hashable, int] = {}
        #: cluster id -> order of arrival (for the early policy)
        self._order: dict[Hashable, int] = {}
        self._nodes: dict[NodeKey, _Node] = {}
        self._node_seq = itertools.count()
        #: the nodes with a free CPU or prefetch slot: dispatch looks only at these
        #: (after each batch of results; 1 000 nodes are mostly full)
        self._free: dict[NodeKey, _Node] = {}
        self._queues: dict[Hashable, _Queue] = {}
        self._entries: dict[Job, _Queued] = {}
        #: running job -> its node (the node maps it to its cluster: no tuple per job,
        #: 20 000 jobs in flight are that many fewer objects for the collector)
        self._running: dict[Job, _Node] = {}

    # ---- clusters ---------------------------------------------------------------

    def add_cluster(self, cid: Hashable, exclusive: bool = False) -> bool:
        """Queue a cluster for admission; True when it is admitted at once."""
        if cid in self._queues:
            return cid in self._admitted
        self._queues[cid] = _Queue()
        self._runs[cid] = 0
        self._order[cid] = next(self._seq)
        self._waiting.append((cid, exclusive))
        return cid in self.admit()

    def admit(self) -> list[Hashable]:
        """Admit waiting clusters in arrival order; returns the newly admitted ones.

        Nobody overtakes a waiting exclusive cluster, so it is not starved."""
        out = []
        while self._waiting:
            cid, exclusive = self._waiting[0]
            if self._exclusive is not None or (exclusive and self._admitted):
                break
            self._waiting.popleft()
            self._admitted.add(cid)
            if exclusive:
                self._exclusive = cid
            out.append(cid)
        return out

    def admitted(self, cid: Hashable) -> bool:
        return cid in self._admitted

    def waiting_for(self, cid: Hashable) -> list[Hashable]:
        """What an unadmitted cluster waits for: the admitted clusters, then those ahead."""
        ahead: list[Hashable] = []
        for other, _ in self._waiting:
            if other == cid:
                return sorted(self._admitted, key=str) + ahead
            ahead.append(other)
        return []

    def remove_cluster(self, cid: Hashable) -> list[Job]:
        """Forget a cluster; returns its jobs that were still queued. Call ``admit``
        afterwards: clusters that waited for this one may run now."""
        self._admitted.discard(cid)
        self._waiting = deque(w for w in self._waiting if w[0] != cid)
        if self._exclusive == cid:
            self._exclusive = None
        self._runs.pop(cid, None)
        self._order.pop(cid, None)
        left = [q.job for q in self._queues.pop(cid, ()) if self._live(q)]
        for job in left:
            del self._entries[job]
        for node in self._nodes.values():
            node.alloc.pop(cid, None)
            left += self.unpin(cid, node.key)
        return left

    def unpin(self, cid: Hashable, key: NodeKey) -> list[Job]:
        """Drop the jobs of ``cid`` queued for node ``key`` only; returns them."""
        node = self._nodes.get(key)
        if node is None:
            return []
        left = [q.job for q in node.pinned if q.cid == cid and self._live(q)]
        node.pinned = deque(q for q in node.pinned if q.cid != cid)
        for job in left:
            del self._entries[job]
        return left

    # ---- nodes ------------------------------------------------------------------

    def set_node(self, key: NodeKey, cpus: int) -> None:
        """Add a node or change its CPU count."""
        node = self._nodes.get(key)
        if node is None:
            node = self._nodes[key] = _Node(key, cpus, order=next(self._node_seq))
        else:
            node.cpus = cpus
        self._refresh(node)

    def _refresh(self, node: _Node) -> None:
        """Keep ``_free`` right after the node's CPUs, prefetch or load changed."""
        if node.free() > 0:
            self._free[node.key] = node
        else:
            self._free.pop(node.key, None)

    def set_prefetch(self, key: NodeKey, jobs: int) -> None:
        """Let up to ``jobs`` jobs wait on node ``key`` beyond its CPUs, so that its CPUs
        do not idle for a round trip between short jobs (see ``_Node.limit``)."""
        node = self._nodes.get(key)
        jobs = max(0, jobs)
        if node is not None and node.prefetch != jobs:  # (called with every result)
            node.prefetch = jobs
            self._refresh(node)

    def node_ready(self, cid: Hashable, key: NodeKey, cpus: int) -> None:
        """Cluster ``cid`` is set up on node ``key`` and may use ``cpus`` of its CPUs."""
        node = self._nodes[key]
        node.alloc[cid] = cpus
        node.used.setdefault(cid, 0)

    def node_unready(self, cid: Hashable, key: NodeKey) -> None:
        """Stop scheduling new jobs of ``cid`` on ``key`` (running jobs go on)."""
        node = self._nodes.get(key)
        if node is not None:
            node.alloc.pop(cid, None)

    def remove_node(self, key: NodeKey) -> tuple[list[Job], list[Job]]:
        """Forget a node; returns (jobs that were running there, jobs pinned to it)."""
        node = self._nodes.pop(key, None)
        if node is None:
            return [], []
        self._free.pop(key, None)
        running = list(node.jobs)
        for job, cid in node.jobs.items():
            del self._running[job]
            if cid in self._runs:
                self._runs[cid] -= 1
        pinned = [q.job for q in node.pinned if self._live(q)]
        for job in pinned:
            del self._entries[job]
        return running, pinned

    def nodes(self) -> Iterator[NodeKey]:
        return iter(self._nodes)

    def node_busy(self, key: NodeKey) -> int:
        node = self._nodes.get(key)
        return node.busy if node else 0

    def usable(self, cid: Hashable) -> bool:
        """True when some node is set up for ``cid``."""
        return any(n.alloc.get(cid, 0) > 0 for n in self._nodes.values())

    # ---- jobs -------------------------------------------------------------------

    def submit(self, cid: Hashable, job: Job, node: NodeKey | None = None,
               priority: int = 0) -> None:
        """Queue a job; with ``node`` it may run only there; higher ``priority`` first.
        KeyError for an unknown cluster or node, before anything changes."""
        queue = self._queues[cid] if node is None else None
        target = self._nodes[node] if node is not None else None
        entry = _Queued(next(self._seq), job, cid, node, priority)
        self._forget(self._entries.get(job))  # (a job queued again supersedes itself)
        self._entries[job] = entry
        if queue is not None:
            queue.append(entry)
        elif target is not None:
            target.pinned.append(entry)
            if priority:
                target.pinned_priorities = True

    def cancel(self, job: Job) -> bool:
        """Remove a queued job; False when it is not queued (running or unknown)."""
        entry = self._entries.pop(job, None)
        self._forget(entry)
        return entry is not None

    def _forget(self, entry: _Queued | None) -> None:
        """``entry`` is no longer queued (it stays in its deque until it is reached)."""
        if entry is not None and entry.node is None:
            queue = self._queues.get(entry.cid)
            if queue is not None:
                queue.live -= 1

    def finished(self, job: Job) -> NodeKey | None:
        """A running job ended; frees its CPU and returns the node it ran on."""
        node = self._running.pop(job, None)
        if node is None:
            return None
        cid = node.jobs.pop(job)
        if cid in self._runs:
            self._runs[cid] -= 1
        node.busy -= 1
        node.used[cid] = node.used.get(cid, 1) - 1
        self._refresh(node)
        return node.key

    def backlog(self, cid: Hashable) -> bool:
        """Whether jobs of ``cid`` are waiting for a CPU (pinned ones not counted)."""
        queue = self._queues.get(cid)
        return queue is not None and queue.head(self._live) is not None

    def queued(self, cid: Hashable) -> int:
        pinned = sum(
            1 for n in self._nodes.values() for q in n.pinned
            if q.cid == cid and self._live(q)
        )
        queue = self._queues.get(cid)
        return pinned + (queue.live if queue is not None else 0)

    def running_on(self, key: NodeKey) -> list[Job]:
        node = self._nodes.get(key)
        return list(node.jobs) if node is not None else []

    # ---- the decision -------------------------------------------------------------

    def _live(self, entry: _Queued) -> bool:
        """Still queued (not cancelled, not superseded by a resubmission of the job)."""
        return self._entries.get(entry.job) is entry

    def _head(self, queue: deque[_Queued]) -> _Queued | None:
        while queue and not self._live(queue[0]):
            queue.popleft()
        return queue[0] if queue else None

    def running(self, cid: Hashable) -> int:
        """Jobs of ``cid`` running on any node."""
        return self._runs.get(cid, 0)

    def _pick(self, node: _Node) -> _Queued | None:
        if node.pinned:
            self._head(node.pinned)
            pick = None
            for i, entry in enumerate(node.pinned):
                if self._live(entry) and node.used.get(entry.cid, 0) < node.limit(entry.cid):
                    if pick is None or entry.priority > pick[1].priority:
                        pick = (i, entry)
                    if not node.pinned_priorities:
                        break  # all of priority 0: the first one it is
            if pick is not None:
                del node.pinned[pick[0]]
                return pick[1]
        if len(node.alloc) == 1:  # one cluster uses the node (the common case): no ranks
            for cid in node.alloc:
                queue = self._queues.get(cid)
                if queue is None or node.used.get(cid, 0) >= node.limit(cid) \
                        or queue.head(self._live) is None:
                    return None
                return queue.popleft()
        best_q = None
        fair, early = self.policy == "fair", self.policy == "early"
        for cid in node.alloc:
            if node.used.get(cid, 0) >= node.limit(cid):
                continue
            queue = self._queues.get(cid)
            if queue is None:
                continue
            head = queue.head(self._live)
            if head is None:
                continue
            if fair:
                rank: tuple = (self._runs.get(cid, 0), -head.priority, head.seq)
            elif early:
                rank = (self._order.get(cid, 0), -head.priority, head.seq)
            else:
                rank = (-head.priority, head.seq)
            if best_q is None or rank < best_q[2]:
                best_q = (head, queue, rank)
        if best_q is None:
            return None
        return best_q[1].popleft()

    def dispatch(self) -> list[tuple[Job, Hashable, NodeKey]]:
        """Assign as many queued jobs as there are free CPUs (and prefetch slots; the
        least-loaded node first, so a free CPU wins over a slot): (job, cluster, node).
        Nothing queued: nothing to scan (it is called after every batch of results)."""
        return list(self.assign())

    def assign(self) -> Iterator[tuple[Job, Hashable, NodeKey]]:
        """``dispatch``, one job at a time: each job is assigned as it is taken, so a
        batch of 20 000 jobs is not 20 000 tuples alive at once (the collector would
        move them to its oldest generation and walk them in full collections). Stop
        taking and the jobs not taken stay queued. Between two jobs taken, the caller may
        end jobs (``finished``) or cancel queued ones; other changes wait for the pass
        to end (the node-by-node pass works its counts out first)."""
        if not self._entries:
            return
        only = self._only_queue()
        if only is not None and only[1].live >= len(self._free):  # (else few go anywhere)
            yield from self._assign_by_node(*only, list(self._free.values()))
            if not self._entries:
                return
        # (a node's load, busy / cpus, and free() written out: this loop runs once per
        # job sent)
        heap = [(n.busy / n.cpus if n.cpus else 1.0, n.order, n) for n in self._free.values()]
        heapq.heapify(heap)
        pop, push, pick = heapq.heappop, heapq.heappush, self._pick
        entries, running, runs = self._entries, self._running, self._runs
        while heap and entries:  # (the queues emptied: no node left to look at)
            _, i, node = pop(heap)
            entry = pick(node)
            if entry is None:
                continue
            job, cid = entry.job, entry.cid
            del entries[job]
            node.busy += 1
            node.used[cid] = node.used.get(cid, 0) + 1
            running[job] = node
            node.jobs[job] = cid
            runs[cid] = runs.get(cid, 0) + 1
            if node.cpus + (node.prefetch if node.cpus > 0 else 0) > node.busy:
                push(heap, (node.busy / node.cpus if node.cpus else 1.0, i, node))
            else:
                self._free.pop(node.key, None)
            yield job, cid, node.key

    def _only_queue(self) -> tuple[Hashable, _Queue] | None:
        """The cluster whose jobs alone wait (not pinned), and its queue; else None."""
        only = None
        for cid, queue in self._queues.items():
            if queue.live > 0:
                if only is not None:
                    return None
                only = (cid, queue)
        return only

    def _assign_by_node(self, cid: Hashable, queue: _Queue,
                        nodes: list[_Node]) -> Iterator[tuple[Job, Hashable, NodeKey]]:
        """``assign`` when one cluster's jobs alone wait, at least one per free node:
        node by node. Each node gets as many jobs as taking them one at a time,
        least-loaded first, would give it (the same count), and they are handed out
        together. One at a time, each job touched another node's objects (at 1 000
        nodes, out of the CPU's cache); node by node, the client's CPU per job is 6-11 %
        lower at 1 000 nodes and 3-4 % at 10. Nothing is taken when a node has pinned
        jobs (they go first: ``assign``'s one-at-a-time way decides then)."""
        if any(node.pinned for node in nodes):
            return
        rooms = [node.room(cid) for node in nodes]
        want = queue.live
        # (load, order, index, busy, cpus) of the nodes that may take one
        ready = [(n.busy / n.cpus, n.order, i, n.busy, n.cpus)
                 for i, n in enumerate(nodes) if rooms[i] > 0]
        if want >= sum(rooms[entry[2]] for entry in ready):  # all fill up: no choice
            ready.sort()
            counts, first = rooms, [entry[2] for entry in ready]
        else:  # how many each gets: the one-at-a-time order, on these numbers alone
            heapq.heapify(ready)
            counts = [0] * len(nodes)
            first = []  # nodes in the order they get their first job
            replace, pop = heapq.heapreplace, heapq.heappop
            while want and ready:
                _, order, i, busy, cpus = ready[0]
                got = counts[i] + 1
                if got == 1:
                    first.append(i)
                counts[i] = got
                want -= 1
                if got < rooms[i]:
                    replace(ready, ((busy + got) / cpus, order, i, busy, cpus))
                else:
                    pop(ready)
        # Jobs that start at once first, then those that wait in prefetch slots: the
        # one-at-a-time way fills every free CPU before any slot, so no job waits in a
        # slot while one queued after it runs.
        now = [min(counts[i], max(0, nodes[i].cpus - nodes[i].busy)) for i in first]
        plan = [(i, start) for i, start in zip(first, now, strict=True) if start]
        plan += [(i, counts[i] - start) for i, start in zip(first, now, strict=True)
                 if counts[i] > start]
        entries, running, runs, live = self._entries, self._running, self._runs, self._live
        free = self._free
        for i, count in plan:
            node = nodes[i]
            key, jobs, used = node.key, node.jobs, node.used
            room = node.cpus + (node.prefetch if node.cpus > 0 else 0)
            # (as the node is now: between two jobs taken, the engine may end or cancel
            # jobs)
            for _ in range(min(count, node.room(cid))):
                if queue.head(live) is None:  # (cancelled meanwhile: none left)
                    return
                job = queue.popleft().job
                del entries[job]
                node.busy += 1
                used[cid] = used.get(cid, 0) + 1
                running[job] = node
                jobs[job] = cid
                runs[cid] = runs.get(cid, 0) + 1
                if node.busy >= room:
                    free.pop(key, None)
                yield job, cid, key
