"""SharedJobCluster's connection to a dispyscheduler: jobs out, results and events in.

The scheduler holds a program's jobs while the connection is down and sends the
results again when it comes back; jobs lost with a broken connection are sent again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from typing import Any

import cloudpickle

from .. import config
from ..eventloop import within
from ..log import why
from ..scheduling.nodesetup import all_matching
from ..wire import localpath, messages, tls
from ..wire.codec import FrameError, Limits
from ..wire.connection import Connection, ConnectionClosed
from ..wire.handshake import HandshakeError, client_handshake
from . import joboptions, upload
from .clusterstate import ClusterState
from .engine import Engine
from .job import DispyJob
from .links import Profile
from .nodes import DispyNode, NodeAllocate, avail_from

log = logging.getLogger("dispy")

#: How long a lost scheduler may take to come back before its jobs are given up.
SCHEDULER_GRACE = 60.0

#: the scheduler's answer to a new computation
Admission = messages.Scheduled | messages.Waiting | messages.Refused


def _custom(alloc: NodeAllocate) -> bool:
    return type(alloc).allocate is not NodeAllocate.allocate


def alloc_specs(allocs: list[NodeAllocate], first: int = 0) -> tuple[list[dict], list[bytes]]:
    """NodeAllocates as data for the scheduler, and their pickled setup_args."""
    specs, blobs = [], []
    for i, alloc in enumerate(allocs):
        specs.append({"host": alloc.host, "port": alloc.port, "cpus": alloc.cpus,
                      "custom": _custom(alloc), "index": first + i, "setup_args": i,
                      "depends": [_relpath(p) for p in alloc.depends]})
        blobs.append(cloudpickle.dumps(alloc.setup_args))
    return specs, blobs


def _relpath(path: str) -> str:
    from .shipping import relpath_for

    return relpath_for(path)


class SchedulerLink:
    """The program's connection to one dispyscheduler (on the engine loop only)."""

    def __init__(self, engine: Engine, ip: str, port: int, profile: Profile) -> None:
        self.engine = engine
        self.ip = ip
        self.port = port
        self.profile = profile
        self.conn: Connection | None = None
        self.scheduler_id: str | None = None
        self.pulse_interval: float | None = None
        #: seconds between the scheduler's pulses to us (None: an older one sends none),
        #: and when we last heard from it
        self.pulse: float | None = None
        self.last_heard = time.monotonic()
        self.clusters: dict[str, Any] = {}
        #: jobs sent and not yet final, by uid
        self.jobs: dict[str, DispyJob] = {}
        self.acks: list[str] = []
        #: computation id -> its answer: Scheduled, Waiting or Refused
        self.answers: dict[str, asyncio.Future] = {}
        self.closing: dict[str, asyncio.Future] = {}
        self.reconnecting: asyncio.Task | None = None

    def describe(self) -> str:
        return f"dispyscheduler {self.ip}:{self.port}"

    def send(self, header: dict | messages.Record, bufs: list | tuple = (),
             flush_soon: bool = True) -> bool:
        return self.conn is not None and self.conn.send(header, bufs, flush_soon=flush_soon)

    def flush(self) -> None:
        if self.conn is not None:
            self.conn.flush()

    # ---- connection ---------------------------------------------------------------

    async def connect(self) -> None:
        """Connect and authenticate with the cluster secret; ConnectionError says why."""
        try:
            ctx = tls.client_context(self.profile.certfile, self.profile.keyfile)
            conn = await Connection.open(self.ip, self.port, ctx, config.MsgTimeout)
        except (OSError, asyncio.TimeoutError) as exc:
            raise ConnectionError(f"cannot connect to {self.describe()}:"
                                  f" {why(exc, 'timed out')}") from None
        try:
            welcome = await self._handshake(conn)
        except HandshakeError as exc:
            conn.close()
            raise ConnectionError(f"{self.describe()} refused this client: {exc}") from None
        except (OSError, asyncio.TimeoutError, ConnectionClosed, FrameError) as exc:
            conn.close()
            raise ConnectionError(f"handshake with {self.describe()} failed:"
                                  f" {why(exc)}") from None
        if not welcome.get("scheduler"):
            conn.close()
            raise ConnectionError(f"{self.ip}:{self.port} is not a dispyscheduler (a dispynode?"
                                  " use JobCluster for nodes)")
        conn, welcome = await localpath.move(conn, welcome, self._handshake, "scheduler_id",
                                             config.MsgTimeout, self.describe())
        restarted = self.scheduler_id is not None and welcome.get("scheduler_id") != \
            self.scheduler_id
        self.scheduler_id = welcome.get("scheduler_id")
        self.pulse_interval = welcome.get("pulse_interval")
        pulse = welcome.get("pulse")
        self.pulse = float(pulse) if isinstance(pulse, (int, float)) and pulse > 0 else None
        self.last_heard = time.monotonic()
        # jobs and acks leave only after the recover file has them (and has forgotten
        # the acknowledged): one commit per write, whatever the batch
        conn.before_flush = self.engine.local.flush_journals
        self.conn = conn
        asyncio.get_running_loop().create_task(self._read(conn))
        if restarted:
            self._give_up("the scheduler was restarted and no longer knows them")

    async def _handshake(self, conn: Connection) -> dict:
        return await client_handshake(conn, self.profile.secret, self.engine.hello(),
                                      config.MsgTimeout, Limits(max_buffer=config.MaxFrameSize))

    async def _read(self, conn: Connection) -> None:
        """The scheduler's frames, handled as they are decoded (in the read callback: no
        task wake-up per frame); the acks of a read's results go after it."""
        reason = "connection closed by the scheduler"
        try:
            ended = await conn.deliver_to(self._on_frame, self._flush_acks)
            if isinstance(ended, FrameError):
                reason = f"bad frame: {ended}"
                log.warning("%s: %s", self.describe(), reason)
            else:
                reason = f"connection lost: {ended}"
        finally:
            conn.close()
            if self.conn is conn:
                self.conn = None
                self._lost(reason)

    def _lost(self, reason: str) -> None:
        for fut in self.closing.values():
            if not fut.done():
                fut.set_result(None)
        if not self.clusters:
            return
        log.warning("%s: %s; reconnecting", self.describe(), reason)
        if self.reconnecting is None or self.reconnecting.done():
            self.reconnecting = asyncio.get_running_loop().create_task(self._reconnect(reason))

    async def _reconnect(self, reason: str) -> None:
        since = time.monotonic()
        while self.clusters and self.conn is None:
            await asyncio.sleep(1.0)
            try:
                await self.connect()
            except ConnectionError as exc:
                reason = str(exc)
                if time.monotonic() - since > SCHEDULER_GRACE:
                    self._give_up(f"{self.describe()} unreachable for"
                                  f" {time.monotonic() - since:.0f} s: {reason}")
                    return
                continue
            log.info("%s: connected again", self.describe())
            self._resend()

    def _resend(self) -> None:
        """Frames may have been lost with the connection: ask which jobs it lacks."""
        uids = list(self.jobs)
        if uids:
            self.send(messages.JobsQuery(uids=uids, reply="resend"))

    def _resend_answer(self, unknown: list) -> None:
        for uid in unknown:
            job = self.jobs.get(uid)
            if job is None:
                continue
            if job._args is not None and job.status == DispyJob.Created:
                self._send_job(job)
            else:
                self.jobs.pop(uid, None)
                self.engine.local.finish(job, DispyJob.Abandoned, f"Abandoned: {self.describe()}"
                                         " lost it with the connection")

    def _give_up(self, reason: str) -> None:
        jobs, self.jobs = list(self.jobs.values()), {}
        if jobs:
            log.error("%s: %d job(s) abandoned: %s", self.describe(), len(jobs), reason)
        for job in jobs:
            self.engine.local.finish(job, DispyJob.Abandoned, f"Abandoned: {reason}")
        for cs in list(self.clusters.values()):
            for node in list(cs.nodes.values()):
                self.engine.local.status(cs, DispyNode.Closed, node, None)
            cs.nodes.clear()
            fut = self.answers.get(cs.cid)
            if fut is not None and not fut.done():
                fut.set_result(messages.Refused(cid=cs.cid, reason=reason))
        if self.conn is not None:
            self.clusters.clear()  # a restarted scheduler does not know them

    def ack_soon(self, uid: str) -> None:
        """A result whose callback ran: acknowledged with the next batch."""
        if not self.acks:
            asyncio.get_running_loop().call_soon(self._flush_acks)
        self.acks.append(uid)

    def _flush_acks(self) -> None:
        if self.acks:  # the jobs are forgotten durably before it is written (before_flush)
            self.send(messages.Ack(uids=self.acks))
            self.acks = []

    # ---- messages from the scheduler ----------------------------------------------

    def check_alive(self, now: float) -> None:
        """(engine housekeeping) A scheduler connected but silent for 5 pulses (at least
        twice the message timeout) is hung: the connection is closed, and it is treated
        as a scheduler that went away (reconnect, then the jobs end Abandoned)."""
        conn = self.conn
        if conn is None or self.pulse is None:
            return
        silent = now - self.last_heard
        if silent > max(5 * self.pulse, 2 * config.MsgTimeout):
            log.warning("%s: silent for %.0f s (no pulse)", self.describe(), silent)
            conn.close()  # _read ends: _lost

    def _on_frame(self, header: dict, bufs: list[bytes]) -> None:
        """A frame from the scheduler as its record; a malformed one is dropped (the
        connection, and the program's other jobs, kept)."""
        self.last_heard = time.monotonic()
        try:
            msg = messages.parse_scheduler_message(header)
        except messages.MessageError as exc:
            log.warning("%s: dropped a frame: %s", self.describe(), exc)
            return
        try:
            self._handle(msg, header, bufs)
        except Exception:  # a bug here must not cost the other jobs their link
            log.exception("failed to handle %r from %s", msg.op, self.describe())

    def _handle(self, msg: messages.Record, header: dict, bufs: list[bytes]) -> None:
        # ``header`` only goes on to the sink, which reads a node's frames as they came
        if isinstance(msg, messages.JobResult):
            self._done(msg, header, bufs)
        elif isinstance(msg, messages.JobStatus):
            self._job_status(msg)
        elif isinstance(msg, messages.Provisional):
            self.engine.local.provisional(self.jobs.get(msg.uid), bufs)
        elif isinstance(msg, messages.NodeEvent):
            self._node(msg)
        elif isinstance(msg, messages.SendFile):
            self.engine.local.file_from_node(self.describe(), msg, bufs)
        elif isinstance(msg, messages.AskAllocate):
            asyncio.get_running_loop().create_task(self._allocate(msg))
        elif isinstance(msg, messages.Reply):
            if msg.reply == "resend":
                self._resend_answer(msg.unknown or [])
        elif isinstance(msg, (messages.Scheduled, messages.Waiting, messages.Refused)):
            self._admission(msg)
        elif isinstance(msg, messages.Closed):
            if msg.problem:
                self.engine.local.cleanup_failed(self.clusters.get(msg.cid),
                                                 self.describe(), msg.problem)
            fut = self.closing.pop(msg.cid, None)
            if fut is not None and not fut.done():
                fut.set_result(True)
        elif isinstance(msg, messages.Pulse):
            self.send(messages.Ack())  # alive: it takes a program that never answers for hung
        elif isinstance(msg, messages.SchedulerStopping):
            log.warning("%s is stopping: jobs of %r still running there are terminated",
                        self.describe(), msg.cid)

    def _done(self, msg: messages.JobResult, header: dict, bufs: list[bytes]) -> None:
        uid = msg.uid
        job = self.jobs.pop(uid, None)
        if job is None or job._final:
            self.acks.append(uid)
            return
        if job._cluster.callback is not None:
            job._ack_to = self  # once the callback ran (Engine.settled)
        else:
            self.acks.append(uid)
        ip, port = msg.ip, msg.port
        if ip is not None:
            job.ip_addr, job._key = ip, (ip, port)
            node = job._cluster.nodes.get((ip, port))
            if node is not None:
                node.jobs_done += 1
                node.cpu_time += max(0.0, (msg.end_time or 0.0) - (msg.start_time or 0.0))
                node.busy = max(0, node.busy - 1)
        self.engine.local.deliver(job, msg, bufs)

    def _job_status(self, msg: messages.JobStatus) -> None:
        job = self.jobs.get(msg.uid)
        if job is None or job._final:
            return
        job.status = msg.status
        if job.status == DispyJob.Running:
            ip, port = msg.ip, msg.port
            job.ip_addr, job._key = ip, (ip, port)
            job.start_time = msg.start_time or time.time()
            node = job._cluster.nodes.get((ip, port))
            if node is not None:
                node.busy += 1
            if not job._cluster.reentrant:
                job._args = job._deps = job._oob = None  # the scheduler has it
        else:
            job.ip_addr = None
        self.engine.local.job_event(job)

    def _node(self, msg: messages.NodeEvent) -> None:
        cs = self.clusters.get(msg.cid)
        info = msg.node  # the node as JSON (scheduler/programs.py node_info)
        if cs is None:
            return
        key = (info.get("ip"), info.get("port"))
        node = cs.nodes.get(key)
        if node is None:
            node = DispyNode(str(info.get("ip")), str(info.get("name")),
                             int(info.get("cpus", 0)), int(info.get("port", 0)))
        node.cpus = node.avail_cpus = int(info.get("cpus", node.cpus))
        node.platform = str(info.get("platform", ""))
        node.avail_info = avail_from(info.get("avail_info"))
        node.update_time = time.time()
        if msg.status == DispyNode.Closed:
            cs.nodes.pop(key, None)
        else:
            cs.nodes[key] = node
        self.engine.local.status(cs, msg.status, node, None)

    async def _allocate(self, msg: messages.AskAllocate) -> None:
        """The scheduler asks what an overridden NodeAllocate.allocate says for a node."""
        cs = self.clusters.get(msg.cid)
        info = msg.node
        answer = messages.Reply(reply=msg.reply, cpus=0)
        if cs is None or not 0 <= msg.alloc < len(cs.allocs):
            self.send(answer)
            return
        ip, port = str(info.get("ip")), info.get("port")
        cpus = 0
        # that pattern first, then the next ones that match, until one gives CPUs
        later = all_matching(cs.allocs[msg.alloc + 1:], ip,
                             port if isinstance(port, int) else None)
        for alloc in [cs.allocs[msg.alloc], *later]:
            try:
                cpus = alloc.allocate(cs.cluster, ip, info.get("name"),
                                      int(info.get("cpus", 0)),
                                      avail_from(info.get("avail_info")),
                                      info.get("platform", ""))
            except Exception:
                log.exception("NodeAllocate.allocate failed for node %s", ip)
                cpus = 0
            if isinstance(cpus, int) and cpus > 0:
                break
        if not isinstance(cpus, int) or cpus <= 0:
            self.send(answer)
            return
        depends = [_relpath(p) for p in alloc.depends]
        for path, rel in zip(alloc.depends, depends, strict=True):
            if await self.upload(cs.cid, os.path.abspath(path), rel) is not None:
                self.send(answer)
                return
        self.send(dataclasses.replace(answer, cpus=cpus, depends=depends),
                  [cloudpickle.dumps(alloc.setup_args)])

    def _admission(self, msg: messages.Scheduled | messages.Waiting | messages.Refused) -> None:
        cs = self.clusters.get(msg.cid)
        if isinstance(msg, messages.Waiting) and cs is not None:
            log.warning("%r: %s", cs.name, msg.reason)
        elif isinstance(msg, messages.Scheduled) and cs is not None:
            log.info("%r: scheduled by %s", cs.name, self.describe())
        fut = self.answers.pop(msg.cid, None)
        if fut is not None and not fut.done():
            fut.set_result(msg)

    # ---- requests -------------------------------------------------------------------

    async def request(self, msg: messages.Record,
                      bufs: list | tuple = ()) -> messages.Reply | None:
        """The scheduler's reply to ``msg``: None if none came (or it is malformed)."""
        return await upload.request(self, msg, bufs, config.MsgTimeout * 3)

    async def upload(self, cid: str, local: str, relpath: str, node: list | None = None,
                     xfer: str | None = None) -> str | None:
        """Send a file in chunks (to ``node``: send_file, which the scheduler confirms);
        None when it went, else why not."""
        return await upload.send_file(self, cid, local, relpath, config.MsgTimeout * 3,
                                      confirm=node is not None, node=node, xfer=xfer)

    async def add_cluster(self, cs: ClusterState) -> Admission:
        """Create the computation at the scheduler; returns its first answer."""
        if self.conn is None:
            await self.connect()
        self.clusters[cs.cid] = cs
        specs, blobs = alloc_specs(cs.allocs)
        files = cs.package.files
        for alloc in cs.allocs:
            if not _custom(alloc):
                files = files + cs.node_files(alloc)
        self.send(messages.SharedCompute(
            cid=cs.cid, name=cs.name, dest_path=cs.dest_path, cleanup=cs.cleanup is not False,
            reentrant=bool(cs.reentrant), exclusive=bool(cs.exclusive),
            program=cs.package.program, files=[spec.relpath for spec in cs.package.files],
            allocs=specs), [cs.package.bundle, *blobs])
        for spec in files:
            if await self.upload(cs.cid, spec.local, spec.relpath) is not None:
                break
        fut = asyncio.get_running_loop().create_future()
        self.answers[cs.cid] = fut
        self.send(messages.Schedule(cid=cs.cid))
        try:
            answer = await within(fut, config.MsgTimeout * 6)
        except asyncio.TimeoutError:
            answer = messages.Refused(cid=cs.cid, reason=f"no answer from {self.describe()}")
        if isinstance(answer, messages.Refused):
            self.clusters.pop(cs.cid, None)
        return answer

    def submit(self, job: DispyJob) -> None:
        """(loop) Journal the job and send it to the scheduler at once."""
        cs = job._cluster
        cs.jobs[job._uid] = job
        cs.journal.queued(job, cs.cid)
        if cs.cid not in self.clusters:
            self.engine.local.finish(job, DispyJob.Cancelled,
                                     f"Cancelled: {self.describe()} does not run this cluster")
            return
        self.jobs[job._uid] = job
        cs.journal.dispatched(job, cs.cid, self.ip, self.port, self.scheduler_id)
        self._send_job(job)  # committed before it is written (before_flush)
        self.engine.local.job_event(job)

    def _send_job(self, job: DispyJob) -> None:
        cs = job._cluster
        bufs = [job._args or b""]
        if job._deps is not None:
            names, files = job._deps
            failed = upload.send_job_files(self, cs.cid, job._uid, files)
            if failed is not None:
                self.jobs.pop(job._uid, None)
                self.engine.local.finish(job, DispyJob.Cancelled, f"Cancelled: {failed}")
                return
            bufs.append(names)
        opts = joboptions.header_fields(job)
        if job._oob:  # big byte strings of the arguments, as the node takes them
            bufs += job._oob
        self.send(messages.Job(cid=cs.cid, uid=job._uid, oob=len(job._oob or ()),
                               pin=list(job._pin) if job._pin is not None else None,
                               timeout=opts.get("timeout"), priority=opts.get("priority", 0)),
                  bufs, flush_soon=False)
        self.engine.flush_later(("scheduler", self.ip, self.port, self.profile), self)

    def cancel(self, job: DispyJob) -> int:
        if job._final:
            return -1
        if job._uid not in self.jobs:
            self.engine.local.finish(job, DispyJob.Cancelled, "Cancelled")
            return 0
        self.send(messages.Cancel(cid=job._cluster.cid, uid=job._uid))
        return 0

    async def close_cluster(self, cs: ClusterState, terminate: bool) -> None:
        if cs.cid in self.clusters and self.conn is not None:
            fut = asyncio.get_running_loop().create_future()
            self.closing[cs.cid] = fut
            self.send(messages.Close(cid=cs.cid, terminate=terminate))
            try:
                await within(fut, config.MsgTimeout + 15)
            except asyncio.TimeoutError:
                log.warning("%s did not confirm closing %r", self.describe(), cs.name)
        self.clusters.pop(cs.cid, None)
        for node in list(cs.nodes.values()):
            self.engine.local.status(cs, DispyNode.Closed, node, None)
        cs.nodes.clear()
        for job in list(cs.jobs.values()):
            self.jobs.pop(job._uid, None)
            self.engine.local.finish(job, DispyJob.Cancelled, "Cancelled: cluster closed")
        try:
            if cs.journal.remove_cluster(cs.cid):
                self.engine.local.forget_journal(cs.journal)
        except Exception as exc:
            log.warning("recover file %s not updated: %s", cs.journal.path, exc)
        if not self.clusters and self.conn is not None:
            self._flush_acks()
            conn, self.conn = self.conn, None
            if conn is not None:
                conn.close()
            self.engine.scheduler_links.pop((self.ip, self.port, self.profile), None)
