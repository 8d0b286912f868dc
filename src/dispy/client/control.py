"""What a cluster's node methods do, on the engine's loop: find, allocate, deallocate,
close or re-set-up a node, change its CPUs, send it a file; and closing or detaching a
whole cluster. ``JobCluster``'s methods (cluster.py) and dispyscheduler's programs'
requests (scheduler/clients.py) come here through ``Engine.control``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from ..eventloop import within
from ..scheduling.nodesetup import Setup
from ..wire import messages
from . import upload
from .clusterstate import ClusterState
from .enginehost import EngineHost
from .job import DispyJob
from .journal import Journal
from .links import NodeLink
from .nodes import DispyNode

log = logging.getLogger("dispy")

#: Seconds after a cluster starts during which a node matching one of its patterns may
#: still answer the discovery broadcast (``node_readiness``).
DISCOVERY_WAIT = 3.0


class NodeControl:
    def __init__(self, engine: EngineHost) -> None:
        self.engine = engine

    def find_link(self, cs: ClusterState, ip: str, port: int | None) -> NodeLink | None:
        """(loop) The connection to the node at ``ip`` (and ``port``) known to ``cs``."""
        for link in self.engine.links.values():
            if (link.profile == cs.profile and link.ip == ip and (port is None or link.port == port)
                    and self.engine.setups.known(link.key, cs.cid)):
                return link
        return None

    def node_readiness(self, cs: ClusterState, ip: str, port: int | None) -> tuple[Any, bool]:
        """(loop) (link, pending): the link to the node as ``find_link`` gives it, and
        whether the node is still being connected or set up for ``cs`` (worth waiting
        for: ``submit_node`` right after ``JobCluster()`` names a listed node)."""
        link = self.find_link(cs, ip, port)
        if link is not None:
            setting_up = self.engine.setups.state(link.key, cs.cid) is Setup.SETTING_UP
            return (None, True) if setting_up else (link, False)
        links = [lk for lk in self.engine.links.values() if lk.profile == cs.profile and lk.ip == ip
                 and (port is None or lk.port == port)
                 and self.engine.wants(cs, lk.ip, lk.port) is not None]
        if links:
            return None, any(lk.state in ("connecting", "connected") for lk in links)
        allocs = [a for a in cs.allocs if a.matches(ip, port)]
        if any(not a.wildcard for a in allocs):
            return None, True
        # a pattern's nodes answer the discovery broadcast within moments, or not at all
        return None, bool(allocs) and time.monotonic() - cs.created < DISCOVERY_WAIT

    def allocate_node(self, cs: ClusterState, allocs: list) -> int:
        """(loop) Add nodes to a cluster: set up new ones, reuse deallocated or closed ones."""
        cs.allocs[:0] = allocs
        cs.allocs.sort(key=lambda a: (a.wildcard, -len(a.host)))
        for link in list(self.engine.links.values()):
            if link.profile != cs.profile or not any(a.matches(link.ip, link.port)
                                                     for a in allocs):
                continue
            self.engine.setups.reallocate(link.key, cs.cid, cs.node_cpus.get(link.key, 1))
            if link.state == "connected":
                self.engine.consider(link, cs)
        self.engine.finder.ask(cs, allocs)
        self.engine.dispatch()
        return 0

    def deallocate_node(self, cs: ClusterState, link: NodeLink) -> int:
        """(loop) No new jobs of ``cs`` go to this node; it stays set up."""
        return 0 if self.engine.setups.deallocate(link.key, cs.cid) else -1

    def node_jobs(self, cs: ClusterState, link: NodeLink) -> list[DispyJob]:
        return [job for job in link.running.values() if job._cluster is cs]

    def set_node_cpus(self, cs: ClusterState, link: NodeLink, cpus: int) -> int:
        node = link.node
        if node is None:
            return -1
        n = min(cpus, node.cpus) if cpus > 0 else node.cpus + cpus
        if n <= 0:
            log.error("set_node_cpus(%s, %d): node has %d CPUs; none would be used",
                      link.describe(), cpus, node.cpus)
            return -1
        cs.node_cpus[link.key] = n
        if self.engine.setups.set_cpus(link.key, cs.cid, n):
            self.engine.dispatch()
        return n

    async def send_file(self, cs: ClusterState, link: NodeLink, path: str) -> int:
        reason = await upload.send_file(link, cs.cid, path, os.path.basename(path),
                                        self.engine.msg_timeout * 3, confirm=True)
        if reason is None:
            return 0
        log.error("send_file(%s, %s) failed: %s", path, link.describe(), reason)
        return -1

    def close_node(self, cs: ClusterState, link: NodeLink, terminate: bool,
                   resetup: bool = False) -> int:
        """(loop) Release a node for ``cs`` (running jobs finish first unless ``terminate``);
        with ``resetup``, set the computation up there again (``allocate`` is asked again
        for its CPUs and setup_args). No new job goes there from the moment this returns."""
        out = self.engine.setups.close(link.key, cs.cid, resetup, link.describe())
        if out is None:
            return -1
        self.engine.apply(out)
        if terminate:
            for job in self.node_jobs(cs, link):
                link.send(messages.Cancel(cid=cs.cid, uid=job._uid))
        asyncio.get_running_loop().create_task(self._close_node(cs, link, terminate, resetup))
        return 0

    async def _close_node(self, cs: ClusterState, link: NodeLink, terminate: bool,
                          resetup: bool) -> None:
        while self.node_jobs(cs, link) and link.conn is not None:
            await asyncio.sleep(0.05)
        if link.conn is not None:
            fut = asyncio.get_running_loop().create_future()
            link.closing[cs.cid] = fut
            link.send(messages.Close(cid=cs.cid, terminate=terminate, keep=resetup))
            try:
                await within(fut, self.engine.msg_timeout + 15)
            except asyncio.TimeoutError:
                log.warning("node %s did not confirm closing %r", link.describe(), cs.name)
        setups = self.engine.setups
        if not setups.closing(link.key, cs.cid):
            return  # the node was lost meanwhile
        alloc = self.engine.wants(cs, link.ip, link.port)
        node = link.node
        cpus, why = 0, "not connected"
        if resetup and alloc is not None and node is not None and link.state == "connected":
            chosen, cpus = self.engine.allocation(cs, link)
            alloc, why = chosen or alloc, "NodeAllocate gave 0 CPUs"
        self.engine.apply(setups.closed(link.key, cs.cid, cpus, link.describe(), why))
        if setups.state(link.key, cs.cid) is Setup.SETTING_UP and node is not None:
            cs.node_cpus[link.key] = min(cpus, node.cpus)
            await self.engine.set_up(link, cs, alloc)
            return
        self.release_idle_links()

    # ---- closing --------------------------------------------------------------------

    async def close_cluster(self, cs: ClusterState, terminate: bool) -> None:
        """Close the computation on every node; release nodes no cluster uses any more."""
        self.engine.apply(self.engine.lifecycle.cluster_closing(cs.cid))
        waits = []
        states = self.engine.setups.remove_cluster(cs.cid)
        for link in list(self.engine.links.values()):
            state = states.get(link.key)
            if state is None or link.conn is None:
                continue
            fut = asyncio.get_running_loop().create_future()
            link.closing[cs.cid] = fut
            link.send(messages.Close(cid=cs.cid, terminate=terminate))
            waits.append((link, fut, state))
        for link, fut, state in waits:
            try:
                await within(fut, self.engine.msg_timeout + 15)
            except asyncio.TimeoutError:
                log.warning("node %s did not confirm closing %r", link.describe(), cs.name)
            self.engine.core.node_unready(cs.cid, link.key)
            if state is Setup.READY:
                self.engine.sink.status(cs, DispyNode.Closed, link.node, None)
        self.engine.apply(self.engine.lifecycle.cluster_closed(cs.cid))
        for job in list(cs.jobs.values()):  # none are left; never leave one without a status
            self.engine.sink.finish(job, DispyJob.Cancelled, "Cancelled: cluster closed")
        self.engine.clusters.pop(cs.cid, None)
        self.engine.forget_lanes(cs.cid)
        try:
            if cs.journal.remove_cluster(cs.cid):
                self.engine.sink.forget_journal(cs.journal)
        except Exception as exc:
            log.warning("recover file %s not updated: %s", cs.journal.path, exc)
        self.release_idle_links()

    async def detach_cluster(self, cs: ClusterState) -> None:
        """Let go of a cluster without closing it on its nodes: its jobs go on there and
        stay in its recover file for a later ``recover_jobs`` (which uses this for the
        jobs it reran when its ``timeout`` passes)."""
        cs.journal.flush()
        for uid in self.engine.lifecycle.forget_cluster(cs.cid):
            for link in self.engine.links.values():
                link.running.pop(uid, None)
        self.engine.setups.remove_cluster(cs.cid)
        self.engine.clusters.pop(cs.cid, None)
        self.engine.forget_lanes(cs.cid)
        journal: Journal = cs.journal
        self.engine.sink.forget_journal(journal)
        journal.closed = True
        journal.close()
        self.release_idle_links()

    def release_idle_links(self) -> None:
        """Disconnect from nodes that no open cluster uses, so other clients may."""
        setups = self.engine.setups
        for link in list(self.engine.links.values()):
            if not setups.holds(link.key) and link.conn is not None and not any(
                    cs.profile == link.profile and self.engine.wants(cs, link.ip, link.port)
                    and setups.state(link.key, cs.cid) is None
                    for cs in self.engine.clusters.values()):
                link.flush_acks()
                conn, link.conn = link.conn, None
                link.state, link.reason = "new", "released"
                self.engine.core.remove_node(link.key)
                if conn is not None:
                    conn.close()
