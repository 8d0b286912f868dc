"""The client's engine: one asyncio loop in a background thread per program.

It discovers nodes, keeps one authenticated connection to each, sets computations up
on them, and turns the scheduling core's decisions into messages. The public API is
synchronous: it hands work to this thread and waits on events. User callbacks run on
the callback thread, never here.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Hashable
from typing import Any

from .. import config
from ..log import detail, last_line, why
from ..scheduling import SchedulerCore
from ..scheduling.lifecycle import End, Instruction, JobLifecycle, Resubmit, SendCancel
from ..scheduling.nodesetup import (
    Change,
    NodeChanged,
    NodeSetups,
    Out,
    Setup,
    all_matching,
    matching,
)
from ..wire import heap, localpath, messages, netif, records, tls
from ..wire.codec import FrameError, Limits
from ..wire.connection import Connection, ConnectionClosed
from ..wire.handshake import HandshakeError, client_handshake
from ..wire.sessions import new_session_key
from . import joboptions, lanes, upload
from .clusterstate import ClusterState
from .control import NodeControl
from .finder import RETRY_INTERVAL, NodeFinder
from .job import DispyJob
from .links import Flushable, NodeLink, Profile
from .liveness import NodeWatch
from .localsink import LocalSink
from .loopthread import STOPPED, LoopThread
from .nodes import DispyNode, avail_from
from .sink import JobSink
from .stall import stall_message

log = logging.getLogger("dispy")
#: what a node sends on the way to a program's first result (their parse plans are
#: worked out while the first connection is under way: ``records.warm``)
FIRST_JOB_RECORDS = (messages.SetupDone, messages.Done)


def stop_program_engines() -> None:
    """(the program exits) Close the engines' journals and end their loop threads.
    Called by the exit handler ``import dispy`` registers (dispy/__init__.py), so it
    runs after the handlers the program registers later, which may still close their
    clusters."""
    for engine in list(_PROGRAM_ENGINES):
        engine._at_exit()


#: ``Engine.allocation``: the program is being asked (through dispyscheduler)
ASKING = object()


class Engine:
    """Process-wide singleton; created by the first cluster."""

    _instance: Engine | None = None
    _lock = threading.Lock()

    @classmethod
    def get(cls, port: int, ip_addrs: list[str] | None) -> Engine:
        with cls._lock:
            if cls._instance is not None and cls._instance.bridge.stopped:
                # a new engine now would outlive the exit handlers (none registered
                # while they run is called) and bring back the crash they prevent
                raise RuntimeError(STOPPED)
            if cls._instance is None or not cls._instance.bridge.alive():
                cls._instance = Engine(port, ip_addrs)
            elif (port, ip_addrs or None) != (cls._instance.port, cls._instance.ip_addrs):
                log.warning("this program's clusters share the addresses the first one gave"
                            " (port=%s, ip_addr=%s): port=%s, ip_addr=%s are not used",
                            cls._instance.port, cls._instance.ip_addrs, port, ip_addrs)
            return cls._instance

    def __init__(self, port: int, ip_addrs: list[str] | None,
                 loop: asyncio.AbstractEventLoop | None = None, policy: str = "fifo",
                 msg_timeout: float | None = None, sink: JobSink | None = None) -> None:
        self.client_id = uuid.uuid4().hex
        #: seconds to wait for a peer's answer (dispyscheduler passes its --msg_timeout)
        self.msg_timeout = config.MsgTimeout if msg_timeout is None else msg_timeout
        #: secret: binds this program's connections to its sessions on daemons
        self.session_key = new_session_key()
        self.client_name = f"{socket.gethostname()}:{os.getpid()}"
        self.port = port
        self.ip_addrs = ip_addrs or None
        self.ifs = netif.select(ip_addrs)
        self.core = SchedulerCore(policy)
        self.lifecycle = JobLifecycle(self.core, self.new_uid)
        #: which cluster uses which node, how far along (scheduling/nodesetup.py)
        self.setups = NodeSetups(self.lifecycle)
        self.clusters: dict[str, Any] = {}
        self.links: dict[Hashable, NodeLink] = {}
        #: SharedJobCluster's connections to dispyschedulers, by (host, port, profile)
        self.scheduler_links: dict[tuple, Any] = {}
        if loop is None:
            heap.keep_freed()  # before the loop's thread allocates anything
        #: the loop (in its own thread, unless a daemon gives its loop) and the way in
        self.bridge = LoopThread(loop, self._after_batch)
        self.loop = self.bridge.loop
        self.call = self.bridge.call
        self.post = self.bridge.post
        self.settle = self.bridge.settle
        #: where jobs end: this program (localsink.py) or dispyscheduler's programs
        self.sink: JobSink = sink if sink is not None else LocalSink(self.session_key)
        if isinstance(self.sink, LocalSink):
            settled = self.settled  # bound once: one post per finished job
            self.sink.callbacks.on_settled = lambda job: self.post(settled, job)
        #: asks for nodes and hears them (client/finder.py)
        self.finder = NodeFinder(self, port, self.ifs)
        #: what a cluster's node methods do (client/control.py)
        self.control = NodeControl(self)
        #: when a node is presumed dead (client/liveness.py)
        self.watch = NodeWatch(self)
        self._uids = itertools.count(1)
        #: links ``dispatch`` queued jobs on since the last batch of the program's calls
        self._sent_to: dict[Hashable, Flushable] = {}
        self._flush_planned = False
        #: lanes open and being opened, and refused per cluster (client/lanes.py: TOTAL)
        self._lanes_total = 0
        self._lanes_opening = 0
        self._lanes_refused: dict[str, int] = {}
        if loop is not None:  # a daemon (dispyscheduler) runs us on its own loop
            return
        _PROGRAM_ENGINES.add(self)
        self.call(self.start()).result()

    def _after_batch(self) -> None:
        """(loop) After the calls posted by the program's threads (submits, cancels).
        The jobs of the batch leave now, not a loop turn later: nothing else would join
        them, and a program waiting on each job sees its result sooner."""
        try:
            self.dispatch()
            self.sink.flush_journals()  # submitted jobs are in the recover file from here
        finally:  # what dispatch queued goes out, also if something after it failed
            self._flush_sent()

    def flush_later(self, key: Hashable, link: Flushable) -> None:
        """``link`` has frames queued with ``flush_soon=False``: write them once the
        current callback ends, with the other links' (a batch of the program's calls
        flushes in ``_after_batch``; anywhere else one flush is planned per turn: a flush
        planned from a planned callback costs the loop one more turn and a poll)."""
        self._sent_to[key] = link
        if not self._flush_planned and not self.bridge.draining:
            self._flush_planned = True
            self.loop.call_soon(self._flush_sent)

    def _flush_sent(self) -> None:
        """Write what was queued for ``flush_later``: one flush per link (a link that
        fails to write is logged and does not keep the others' frames back)."""
        self._flush_planned = False
        sent, self._sent_to = self._sent_to, {}
        for link in sent.values():
            try:
                link.flush()
            except Exception:
                log.exception("engine: writing to %s failed", link.describe())

    def _at_exit(self) -> None:
        """The program exits (also after Ctrl-C): remove recover files with nothing left
        to recover; name the others and how to get their jobs' results."""
        async def close() -> list[tuple[str, int]]:
            for link in list(self.links.values()):  # results the program took: acked, so
                try:  # the nodes need not keep them
                    link.flush_acks(flush_soon=False)
                    link.flush()
                except Exception:  # (the recover files are closed all the same)
                    log.exception("engine: acknowledging results to %s failed",
                                  link.describe())
            return self.local.close_journals()

        if not self.bridge.alive():
            return
        self.local.callbacks.drain(2)  # callbacks that ran let their jobs be forgotten first
        try:
            kept = self.call(close()).result(timeout=5)
        except Exception:
            kept = []
        finally:
            self.bridge.stop()
        for path, left in kept:
            log.warning("recover file %s keeps %d job(s) that did not finish; "
                        "dispy.recover_jobs(%r) gets their results", path, left, path)

    @property
    def local(self) -> LocalSink:
        """The sink of a program's own engine (JobCluster, SharedJobCluster)."""
        assert isinstance(self.sink, LocalSink), "not a program's engine"
        return self.sink

    def new_uid(self) -> str:
        return f"{next(self._uids):x}"

    # ---- start ------------------------------------------------------------------

    async def start(self) -> None:
        await self.finder.start()
        asyncio.get_running_loop().create_task(self._housekeeping())

    # ---- clusters -----------------------------------------------------------------

    def add_cluster(self, cs: ClusterState) -> None:
        """(loop) A new cluster: find its nodes."""
        cs.journal = self.sink.journal_for(cs)
        self.clusters[cs.cid] = cs
        self.core.add_cluster(cs.cid)
        cs.created = time.monotonic()
        self.finder.ask(cs)
        for link in list(self.links.values()):
            if link.state == "connected" and link.profile == cs.profile:
                self.consider(link, cs)

    def link_for(self, ip: str, port: int, profile: Profile) -> NodeLink:
        key = (ip, port, profile)
        link = self.links.get(key)
        if link is None:
            link = self.links[key] = NodeLink(ip, port, profile)
            link.commit = self.sink.flush_journals
        return link

    def wants(self, cs: ClusterState, ip: str, port: int) -> Any:
        return matching(cs.allocs, ip, port)

    # ---- connections ----------------------------------------------------------------

    def connect(self, link: NodeLink) -> asyncio.Task:
        log.debug("node %s: connecting", link.describe())
        link.state = "connecting"
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._open(link))
        # while the connect and the node's handshake are under way, not when they come
        loop.call_soon(records.warm, FIRST_JOB_RECORDS)
        return task

    async def _open(self, link: NodeLink) -> None:
        timeout = self.msg_timeout
        try:
            ctx = tls.client_context(link.profile.certfile, link.profile.keyfile)
            conn = await Connection.open(link.ip, link.port, ctx, timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            self.unreachable(link, tls.explain_handshake_failure(exc, ctx is not None)
                              or f"cannot connect: {why(exc, 'timed out')}")
            return
        try:
            welcome = await self._handshake(link, conn)
        except HandshakeError as exc:
            link.state, link.reason = "refused", str(exc)
            link.retry_at = time.monotonic() + RETRY_INTERVAL * 6
            log.warning("node %s: %s", link.describe(), exc)
            conn.close()
            self.watch.retry_later(link)
            return
        except (OSError, asyncio.TimeoutError, ConnectionClosed, FrameError) as exc:
            conn.close()
            self.unreachable(link, tls.explain_handshake_failure(exc, ctx is not None)
                              or f"handshake failed: {why(exc)}")
            return
        if welcome.get("busy_with"):
            link.state, link.reason = "busy", f"busy with client {welcome['busy_with']}"
            link.retry_at = time.monotonic() + RETRY_INTERVAL
            conn.close()
            self.watch.retry_later(link)
            return
        link.local_name = localpath.offered(conn, welcome)
        conn, welcome = await localpath.move(conn, welcome, lambda c: self._handshake(link, c),
                                             "node_id", timeout, f"node {link.describe()}")
        self._connected(link, welcome, conn)

    async def _handshake(self, link: NodeLink, conn: Connection) -> dict:
        return await client_handshake(conn, link.profile.secret, self.hello(),
                                      self.msg_timeout, Limits(max_buffer=config.MaxFrameSize))

    def hello(self) -> dict[str, str]:
        """What this program says of itself in a handshake (the session key is secret)."""
        return {"client_id": self.client_id, "client_name": self.client_name,
                "session": self.session_key}

    def unreachable(self, link: NodeLink, reason: str) -> None:
        relay = self.finder.relays.get((link.ip, link.port))
        if relay is not None:  # no node there: its network's nodes answer through it
            link.state, link.reason = "relay", f"a dispynetrelay ({relay})"
            return
        log.debug("node %s: not used now: %s", link.describe(), reason)
        link.state, link.reason = "down", reason
        link.retry_at = time.monotonic() + RETRY_INTERVAL
        self.watch.retry_later(link)

    def _connected(self, link: NodeLink, welcome: dict, conn: Connection) -> None:
        log.debug("node %s: handshake done: %s CPUs", link.describe(), welcome.get("cpus"))
        restarted = link.node_id is not None and welcome.get("node_id") != link.node_id
        if restarted:
            self.watch.dead(link, "node restarted")
            link.node = None  # another node now answers there: its counts start over
        link.node_id = welcome.get("node_id")
        self.finder.met(link.node_id, link.ip, link.port)
        link.conn, link.state, link.reason = conn, "connected", "connected"
        link.lost_at = None
        link.last_heard = time.monotonic()
        if link.node is None:
            link.node = DispyNode(link.ip, str(welcome.get("name")), int(welcome["cpus"]),
                                  link.port)
        node = link.node
        node.cpus = node.avail_cpus = int(welcome["cpus"])
        node.platform = str(welcome.get("platform", ""))
        node.avail_info = avail_from(welcome.get("avail_info"))
        node.update_time = time.time()
        self.core.set_node(link.key, node.cpus)
        loop = asyncio.get_running_loop()
        loop.create_task(self._read(link, conn))
        if link.running:  # connected again: the old connection may have lost frames
            loop.create_task(self._ask_running(link, conn, list(link.running)))
        for cs in list(self.clusters.values()):
            if cs.profile == link.profile and self.setups.state(link.key, cs.cid) is None:
                self.consider(link, cs)
        self.dispatch()

    async def _ask_running(self, link: NodeLink, conn: Connection, uids: list[str]) -> None:
        """After a reconnect, ask the node which of the jobs running there it knows. A job
        frame may have been lost with the old connection, and a refusal the node could
        not send while we were away is not kept (it keeps results only): a job the node
        does not know runs again (reentrant) or ends with the reason, as a refused one."""
        while True:
            # the node answers after the results it resends on a reconnect: allow for them
            answer = await conn.request(messages.JobsQuery(uids=uids),
                                        timeout=3 * self.msg_timeout)
            if link.conn is not conn or conn.is_closing():
                return  # the connection went again: asked again on the next one
            if answer is not None:
                break
            uids = [uid for uid in uids if uid in link.running]
            if not uids:
                return
        try:
            unknown = messages.parse_reply(answer).unknown or []
        except messages.MessageError as exc:
            log.warning("node %s: bad answer to jobs_query: %s", link.describe(), exc)
            return
        reason = f"node {link.describe()} lost it with the connection"
        for uid in unknown:
            job = self._given_back(link, uid, reason)  # None: its result came meanwhile
            if job is not None:
                log.warning("job %s of %r: %s", job.id, job._cluster.name, reason)
        self.dispatch()

    def consider(self, link: NodeLink, cs: ClusterState) -> None:
        """Should ``cs`` use this node? If so, set the computation up there."""
        node = link.node
        if (self.wants(cs, link.ip, link.port) is None or node is None
                or self.setups.known(link.key, cs.cid)
                or cs.cid in self.lifecycle.closing):  # (its setups are gone meanwhile)
            return
        alloc, given = self.allocation(cs, link, ask=True)
        if alloc is ASKING:
            self.setups.asking(link.key, cs.cid)  # the sink calls set_up when it knows
            return
        cpus = self.setups.allocated(link.key, cs.cid, given, node.cpus)
        if cpus <= 0:
            log.debug("node %s is not used for %r: NodeAllocate gave 0 CPUs", link.describe(),
                      cs.name)
            return
        cs.node_cpus[link.key] = cpus
        asyncio.get_running_loop().create_task(self.set_up(link, cs, alloc))

    def allocation(self, cs: ClusterState, link: NodeLink,
                   ask: bool = False) -> tuple[Any, int]:
        """The first of the cluster's NodeAllocates matching the node that gives it CPUs,
        and how many; (None, 0): none does. Each is asked in turn (the spec's "each
        NodeAllocate object's allocate method is called"), so a filter that says 0
        leaves the node to the next one. With ``ask``, (ASKING, 0) when the sink asks
        the program for one (dispyscheduler: it asks that one, then the next ones)."""
        for alloc in all_matching(cs.allocs, link.ip, link.port):
            if ask and self.sink.allocates_later(link, cs, alloc):
                return ASKING, 0
            cpus = self.sink.allocate(cs, link, alloc)
            if cpus > 0:
                return alloc, cpus
        return None, 0

    async def set_up(self, link: NodeLink, cs: ClusterState, alloc: Any) -> None:
        """Set the computation up on a node with what ``alloc`` gives it (the sink
        decides: files and setup_args)."""
        files, setup_args = self.sink.setup_payload(cs, link, alloc)
        await upload.set_up(link, cs, files, setup_args, self.msg_timeout * 3)

    # ---- messages from nodes --------------------------------------------------------

    async def _read(self, link: NodeLink, conn: Connection) -> None:
        """A node's frames, handled as they are decoded (in the read callback)."""
        def frame(header: dict, bufs: list[bytes]) -> None:
            link.last_heard = time.monotonic()
            if link.node is not None:
                link.node.rx += sum(map(len, bufs)) + 64
            self._on_frame(link, header, bufs)

        def after() -> None:  # its journal commit also covers the finished jobs
            link.ack_soon(committed=self.dispatch())

        reason = "connection closed by node"
        try:
            ended = await conn.deliver_to(frame, after)
            if isinstance(ended, FrameError):
                reason = f"bad frame from node: {ended}"
                log.warning("node %s: %s", link.describe(), reason)
            else:
                reason = f"connection lost: {ended}"
        finally:
            conn.close()
            if link.conn is conn:
                link.conn = None
                for lane in list(link.lanes):  # (their jobs are the node's to report)
                    lane.conn.close()
                self.watch.lost(link, reason)

    def _on_frame(self, link: NodeLink, header: dict, bufs: list[bytes]) -> None:
        op = header.get("op")
        if op == "reply":
            return  # an answer that came after its request timed out
        try:
            msg = (messages.Done.parse(header) if op == "done"  # one per job
                   else messages.parse_node_message(header))
        except messages.MessageError as exc:
            log.warning("node %s: dropped a frame: %s", link.describe(), exc)
            return
        try:
            self._handle(link, msg, header, bufs)
        except Exception:  # a bug here must not cost the node's other jobs their link
            log.exception("engine: failed to handle %r from node %s", header.get("op"),
                          link.describe())

    def _handle(self, link: NodeLink, msg: messages.Record, header: dict,
                bufs: list[bytes]) -> None:
        if isinstance(msg, messages.Done):
            self._job_done(link, msg, header, bufs)
        elif isinstance(msg, messages.SetupDone):
            self._setup_done(link, msg)
        elif isinstance(msg, messages.Provisional):
            job = link.running.get(msg.uid)
            if job is not None and msg.cid is not None and msg.cid != job._cluster.cid:
                return  # (another computation's process named this job)
            self.sink.provisional(job, bufs)
        elif isinstance(msg, messages.JobRefused):
            self._job_refused(link, msg)
        elif isinstance(msg, messages.ComputationLost):
            self._computation_lost(link, msg)
        elif isinstance(msg, messages.Closed):
            if msg.problem:
                self.sink.cleanup_failed(self.clusters.get(msg.cid),
                                         f"node {link.describe()}", msg.problem)
            fut = link.closing.pop(msg.cid, None)
            if fut is not None and not fut.done():
                fut.set_result(True)
        elif isinstance(msg, messages.Pulse):
            self._pulse(link, msg)
        elif isinstance(msg, messages.SendFile):
            self.sink.file_from_node(f"node {link.describe()}", msg, bufs)
        elif isinstance(msg, messages.Cpus):
            self._node_cpus(link, msg.cpus)

    def _setup_done(self, link: NodeLink, msg: messages.SetupDone) -> None:
        cs = self.clusters.get(msg.cid)
        if cs is None or self.setups.state(link.key, cs.cid) is not Setup.SETTING_UP:
            return  # closed meanwhile (close_node during setup)
        cpus = cs.node_cpus.get(link.key, 1)
        if msg.ok:
            log.debug("node %s: %r set up, %d CPUs for it", link.describe(), cs.name, cpus)
        else:
            log.warning("node %s is not used for %r: setup failed: %s", link.describe(),
                        cs.name, last_line(msg.reason), extra=detail(msg.reason))
        self.apply(self.setups.setup_done(link.key, cs.cid, msg.ok, msg.reason or "", cpus,
                                          link.describe()))

    # ---- lanes (client/lanes.py) -----------------------------------------------------

    def _open_lanes(self, link: NodeLink, cs: ClusterState, cpus: int) -> None:
        """Ask for the lanes ``cs`` may have on this node (one at a time)."""
        if link.profile.certfile is not None and link.local_name is None:
            return  # (TLS: the node cannot hand its session over)
        if lanes.wanted(link.lanes, cs.cid, cpus, self._lanes_total + self._lanes_opening
                        + self._lanes_refused.get(cs.cid, 0)):
            self._lanes_opening += 1
            self.loop.create_task(self._open_lane(link, cs, cpus))

    async def _open_lane(self, link: NodeLink, cs: ClusterState, cpus: int) -> None:
        try:
            lane = await lanes.open_lane(
                link.ip, link.port, link.local_name, link.profile.secret, self.hello(),
                cs.cid, self.msg_timeout, Limits(max_buffer=config.MaxFrameSize))
        finally:
            self._lanes_opening -= 1
        if lane is None:  # (a cluster of many nodes that have none asks only so many)
            self._lanes_refused[cs.cid] = self._lanes_refused.get(cs.cid, 0) + 1
            return
        if (link.conn is None or self.clusters.get(cs.cid) is not cs
                or self.setups.state(link.key, cs.cid) is not Setup.READY):
            lane.conn.close()  # (closed or lost meanwhile)
            return
        link.lanes.append(lane)
        self._lanes_total += 1
        log.debug("node %s: %s open", link.describe(), lane.describe())
        self._open_lanes(link, cs, cpus)
        self.dispatch()

        def frame(header: dict, bufs: list[bytes]) -> None:
            lane.uid = None
            link.last_heard = time.monotonic()
            self._on_frame(link, header, bufs)

        def after() -> None:
            link.ack_soon(committed=self.dispatch())

        try:
            await lanes.serve(lane, frame, after)
        finally:
            lane.conn.close()
            if lane in link.lanes:
                link.lanes.remove(lane)
                self._lanes_total -= 1
            uid = lane.uid
            if uid is not None:  # the node reports it; if it does not know it: given back
                self.loop.call_later(lanes.CHECK_AFTER, self._lane_job_check, link, uid)
            if link.conn is not None:  # (its process died, or it was dropped: again)
                self.loop.call_later(lanes.REOPEN_AFTER, self._reopen_lanes, link, cs, cpus)
            else:
                link.lanes_asked.pop(cs.cid, None)  # (asked again after a reconnect)

    def forget_lanes(self, cid: str) -> None:
        """A cluster is gone: what was counted of its lanes goes (its lanes close as
        its job processes end)."""
        self._lanes_refused.pop(cid, None)
        for link in self.links.values():
            if link.lanes_asked:
                link.lanes_asked.pop(cid, None)

    def _reopen_lanes(self, link: NodeLink, cs: ClusterState, cpus: int) -> None:
        if (link.conn is not None and self.clusters.get(cs.cid) is cs
                and self.setups.state(link.key, cs.cid) is Setup.READY):
            self._open_lanes(link, cs, cpus)

    def _lane_job_check(self, link: NodeLink, uid: str) -> None:
        conn = link.conn
        if uid in link.running and conn is not None:
            self.loop.create_task(self._ask_running(link, conn, [uid]))

    def _job_done(self, link: NodeLink, msg: messages.Done, header: dict,
                  bufs: list[bytes]) -> None:
        uid = msg.uid
        if link.lanes:  # (a lane's job whose result the lane could not carry)
            self._lane_free(link, uid)
        job = link.running.get(uid)
        if job is not None and msg.cid is not None and msg.cid != job._cluster.cid:
            # another computation's process on that node named this job: not its result
            log.warning("node %s: dropped a result of %s from another computation",
                        link.describe(), uid)
            return
        delivered = self.lifecycle.result(uid, link.key)
        job = link.running.pop(uid, None)
        if not delivered or job is None:
            link.acks.append(uid)
            return  # already final (e.g. node was presumed dead) or unknown: drop it
        if job._cluster.callback is not None:
            job._ack_to = link  # once the callback ran (Engine.settled)
        else:
            link.acks.append(uid)
        prefetch = link.job_ended(max(0.0, msg.end_time - msg.start_time), bool(msg.oob))
        if prefetch is not None:
            self.core.set_prefetch(link.key, prefetch)
        cs = job._cluster
        seen = link.lanes_asked.get(cs.cid, 0)
        if seen < lanes.AFTER_RESULTS and lanes.ENABLED:  # (a one-job program opens none)
            link.lanes_asked[cs.cid] = seen = seen + 1
            if seen == lanes.AFTER_RESULTS:
                self._open_lanes(link, cs, cs.node_cpus.get(link.key, 1))
        self.sink.deliver(job, msg, bufs)

    def _job_refused(self, link: NodeLink, msg: messages.JobRefused) -> None:
        killed = msg.status == DispyJob.Terminated  # e.g. the service window ended
        self._given_back(link, msg.uid, f"node {link.describe()} refused the job: "
                         f"{msg.reason}", killed)

    def _given_back(self, link: NodeLink, uid: str, reason: str,
                    killed: bool = False) -> Any:
        """The node gives a job back without its result (refused, or unknown to it after a
        reconnect): it runs again or ends, as the life cycle decides. The job, or None if
        it no longer runs there."""
        job = link.running.pop(uid, None)
        if job is None:
            return None
        if link.lanes:
            self._lane_free(link, uid)
        if link.node is not None:
            link.node.busy = max(0, link.node.busy - 1)
        self.apply(self.lifecycle.refused(uid, link.key, reason, killed))
        return job

    @staticmethod
    def _lane_free(link: NodeLink, uid: str) -> None:
        """The job a lane carried ended another way: the lane takes the next one."""
        for lane in link.lanes:
            if lane.uid == uid:
                lane.uid, lane.freed = None, uid

    def _computation_lost(self, link: NodeLink, msg: messages.ComputationLost) -> None:
        """The node lost a computation (its host process died): no more of its jobs go
        there; jobs it still runs report, the others come back as refused."""
        cs = self.clusters.get(msg.cid)
        if cs is None or self.setups.state(link.key, cs.cid) is not Setup.READY:
            return
        log.warning("node %s is not used for %r any more: %s", link.describe(), cs.name,
                    msg.reason)
        self.apply(self.setups.computation_lost(link.key, cs.cid, msg.reason,
                                                link.describe()))

    def _pulse(self, link: NodeLink, msg: messages.Pulse) -> None:
        link.send(messages.Ack())  # alive: a node takes a client that never answers for hung
        node = link.node
        if node is None:
            return
        node.avail_info = avail_from(msg.avail_info)
        node.update_time = time.time()
        for cs in list(self.clusters.values()):
            if link.key in cs.nodes:
                self.sink.status(cs, DispyNode.AvailInfo, node, None)

    def _node_cpus(self, link: NodeLink, cpus: int) -> None:
        if link.node is not None:
            link.node.cpus = link.node.avail_cpus = cpus
            self.core.set_node(link.key, cpus)

    # ---- job life cycle -------------------------------------------------------------

    def settled(self, job: DispyJob) -> None:
        """(loop) A finished job's callback ran: forget the job in the recover file and
        acknowledge its result (after the commit): at least once to the callback."""
        job._cluster.journal.finished(job._uid)
        link = job._ack_to
        if link is not None:  # (its result came under job._uid: the uid it was sent as)
            job._ack_to = None
            link.ack_soon(job._uid)

    def submit(self, job: DispyJob) -> None:
        """(loop) Queue a job created by the user's thread (on ``job._pin`` if set)."""
        cs = job._cluster
        pin = job._pin
        cs.jobs[job._uid] = job
        link = self.links.get(pin) if pin is not None else None
        if pin is not None and (link is None or not self.setups.pinnable(link.key, cs.cid)):
            self.sink.finish(job, DispyJob.Cancelled, f"Cancelled: node {pin[0]}:{pin[1]}"
                             " is not set up for this cluster")
            return
        if job._oob:  # big arguments: none are sent ahead (scheduling/prefetch.py)
            for other in self.links.values():
                self.core.set_prefetch(other.key, other.runs.big_job())
        self.apply(self.lifecycle.submit(job._uid, cs.cid, bool(cs.reentrant), pin,
                                          joboptions.priority(job)))
        cs.journal.queued(job, cs.cid)
        self.sink.job_event(job)

    def dispatch(self) -> bool:
        """Send what the core assigns; True when the journals were committed. The jobs
        are written once the current callback ends (``flush_later``)."""
        batch: list[DispyJob] = []
        links: list[NodeLink] = []
        for send in self.lifecycle.sends():
            uid, cid = send.uid, send.cid
            cs = self.clusters.get(str(cid))
            link = self.links.get(send.node)
            job = cs.jobs.get(uid) if cs is not None else None
            if job is None or link is None or cs is None:
                self.apply(self.lifecycle.send_failed(uid, "internal: job or node unknown"))
                continue
            link.running[uid] = job
            job.status, job.ip_addr, job.start_time = DispyJob.Running, link.ip, time.time()
            job._key = link.key
            cs.journal.dispatched(job, cid, link.ip, link.port, link.node_id)
            batch.append(job)
            links.append(link)
        if not batch:
            return False
        self.sink.flush_journals()  # journaled before sent: recover_jobs can find every job
        debug = log.isEnabledFor(logging.DEBUG)
        for job, link in zip(batch, links, strict=True):
            cs = job._cluster
            if debug:
                log.debug("job %s of %r sent to node %s", job.id, cs.name, link.describe())
            uid = job._uid
            bufs = [job._args or b""]
            if job._deps is not None:
                names, files = job._deps
                failed = upload.send_job_files(link, cs.cid, uid, files)
                if failed is not None:
                    self.apply(self.lifecycle.send_failed(uid, failed))
                    continue
                bufs.append(names)
            opts = joboptions.header_fields(job)
            if job._oob:
                bufs += job._oob
            # a lane takes a job dispatched with none of its cluster's waiting behind
            # it (with a backlog, the node's way sends jobs ahead, in batches), and a
            # big one always (its bytes then cross no daemon)
            lane = lanes.idle(link.lanes, cs.cid) if link.lanes else None
            if lane is not None and not opts and job._deps is None \
                    and (job._oob or not self.core.backlog(cs.cid)):
                lane.uid = uid
                lane.conn.send(messages.Job(cid=cs.cid, uid=uid, oob=len(job._oob or ())),
                               bufs, flush_soon=False)
                self.flush_later(lane, lane)
            else:
                link.send_job(messages.Job(cid=cs.cid, uid=uid, oob=len(job._oob or ()),
                                           timeout=opts.get("timeout"),
                                           priority=opts.get("priority", 0)), bufs)
                self.flush_later(link.key, link)
                if job._oob and lanes.ENABLED and \
                        link.lanes_asked.get(cs.cid, 0) < lanes.AFTER_RESULTS:
                    # a big job gains more from a lane than its handshake costs
                    link.lanes_asked[cs.cid] = lanes.AFTER_RESULTS
                    self._open_lanes(link, cs, cs.node_cpus.get(link.key, 1))
            if not cs.reentrant:
                job._args = job._deps = job._oob = None
            if link.node is not None:
                link.node.busy += 1
            self.sink.job_event(job)
        return True

    def cancel(self, job: DispyJob) -> int:
        """(loop) Cancel a queued or running job: 0, or -1 when it already ended."""
        if job._final:
            return -1
        out = self.lifecycle.cancel(job._uid)
        self.apply(out)
        return 0 if out else -1

    def apply(self, out: list[Instruction] | list[Out]) -> None:
        """Carry out what the job life cycle (lifecycle.py) and the node setups
        (nodesetup.py) decided."""
        for ins in out:
            if isinstance(ins, NodeChanged):
                self._node_changed(ins)
                continue
            if isinstance(ins, SendCancel):
                link = self.links.get(ins.node)
                if link is not None:
                    link.send(messages.Cancel(cid=str(ins.cid), uid=ins.uid))
                continue
            cs = self.clusters.get(str(getattr(ins, "cid", "")))
            job = cs.jobs.get(ins.uid) if cs is not None else None
            if job is None or cs is None:
                continue
            if job._key is not None:
                link = self.links.get(job._key)
                if link is not None:
                    link.running.pop(ins.uid, None)
            if isinstance(ins, End):
                self.sink.finish(job, ins.status, ins.reason)
            elif isinstance(ins, Resubmit):
                self._resubmitted(cs, job, ins.new_uid, ins.reason)

    def _node_changed(self, ins: NodeChanged) -> None:
        cs = self.clusters.get(str(ins.cid))
        link = self.links.get(ins.node)
        if cs is None or link is None:
            return
        if ins.change is Change.READY:
            cs.nodes[link.key] = link.node
            self.sink.status(cs, DispyNode.Initialized, link.node, None)
            return
        cs.nodes.pop(link.key, None)
        if ins.change is Change.CLOSED:
            self.sink.status(cs, DispyNode.Closed, link.node, None)

    def _resubmitted(self, cs: ClusterState, job: DispyJob, new_uid: str, reason: str) -> None:
        """A job lost its node and runs again, under a new id (a late result of the
        first run can never be taken for this one)."""
        log.info("job %s resubmitted: %s", job.id, reason)
        cs.journal.finished(job._uid)
        cs.jobs.pop(job._uid, None)
        job._uid = new_uid
        cs.jobs[new_uid] = job
        job.status, job.ip_addr, job._key = DispyJob.Created, None, None
        cs.journal.queued(job, cs.cid)
        self.sink.job_event(job)

    # ---- periodic work --------------------------------------------------------------

    async def _housekeeping(self) -> None:
        last_discover = time.monotonic()
        while True:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            try:
                self.sink.flush_journals()  # queued jobs reach the recover file too
                self.watch.tick(now)
                for scheduler in list(self.scheduler_links.values()):
                    scheduler.check_alive(now)
                waiting = [cs for cs in self.clusters.values() if cs.jobs and
                           not self.core.usable(cs.cid)]
                pings = [cs.ping_interval for cs in self.clusters.values() if cs.ping_interval]
                every = min(pings) if pings else (RETRY_INTERVAL if waiting else None)
                if every and now - last_discover >= every:
                    last_discover = now
                    for cs in list(self.clusters.values()):
                        self.finder.ask_again(cs)
                for cs in waiting:
                    self._report_stall(cs, now)
            except Exception:
                log.exception("engine housekeeping failed")

    def _report_stall(self, cs: ClusterState, now: float) -> None:
        every = config.StallReportInterval
        first = min(every, config.FirstStallReport)
        if (now - cs.created < first or now - cs.stall_reported < every
                or not self.sink.reports_stall(cs)):
            return
        cs.stall_reported = now
        known = [(link.describe(), self.setups.why(link.key, cs.cid) or link.reason)
                 for link in self.links.values()
                 if self.wants(cs, link.ip, link.port) is not None]
        log.warning("%s", stall_message(cs, known, self.finder.unmatched))


#: the engines of this program that run a loop thread of their own
_PROGRAM_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()
