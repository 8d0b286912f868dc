"""dispyscheduler's side facing the client programs: one session per program.

A session outlives its connection: results wait (in memory) until the client
acknowledges them, so a client that reconnects, or ``recover_jobs`` after it crashed,
still gets them. A session whose client stays away longer than ``--zombie_interval``
is ended: its jobs are cancelled on the nodes and the nodes serve the others.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable, Coroutine
from typing import Any

from .. import fsafe
from ..client.engine import Engine
from ..client.job import DispyJob
from ..client.links import Profile
from ..client.shipping import FileSpec
from ..wire import messages
from ..wire.connection import Connection
from ..wire.pulses import PulseWatch
from .journal import SchedulerJournal
from .options import SchedulerOptions
from .programs import RelayedJob, RemoteCluster, SharedAlloc

log = logging.getLogger("dispy.scheduler")


class ClientSession:
    """A client program, its computations and undelivered results. Found by ``sid``,
    the digest of the secret session key its connections present, never by the client
    id it claims; ``sid`` also names its directory."""

    def __init__(self, sid: str, client_id: str, name: str, addr: str, root: str,
                 msg_timeout: float, journal: SchedulerJournal | None = None) -> None:
        self.sid = sid
        self.client_id = client_id
        self.name = name
        self.addr = addr
        self.root = root
        self.conn: Connection | None = None
        self.clusters: dict[str, RemoteCluster] = {}
        self.undelivered: dict[str, tuple[dict, list]] = {}
        #: client job uid -> files that came with it (dispy_job_depends), until it ends
        self.job_files: dict[str, list[FileSpec]] = {}
        #: client job uid -> why a file sent with it was refused (it ends Terminated)
        self.failed_job_files: dict[str, str] = {}
        self.last_seen = time.monotonic()
        #: its answers to our pulses (a program connected but silent is a zombie too)
        self.pulses = PulseWatch()
        self.msg_timeout = msg_timeout
        self.journal = journal
        #: client uid -> node, for the jobs a restarted scheduler fetches from the nodes
        #: its previous run sent them to (scheduler/restore.py)
        self.recovering: dict[str, str] = {}

    def send(self, header: dict | messages.Record, bufs: list | tuple = ()) -> bool:
        return self.conn is not None and self.conn.send(header, bufs)

    def result(self, done: messages.JobResult, bufs: list) -> None:
        """A job ended: kept (and journaled) until the client acknowledges it, as the
        frame that is sent (a restart reads it back and sends it as it is)."""
        header = done.header()
        self.undelivered[done.uid] = (header, bufs)
        if self.journal is not None:
            self.journal.ended(self.sid, done.uid, header, bufs)
        self.send(header, bufs)

    async def request(self, header: dict | messages.Record,
                      bufs: list | tuple = ()) -> tuple | None:
        """Ask the client and wait for its reply: (header, bufs), or None."""
        if self.conn is None:
            return None
        return await self.conn.request_frame(header, bufs, self.msg_timeout * 3)

    def drop_job_files(self, uid: str) -> None:
        files = self.job_files.pop(uid, None)
        if files:  # they are all under <store>/jobs/<uid>/
            first = files[0]
            root = first.local[:len(first.local) - len(os.path.normpath(first.relpath))]
            fsafe.remove_beneath(self.root, root)

    def describe(self) -> str:
        return f"client {self.name} at {self.addr}"


def _reply(session: ClientSession, msg: messages.Record, **answer: Any) -> None:
    if msg.reply is not None:
        session.send(messages.Reply(reply=msg.reply, **answer))


class ClientService:
    """Turns a client's requests into the engine's work (on the scheduler's loop)."""

    def __init__(self, engine: Engine, opts: SchedulerOptions, node_profile: Profile,
                 spawn: Callable[[Coroutine[Any, Any, None]], object]) -> None:
        self.engine = engine
        self.opts = opts
        self.node_profile = node_profile
        #: the scheduler's directory: nothing is written or removed outside it
        self.root = os.path.join(opts.dest_path_prefix, "dispy", f"scheduler-{opts.scheduler_port}")
        #: runs a coroutine as a task the daemon keeps (and awaits at stop)
        self.spawn = spawn
        self._cids = itertools.count(1)
        #: this run of the scheduler (its journal's boot): computation ids on the nodes
        #: never repeat those of an earlier run
        self.boot = 0
        #: every computation by the engine's cluster id (admitted or waiting)
        self.computations: dict[str, RemoteCluster] = {}

    def handle(self, session: ClientSession, header: dict, bufs: list[bytes]) -> None:
        """A program's frame: its record to the op's handler, or refused with why (the
        only place a program's header is read as a dict)."""
        try:
            msg = messages.parse_request(header, bufs, messages.SCHEDULER_REQUESTS)
        except messages.MessageError as exc:
            log.warning("refused a request from %s: %s", session.describe(), exc)
            token = messages.id_field(header, "reply")
            if messages.ID.fullmatch(token):
                session.send(messages.Reply(reply=token, ok=False, rc=-1, reason=str(exc)))
            cid = messages.id_field(header, "cid")
            if header.get("op") == "compute" and messages.ID.fullmatch(cid):
                # the program waits for the computation's answer: it is this
                session.send(messages.Refused(cid=cid, reason=f"invalid computation: {exc}"))
            return
        _OPS[msg.op](self, session, msg, bufs)

    def _cluster(self, session: ClientSession,
                 msg: messages.File | messages.NodeControl) -> RemoteCluster | None:
        cs = session.clusters.get(msg.cid)
        if cs is None:
            _reply(session, msg, ok=False, rc=-1, reason="computation is not known here")
        return cs

    # ---- computations ---------------------------------------------------------------

    def compute(self, session: ClientSession, msg: messages.SharedCompute,
                bufs: list[bytes]) -> None:
        ccid = msg.cid
        try:
            if ccid in session.clusters:
                raise ValueError("computation was created already")
            store = fsafe.safe_join(session.root, fsafe.check_id(ccid, "computation id"))
            allocs = self._allocs(msg.allocs, bufs, 1)
            for relpath in [*msg.files, *(p for a in allocs for p in a.relpaths)]:
                fsafe.safe_join(store, relpath)  # its files stay in its store
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            log.warning("refused computation %r of %s: %s", msg.name[:80],
                        session.describe(), exc)
            session.send(messages.Refused(cid=ccid, reason=f"invalid computation: {exc}"))
            return
        cid = f"b{self.boot}s{next(self._cids)}.{ccid}"
        opts = self.opts
        cs = RemoteCluster(session, ccid, cid, msg, bufs[0], allocs, store,
                           self.node_profile, opts.pulse_interval,
                           opts.ping_interval or None)
        cs.request = (msg.header(), bufs)  # journaled once its files are here (schedule)
        if opts.cleanup_nodes:
            cs.cleanup = True
        session.clusters[ccid] = cs
        self.computations[cid] = cs

    def _allocs(self, specs: Any, bufs: list[bytes], first: int) -> list[SharedAlloc]:
        if not isinstance(specs, list) or not specs:
            raise ValueError("no nodes given")
        port = self.opts.node_port
        allocs = [SharedAlloc(spec, bufs[first + int(spec["setup_args"])], port)
                  for spec in specs]
        allocs.sort(key=lambda a: (a.wildcard, -len(a.host)))
        return allocs

    def schedule(self, session: ClientSession, msg: messages.Schedule,
                 bufs: list[bytes]) -> None:
        """All files of a computation are here: admit it, or tell the client it waits."""
        cs = session.clusters.get(msg.cid)
        if cs is None:
            return
        if cs.failed:
            session.send(messages.Refused(cid=cs.client_cid, reason=cs.failed))
            self._forget(cs)
            return
        if session.journal is not None and cs.request is not None:
            session.journal.computation(session.sid, cs.client_cid, *cs.request)
        if self.engine.core.add_cluster(cs.cid, cs.exclusive):
            self._start(cs)
            return
        names = [self.computations[c].describe() for c in self.engine.core.waiting_for(cs.cid)
                 if c in self.computations]
        reason = (f"{'exclusive ' if cs.exclusive else ''}computation waits for "
                  f"{', '.join(names) or 'its turn'}")
        log.info("computation %s %s", cs.describe(), reason)
        session.send(messages.Waiting(cid=cs.client_cid, reason=reason))

    def _start(self, cs: RemoteCluster) -> None:
        log.info("computation %s scheduled%s", cs.describe(),
                 " (exclusive: it has every node to itself)" if cs.exclusive else "")
        self.engine.add_cluster(cs)
        cs.session.send(messages.Scheduled(cid=cs.client_cid))
        self.engine.dispatch()

    def admit_waiting(self) -> None:
        for cid in self.engine.core.admit():
            cs = self.computations.get(str(cid))
            if cs is not None:
                self._start(cs)

    async def close(self, cs: RemoteCluster, terminate: bool) -> None:
        """End a computation: its queued jobs are cancelled, running ones finish (or are
        terminated); the nodes it used serve the others."""
        await self.engine.control.close_cluster(cs, terminate)
        self._forget(cs)
        problems = "\n".join(cs.cleanup_problems)[-messages.MAX_PROBLEM:]  # (many nodes)
        cs.session.send(messages.Closed(cid=cs.client_cid, problem=problems or None))
        log.info("computation %s closed", cs.describe())
        self.admit_waiting()

    def _forget(self, cs: RemoteCluster) -> None:
        if cs.session.journal is not None:
            cs.session.journal.drop_computation(cs.session.sid, cs.client_cid)
        cs.session.clusters.pop(cs.client_cid, None)
        self.computations.pop(cs.cid, None)
        fsafe.remove_beneath(self.root, cs.store)

    def close_request(self, session: ClientSession, msg: messages.Close,
                      bufs: list[bytes]) -> None:
        cs = session.clusters.get(msg.cid)
        if cs is None:
            session.send(messages.Closed(cid=msg.cid))
            return
        self.spawn(self.close(cs, msg.terminate))

    # ---- files ----------------------------------------------------------------------

    def file(self, session: ClientSession, msg: messages.File, bufs: list[bytes]) -> None:
        """A chunk of a computation's file, a job's file, or a file for send_file."""
        cs = self._cluster(session, msg)
        if cs is None:
            return
        job_uid = msg.job
        target = msg.node
        try:
            if job_uid is not None:
                root = fsafe.safe_join(cs.store, "jobs", fsafe.check_id(job_uid, "job uid"))
            elif target is not None:
                root = fsafe.safe_join(cs.store, "send", fsafe.check_id(msg.xfer, "transfer id"))
            else:
                root = cs.store
            path = fsafe.safe_join(root, msg.path)
            complete = fsafe.write_chunk(self.root, path, msg, bufs,
                                         self.opts.max_file_size, "scheduler")
        except (ValueError, KeyError, TypeError, OSError) as exc:
            if msg.path not in cs.refused_files:  # once, not per chunk
                cs.refused_files.add(msg.path)
                log.warning("refused file %r of %s: %s", msg.path, cs.describe(), exc)
            if target is not None:
                _reply(session, msg, ok=False, reason=str(exc))
            elif job_uid is None:
                cs.failed = f"file transfer to the scheduler failed: {exc}"
            else:  # the job ends with the reason instead of running without its file
                session.failed_job_files.setdefault(
                    job_uid, f"file transfer to the scheduler failed: {exc}")
            return
        if not complete:
            return
        if job_uid is not None:
            session.job_files.setdefault(job_uid, []).append(FileSpec(path, msg.path))
        elif target is not None:
            self.spawn(self._send_file(session, cs, msg, path))

    async def _send_file(self, session: ClientSession, cs: RemoteCluster, msg: messages.File,
                         path: str) -> None:
        try:
            link = self._node(cs, msg.node)
            rc = -1 if link is None else await self.engine.control.send_file(cs, link, path)
            reason = "node is not set up for this computation" if link is None else (
                "the node refused it (the scheduler's log says why)")
            _reply(session, msg, ok=rc == 0, reason=None if rc == 0 else reason)
        finally:
            fsafe.remove_beneath(cs.store, os.path.dirname(path))

    def _node(self, cs: RemoteCluster, node: Any) -> Any:
        try:
            ip, port = str(node[0]), int(node[1])
        except (TypeError, ValueError, IndexError):
            return None
        return self.engine.control.find_link(cs, ip, port)

    # ---- jobs -------------------------------------------------------------------------

    def job(self, session: ClientSession, msg: messages.Job, bufs: list[bytes]) -> None:
        uid = msg.uid
        cs = session.clusters.get(msg.cid)
        if cs is None or not bufs:
            session.result(messages.JobResult(
                uid=uid, cid=msg.cid, status=DispyJob.Cancelled,
                exception="Cancelled: the scheduler does not know this computation (it was"
                          " closed or the scheduler restarted)"), [])
            return
        if uid in cs.by_client_uid or uid in session.undelivered or uid in session.recovering:
            return  # sent again after a reconnect: we have it
        failed = session.failed_job_files.pop(uid, None)
        if failed is not None:
            log.warning("job %s of %s not run: %s", uid, cs.describe(), failed)
            for spec in session.job_files.pop(uid, ()):
                fsafe.remove_beneath(self.root, spec.local)
            session.result(messages.JobResult(uid=uid, cid=msg.cid,
                                              status=DispyJob.Terminated, exception=failed), [])
            return
        if session.journal is not None:
            files = [(f.local, f.relpath) for f in session.job_files.get(uid, ())]
            session.journal.job(session.sid, uid, cs.client_cid, msg.header(), bufs, files)
        n = msg.oob  # passed on unopened, as the client sent them
        bufs, big = (bufs[:-n], bufs[-n:]) if 0 < n <= len(bufs) else (bufs, [])
        job = RelayedJob(cs, bufs[0], self.engine.new_uid(), time.time())
        job.client_uid = uid
        job.id = uid
        job._oob = big or None
        if len(bufs) > 1:
            job._deps = (bufs[1], session.job_files.get(uid, []))
        pin = msg.pin
        key = None
        if pin is not None:
            try:
                key = (str(pin[0]), int(pin[1]), self.node_profile)
            except (TypeError, ValueError, IndexError):
                key = ("?", 0, self.node_profile)
            job._pin = key
        job._opts = {k: v for k, v in (("timeout", msg.timeout), ("priority", msg.priority))
                     if v is not None} or None
        cs.by_client_uid[uid] = job
        self.engine.submit(job)

    def cancel(self, session: ClientSession, msg: messages.Cancel, bufs: list[bytes]) -> None:
        cs = session.clusters.get(msg.cid)
        job = cs.by_client_uid.get(msg.uid) if cs is not None else None
        if job is not None:
            self.engine.cancel(job)

    def ack(self, session: ClientSession, msg: messages.Ack, bufs: list[bytes]) -> None:
        uids = msg.uids
        if not uids:  # the answer to a pulse
            return
        for uid in uids:
            session.undelivered.pop(uid, None)
        if session.journal is not None:
            session.journal.acked(session.sid, uids)

    def jobs_query(self, session: ClientSession, msg: messages.JobsQuery,
                   bufs: list[bytes]) -> None:
        """Which of these jobs are unknown here (recover_jobs, or a client that reconnects
        after frames were lost with the connection)."""
        known = set(session.undelivered) | set(session.recovering)
        for cs in session.clusters.values():
            known.update(cs.by_client_uid)
        unknown = [uid for uid in msg.uids if uid not in known]
        _reply(session, msg, unknown=unknown)

    # ---- node control ---------------------------------------------------------------

    def allocate_node(self, session: ClientSession, msg: messages.AllocateNode,
                      bufs: list[bytes]) -> None:
        cs = self._cluster(session, msg)
        if cs is None:
            return
        try:
            allocs = self._allocs(msg.allocs, bufs, 0)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            _reply(session, msg, rc=-1, reason=f"invalid node: {exc}")
            return
        _reply(session, msg, rc=self.engine.control.allocate_node(cs, allocs))

    def node_control(self, session: ClientSession, msg: messages.NodeControl,
                     bufs: list[bytes]) -> None:
        """deallocate_node, close_node, resetup_node and set_node_cpus of SharedJobCluster."""
        cs = self._cluster(session, msg)
        if cs is None:
            return
        link = self._node(cs, msg.node)
        op = msg.op
        if link is None:
            _reply(session, msg, rc=-1, reason="node is not set up for this computation")
            return
        terminate = msg.terminate
        if op == "deallocate_node":
            rc = self.engine.control.deallocate_node(cs, link)
        elif op == "close_node":
            rc = self.engine.control.close_node(cs, link, terminate)
        elif op == "set_node_cpus":
            if not (self.opts.cooperative or cs.exclusive):
                _reply(session, msg, rc=-1, reason="the node is shared: the scheduler"
                       " allows set_node_cpus only with --cooperative (or to an exclusive"
                       " computation)")
                return
            try:
                rc = self.engine.control.set_node_cpus(cs, link, msg.cpus or 0)
            except (TypeError, ValueError):
                rc = -1
        else:
            if msg.cpus is not None and bufs:
                cs.per_node[link.key] = (msg.cpus, bufs[0], list(msg.depends or ()))
            rc = self.engine.control.close_node(cs, link, terminate, True)
        _reply(session, msg, rc=rc)


#: each op's handler, given the op's record (messages.SCHEDULER_REQUESTS)
_OPS: dict[str, Callable[[ClientService, ClientSession, Any, list[bytes]], None]] = {
    "compute": ClientService.compute,
    "schedule": ClientService.schedule,
    "close": ClientService.close_request,
    "file": ClientService.file,
    "job": ClientService.job,
    "cancel": ClientService.cancel,
    "ack": ClientService.ack,
    "jobs_query": ClientService.jobs_query,
    "allocate_node": ClientService.allocate_node,
    "deallocate_node": ClientService.node_control,
    "close_node": ClientService.node_control,
    "resetup_node": ClientService.node_control,
    "set_node_cpus": ClientService.node_control,
}
