"""The dispynode daemon: authenticates clients, stores their files, relays their jobs.

One client program at a time owns the node (all its computations share the CPUs);
another client that connects is told the node is busy and by whom. Results that
cannot be delivered at once are kept until the client acknowledges them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import signal
import socket
import time
import uuid
from typing import Any

import psutil

from .._version import __version__
from ..eventloop import within
from ..log import last_line
from ..wire import (
    auth,
    codec,
    connection,
    handshake,
    heap,
    hostmsg,
    localpath,
    messages,
    netif,
    records,
    tls,
)
from ..wire.admission import Admission
from ..wire.codec import FrameError
from ..wire.connection import Connection
from ..wire.pulses import PulseWatch, zombie_after
from ..wire.sessions import session_id
from ..wire.status import CANCELLED, TERMINATED
from . import admin, compfiles, service
from .announcer import Announcer
from .avail import avail_info
from .computation import Computation, HostProcess, SpareHost, discard_host
from .disk import NodeDisk, why
from .jobs import JobRunner
from .options import NodeOptions
from .session import Session

log = logging.getLogger("dispy.node")

#: seconds after a computation took the spare host by which the next one starts, should
#: none of the node's jobs end sooner (``SpareHost.refill_soon``)
SPARE_AFTER = 1.0


class NodeDaemon:
    def __init__(self, opts: NodeOptions) -> None:
        self.opts = opts
        self.name = opts.name or socket.gethostname()
        self.cpus = opts.cpus
        self.sessions: dict[str, Session] = {}
        self.owner: Session | None = None
        self.served = 0
        #: --metrics_port (node/metrics.py)
        self.metrics: Any = None
        #: jobs of every computation here, sharing the CPUs (node/jobs.py)
        self.jobs = JobRunner(self)
        self.accepting = True
        #: a computation host started ahead, for the next computation (computation.py)
        self.spare = SpareHost(lambda: self.accepting)
        self.stopping = False
        #: asked to quit once the current client is done (request_quit)
        self.quitting = False
        self.stop_event = asyncio.Event()
        #: the node's directory, lock, result log and job socket (node/disk.py)
        self.disk = NodeDisk(opts.dest_path_prefix, opts.node_port)
        self.root = self.disk.root
        self.ifs = netif.select(opts.ip_addrs)
        #: answers requests, announces this node (node/announcer.py)
        self.announcer = Announcer(opts, self.ifs, lambda peer, cid: self.info(peer, cid))
        self.servers: list[asyncio.AbstractServer] = []
        self.tasks: set[asyncio.Task] = set()
        self.node_id = uuid.uuid4().hex
        #: service window state (--service_start/stop/end); jobs run only while OPEN
        self.service_state = service.OPEN
        #: client ids presumed gone, whose running jobs are still finishing
        self.zombies: set[str] = set()
        #: bounds connections that have not authenticated yet (wire/admission.py)
        self.admission = Admission("dispynode", logger=log)
        #: the name of our local path (wire/localpath.py); None: clients here use TCP
        self.local_name: str | None = None

    # ---- start and stop ---------------------------------------------------------

    async def start(self) -> None:
        heap.keep_freed()
        self.disk.lock(self.opts.clean)
        if self.opts.clean:
            self.disk.clean()
        self.disk.fresh_jobs_dir()  # a killed node's socket goes
        self.sessions.update(self.disk.restore_results())
        ssl_ctx = tls.server_context(self.opts.certfile, self.opts.keyfile)
        codec.load_gmac()  # nor its first big record
        records.warm()  # not in the first client's handshake and first job
        await handshake.rehearse()  # nor its first run of the handshake's code
        hosts = [i.address for i in self.ifs] if self.opts.ip_addrs else [None]
        for host in hosts:
            try:
                server = await connection.serve(
                    self._serve_conn, host, self.opts.node_port, ssl_ctx,
                    handshake_timeout=self.opts.msg_timeout)
            except OSError as exc:
                raise SystemExit(
                    f"dispynode: cannot listen on TCP port {self.opts.node_port}"
                    f" ({host or 'all interfaces'}): {exc.strerror}"
                ) from None
            self.servers.append(server)
        if ssl_ctx is None and not self.opts.tcp_only:  # (TLS programs keep TLS)
            self.local_name = await localpath.serve("node", self._serve_conn, self.servers,
                                                    "clients")
        self.servers.append(await connection.serve_unix(self.jobs.serve_job_link,
                                                        self.disk.jobs_path))
        os.chmod(self.disk.jobs_path, 0o600)
        try:
            await self.announcer.start()
        except OSError as exc:
            raise SystemExit(
                f"dispynode: cannot use UDP port {self.opts.node_port}: {exc.strerror}"
            ) from None
        # Warnings and notes come before the "serving" line that says the node is ready,
        # so whoever waits for that line has seen them.
        if not self.opts.secret:
            log.warning(
                "dispynode runs without a secret: anyone who can reach port %d can run code"
                " here; use -s/--secret", self.opts.node_port,
            )
        if self.opts.config_file:
            log.info("options from %s (command-line options win)", self.opts.config_file)
        addrs = ", ".join(i.address for i in self.ifs)
        log.info(
            "dispynode %s: serving %d CPUs as %r on %s port %d", __version__, self.cpus,
            self.name, addrs, self.opts.node_port,
        )
        if self.opts.service_window is not None:
            log.info("service window: %s", self.opts.service_window.describe())
            self.service_tick()
        self.spawn(self._housekeeping())
        if self.opts.metrics_port:
            await self._serve_metrics()
        self.spare.refill()
        if self.opts.serve == 0:
            log.info("--serve 0: no clients to serve; quitting")
            self.request_stop(terminate=False)
            return
        self.announce()

    def report_soon(self, session: Session, uid: str) -> None:
        """A job's result: on disk first, then to its client, so a node killed at any
        moment loses none. It is queued on the client's connection, whose flush (at the
        end of this loop turn, as for every frame) first saves the results not yet on
        disk (``before_flush``): the results of one turn take one write."""
        entry = session.undelivered.get(uid)
        if entry is None or not session.send(*entry):
            self.disk.save_results(session)
            if entry is not None:
                log.info("client %s is away: result of job %s kept on disk",
                         session.describe(), uid)

    def spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def request_quit(self) -> None:
        """SIGINT (Ctrl-C), the menu's quit: quit once the current client program is done
        with the node (its computations closed), taking no other client meanwhile; asked
        again (or with no client): once the running jobs finish."""
        if self.owner is None or self.quitting or self.stopping:
            self.request_stop(terminate=False)
            return
        self.quitting = True
        self.opts.serve = self.served + 1  # _check_free stops once this client is done
        log.info("dispynode: will quit once client %s is done (its computations closed);"
                 " Ctrl-C again to quit after the running jobs finish",
                 self.owner.describe())

    def request_stop(self, terminate: bool) -> None:
        """Finish running jobs, then exit (the client is told the node has no CPUs, so
        it sends no more jobs here); or, ``terminate`` (SIGTERM, SIGABRT): end jobs now,
        then exit."""
        if terminate:
            log.info("dispynode: terminating; running jobs are reported as Terminated")
            self.spawn(self._shutdown(TERMINATED, "dispynode was terminated"))
        elif not self.stopping:
            self.stopping = True
            self.accepting = False
            self.jobs.close_lanes()
            if self.owner is not None:
                self.owner.send(messages.Cpus(cpus=0))
            log.info("dispynode: will quit after %d running job(s) finish", self.jobs.busy)
            self.maybe_finish()

    def maybe_finish(self) -> None:
        if self.stopping and self.jobs.busy == 0:
            self.spawn(self._shutdown(CANCELLED, "dispynode quit"))

    async def _shutdown(self, status: int, reason: str) -> None:
        self.accepting = False
        for session in list(self.sessions.values()):
            for comp in list(session.computations.values()):
                await self.close_computation(comp, status, reason, notify=True)
            self.disk.save_results(session)
            if session.conn is not None:
                try:
                    await within(session.conn.drain(), self.opts.msg_timeout)
                except (asyncio.TimeoutError, ConnectionError):
                    pass
        self.stop_event.set()

    async def _serve_metrics(self) -> None:
        from .metrics import node_metrics  # prometheus_client only when asked for

        metrics = node_metrics(self)
        await metrics.serve_or_exit("dispynode", self.opts.metrics_host, self.opts.metrics_port)
        self.metrics = metrics

    async def stop(self) -> None:
        """Close the listening sockets and connections after ``stop_event``."""
        self.accepting = False
        if self.metrics is not None:
            await self.metrics.stop()
        spare = await self.spare.take()
        if spare is not None:
            await discard_host(spare)
        for server in self.servers:
            server.close()
        for session in self.sessions.values():
            if session.conn is not None:
                session.conn.close()
            self.disk.save_results(session)
        self.announcer.close()
        self.disk.close()

    # ---- discovery --------------------------------------------------------------

    def info(self, peer: str | None = None, client_id: str | None = None,
             sid: str | None = None) -> dict[str, Any]:
        """What clients learn about this node (in datagrams and the TCP welcome). In a
        datagram, ``client_id`` (claimed) only shapes the answer; over TCP the session
        (``sid``) decides who holds the node."""
        ip = None
        if self.opts.ext_ip_addrs:
            ip = self.opts.ext_ip_addrs[0]
        elif peer:
            ip = netif.address_towards(peer, self.ifs)
        busy_with = None
        mine = self.owner is not None and (
            self.owner.sid == sid if sid is not None else self.owner.client_id == client_id)
        if self.owner is not None and not mine:
            busy_with = self.owner.describe()
        elif self.owner is None and self.service_state != service.OPEN:
            busy_with = f"none: {self.service_text()}"  # clients retry when it opens
        return {
            "name": self.name, "version": __version__, "port": self.opts.node_port,
            "node_id": self.node_id,
            "ip_addr": ip or (self.ifs[0].address if self.ifs else None),
            "cpus": self.usable_cpus(),
            "busy": self.jobs.busy, "busy_with": busy_with, "platform": platform.platform(),
            "avail_info": avail_info(self.opts.dest_path_prefix),
            "accepting": self.accepting and self.usable_cpus() > 0,
        }

    def usable_cpus(self) -> int:
        """CPUs offered to clients: none outside the service window."""
        return self.cpus if self.service_state == service.OPEN else 0

    def announce(self) -> None:
        """Tell whoever may want this node that it is free (node/announcer.py)."""
        if self.service_state == service.OPEN:
            self.announcer.announce()

    # ---- client connections -------------------------------------------------------

    def _keys(self, role: str) -> bytes | None:
        if role == admin.ROLE:  # dispyadmin (node/admin.py)
            return admin.key(self)
        return auth.derive_key(self.opts.secret) if role == auth.CLIENT_ROLE else None

    async def _serve_conn(self, conn: Connection) -> None:
        peer = conn.peer[0]
        local = localpath.is_local(conn)  # the local path: carries on a TCP session
        key = localpath.admission_key(conn)
        sids: dict[str, str] = {}

        def welcome(hello: dict) -> dict:
            sid = sids["sid"] = session_id(hello.get("session"))
            if local:
                localpath.carries_on(hello, self.sessions.get(sid))  # or refused
            info = self.info(None, sid=sid)
            if hello.get("role", auth.CLIENT_ROLE) == auth.CLIENT_ROLE:
                info.update(localpath.offer(conn, self.local_name))
            return info

        if not await self.admission.admit(key, conn):
            return
        try:
            hello = await handshake.accept(
                conn, self._keys, welcome, self.opts.msg_timeout, f"node {self.name}", log,
                identity={"node_id": self.node_id, "name": self.name})
        finally:
            self.admission.release(key)
        if hello is None:
            return
        sid = sids["sid"]
        session = self.sessions.get(sid)
        if local:
            if session is None or session.conn is None:  # (checked as it was welcomed)
                return
            peer = session.addr
        if hello.get("role") == admin.ROLE:  # dispyadmin: node/admin.py serves it
            return await admin.serve(self, conn, peer)
        if "lane" in hello:  # a lane for a job process (node/lanes.py): not read here
            if session is None or not isinstance(hello["lane"], str) or \
                    not self.jobs.attach_lane(session, hello["lane"], conn):
                await conn.close_soon()
            return
        log.debug("handshake with %s (%s) done%s", peer, hello.get("client_name"),
                  " (local path)" if local else "")
        if self.owner is not None and self.owner.sid != sid:
            await conn.close_soon()  # the welcome told it who holds the node
            return
        if session is None:
            session = Session(sid, str(hello.get("client_id", "?"))[:64],
                              str(hello.get("client_name", "?"))[:64], peer)
            self.sessions[sid] = session
        resend = localpath.switch(session.conn, conn,
                                  bool(localpath.offer(conn, self.local_name)),
                                  self.opts.msg_timeout)
        session.conn, session.addr = conn, peer
        conn.before_flush = lambda: self.disk.save_results(session)
        session.last_seen = time.monotonic()
        session.pulses = PulseWatch()  # a pulse lost with the old connection counts no more
        self._keepalive(conn)
        if resend:
            for header, bufs in list(session.undelivered.values()):
                session.send(header, bufs)
        await self._read_client(session, conn)

    async def _read_client(self, session: Session, conn: Connection) -> None:
        """The client's frames, handled as they are decoded (in the read callback: no task
        wake-up per frame). A computation the client sets up again is closed first; the
        frames after it wait for that, in order."""
        held: list[tuple[dict, list]] | None = None

        def frame(header: dict, bufs: list) -> None:
            nonlocal held
            session.last_seen = time.monotonic()
            if session.pulses.heard():  # it answers: alive
                self.zombies.discard(session.sid)
            if held is not None:
                held.append((header, bufs))
            elif self._set_up_again(session, header) is not None:
                held = [(header, bufs)]
                self.spawn(release())
            else:
                self._on_client_frame(session, conn, header, bufs)

        async def release() -> None:
            nonlocal held
            while held:
                header, bufs = held.pop(0)
                old = self._set_up_again(session, header)
                if old is not None:  # the client presumed us dead: end the old one first
                    await self.close_computation(old, TERMINATED, "set up again by client",
                                                  notify=False, release=False)
                self._on_client_frame(session, conn, header, bufs)
            held = None

        try:
            ended = await conn.deliver_to(frame)
            if isinstance(ended, FrameError):
                log.warning("dropped connection from %s: %s", session.addr, ended)
            elif session.conn is not conn and session.conn is not None:
                log.debug("client %s: now on another connection", session.describe())
            else:
                log.debug("client %s disconnected", session.describe())
        finally:
            if session.conn is conn:
                session.conn = None
                session.last_seen = time.monotonic()  # zombie_interval counts from here
                session.pulses = PulseWatch()
            conn.close()
            self._check_free(session)

    @staticmethod
    def _set_up_again(session: Session, header: dict) -> Computation | None:
        """The computation a "compute" frame sets up again (the client presumed us dead)."""
        if header.get("op") != "compute":
            return None
        return session.computations.get(messages.id_field(header, "cid"))

    def _on_client_frame(self, session: Session, conn: Connection, header: dict,
                         bufs: list) -> None:
        try:
            self._on_client(session, header, bufs)
        except Exception:
            log.exception("failed to handle %r from %s", header.get("op"),
                          session.describe())

    def _keepalive(self, conn: Connection) -> None:
        """TCP keepalive well within --zombie_interval, so a client whose machine vanished
        (no FIN ever comes) is noticed as disconnected, while an idle live one is not."""
        idle = max(1, min(600, int(self.opts.zombie_interval * 60 / 4)))
        conn.keepalive(idle, self.opts.msg_timeout)

    def _on_client(self, session: Session, header: dict, bufs: list[bytes]) -> None:
        try:
            req = messages.parse_request(header, bufs)
        except messages.MessageError as exc:
            self._refuse_request(session, header, str(exc))
            return
        if isinstance(req, messages.Job):
            self.jobs.job(session, req, bufs)
        elif isinstance(req, messages.Ack):
            self.jobs.lane_acked(session, req.uids)
            self.disk.acknowledged(session, req.uids)
            self._check_free(session)
        elif isinstance(req, messages.Compute):
            self._compute(session, req, bufs)
        elif isinstance(req, messages.File):
            compfiles.store(self.root, self.opts.max_file_size, session, req, bufs)
        elif isinstance(req, messages.FilesCheck):
            compfiles.check(session, req)
        elif isinstance(req, messages.JobsQuery):
            session.send(messages.Reply(reply=req.reply,
                                        unknown=self.jobs.unknown(session, req.uids)))
        elif isinstance(req, messages.Setup):
            comp = session.computations.get(req.cid)
            if comp is not None:
                self.spawn(self._setup(comp, bufs))
        elif isinstance(req, messages.Cancel):
            comp = session.computations.get(req.cid)
            if comp is not None:
                self.jobs.cancel(comp, req.uid)
        elif isinstance(req, messages.Close):
            comp = session.computations.get(req.cid)
            if comp is not None:
                status = CANCELLED if req.terminate else TERMINATED
                self.spawn(self.close_computation(comp, status, "computation closed", True,
                                                    release=not req.keep))
            else:
                session.send(messages.Closed(cid=req.cid))
        else:
            log.warning("ignoring unknown request %r from %s", req.op, session.describe())

    def _refuse_request(self, session: Session, header: dict, reason: str) -> None:
        """A request that does not fit its record: refused, nothing else changes."""
        log.warning("refused a request from %s: %s", session.describe(), reason)
        reply = header.get("reply")
        if isinstance(reply, str) and messages.ID.fullmatch(reply):
            session.send(messages.Reply(reply=reply, ok=False, reason=reason))

    # ---- computations -----------------------------------------------------------

    def _compute(self, session: Session, req: messages.Compute, bufs: list[bytes]) -> None:
        cid = req.cid
        if self.owner is not None and self.owner is not session:
            session.send(messages.SetupDone(
                cid=cid, reason=f"node is busy with client {self.owner.describe()}"))
            return
        if not self.accepting:
            session.send(messages.SetupDone(
                cid=cid, reason="node is not accepting computations (shutting down)"))
            return
        if self.owner is None and self.service_state != service.OPEN:
            session.send(messages.SetupDone(cid=cid, reason=f"node is {self.service_text()}"))
            return
        try:
            directory = compfiles.computation_dir(self.root, session, cid, req.dest_path)
        except (ValueError, OSError) as exc:
            log.warning("refused computation %r from %s: %s", req.name[:80],
                        session.describe(), why(exc))
            session.send(messages.SetupDone(cid=cid, reason=why(exc)))
            return
        self.owner = session
        session.orphan = False
        comp = Computation(cid, req, bufs[0] if bufs else b"", directory, session,
                           tree=self.root)
        session.computations[cid] = comp
        self.jobs.close_lanes(keep=comp)  # (lanes serve a node's only computation)
        pulse = req.pulse_interval
        if pulse is not None and pulse > 0:
            session.pulse_interval = min(pulse, session.pulse_interval or pulse)
        log.info("computation %r from %s", comp.name, session.describe())

    def _address_for(self, session: Session) -> str:
        """This node's address as the session's client knows it (dispy_node_ip_addr):
        --ext_ip_addr, else ours on its network, else the one it connected to."""
        if self.opts.ext_ip_addrs:
            return self.opts.ext_ip_addrs[0]
        local = session.conn.sockname if session.conn is not None else None
        return (netif.address_towards(session.addr, self.ifs) or local
                or (self.ifs[0].address if self.ifs else session.addr))

    async def _setup(self, comp: Computation, setup_args: list[bytes]) -> None:
        session = comp.session
        if comp.failed is None:
            comp.host = HostProcess(lambda m, b: self.jobs.on_host(comp, m, b))
            self.jobs.job_tokens[comp.token] = comp
            launched = await self.spare.take()
            init = hostmsg.HostInit(
                cid=comp.cid, dir=comp.dir, jobs_path=self.disk.jobs_path, token=comp.token,
                node_name=self.name, node_ip_addr=self._address_for(session),
                client_shutdown=self.opts.client_shutdown, fork=self.jobs.prefork(comp),
                result_dir=self.disk.result_dir, result_tag=comp.result_tag)
            ready = False
            try:
                comp.failed = await comp.host.start(init, [comp.bundle, *setup_args],
                                                    launched)
                ready = comp.failed is None
            finally:  # (also when starting the host raised)
                self.jobs.setup_done(comp, ready)
        comp.bundle = b""
        log.debug("setup of %r: %s", comp.name, "failed" if comp.failed else "done")
        if comp.failed is not None:
            log.warning("setup of %r failed: %s", comp.name, comp.failed.strip().splitlines()[-1])
            session.send(messages.SetupDone(cid=comp.cid, reason=comp.failed))
            self.spare.refill()
            await self.close_computation(comp, CANCELLED, "setup failed", notify=False)
            return
        comp.ready = True
        # the client hears it while the job processes fork (its first jobs wait for
        # them here); the next spare host starts after a job ends, off the first job's path
        session.send(messages.SetupDone(cid=comp.cid, ok=True, cpus=self.cpus))
        session.flush()
        self.spare.refill_soon(SPARE_AFTER)

    async def close_computation(
        self, comp: Computation, status: int, reason: str, notify: bool, release: bool = True
    ) -> None:
        """End a computation; ``release=False`` keeps the node for the client (resetup)."""
        session = comp.session
        if session.computations.get(comp.cid) is not comp:
            return
        del session.computations[comp.cid]
        self.jobs.job_tokens.pop(comp.token, None)
        comp.closing = (status, reason)
        problem = None
        if comp.host is not None:
            await comp.host.close(status, reason, self.opts.msg_timeout)
            problem = comp.host.problem
            if problem:
                log.warning("cleanup of %r from %s failed: %s", comp.name, session.describe(),
                            last_line(problem))
        self.jobs.finish_links(comp, reason)
        comp.remove_files(self.opts.force_cleanup)
        compfiles.remove_client_dir(self.root, session)  # before the client hears "closed"
        if notify:
            session.send(messages.Closed(cid=comp.cid, problem=problem))
        log.info("computation %r from %s closed", comp.name, session.describe())
        if release:
            self._check_free(session)

    def _check_free(self, session: Session) -> None:
        """Release the node when its owner has nothing left here."""
        compfiles.remove_client_dir(self.root, session)  # even while results await acks
        if session.computations or (session.undelivered and not session.orphan):
            return
        if session.conn is None and not session.undelivered:
            self.sessions.pop(session.sid, None)
        if self.owner is session:
            self.owner = None
            self.served += 1
            log.info("client %s is done; node is free", session.describe())
            if 0 <= self.opts.serve <= self.served:
                if self.quitting:
                    log.info("quitting as asked, now that the client is done")
                else:
                    log.info("served %d client(s) as asked by --serve; quitting",
                             self.served)
                self.request_stop(terminate=False)
            else:
                self.announce()

    # ---- periodic work ----------------------------------------------------------

    async def _housekeeping(self) -> None:
        last_announce = time.monotonic()
        last_pulse: dict[str, float] = {}
        psutil.cpu_percent(interval=None)
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            # pulses: as often as the client asked, and at least 5 per --zombie_interval
            # (the client answers each: one that does not is hung, a zombie too)
            zombie_pulse = self.opts.zombie_interval * 60 / 5
            for session in list(self.sessions.values()):
                if session.conn is not None:
                    period = min(session.pulse_interval or zombie_pulse, zombie_pulse)
                    if now - last_pulse.get(session.sid, 0) >= period:
                        last_pulse[session.sid] = now
                        session.pulses.pulsed(now)
                        session.send(messages.Pulse(
                            busy=self.jobs.busy,
                            avail_info=avail_info(self.opts.dest_path_prefix)))
                await self._check_zombie(session, now)
                self.disk.save_results(session, older_than=now - 1.0)
            self.disk.flush()
            self.jobs.forget_lane_acks(now)
            self.service_tick()
            if (self.opts.ping_interval and self.owner is None
                    and now - last_announce >= self.opts.ping_interval):
                last_announce = now
                self.announce()

    async def _check_zombie(self, session: Session, now: float) -> None:
        """A client silent for --zombie_interval is presumed gone (a zombie): one
        disconnected that long, or one connected that answered no pulse that long (a
        stopped or hung program). Its running jobs finish, then its computations close
        and the node is free again."""
        if session.conn is not None:
            silent = session.pulses.silent_for(session.conn, now)
            limit = zombie_after(self.opts.zombie_interval, self.opts.msg_timeout)
        else:
            silent, limit = now - session.last_seen, self.opts.zombie_interval * 60
        if session.orphan or silent <= limit:
            return
        running = sum(len(c.running) for c in session.computations.values())
        if running:
            if session.sid not in self.zombies:
                self.zombies.add(session.sid)
                log.warning("client %s silent for %.0f s: presumed gone; the node is freed"
                            " after its %d running job(s) finish", session.describe(), silent,
                            running)
            return
        self.zombies.discard(session.sid)
        log.warning("client %s silent for %.0f s: presumed gone; releasing the node",
                    session.describe(), silent)
        self.disk.save_results(session)  # recover_jobs can still fetch them
        session.orphan = True
        for comp in list(session.computations.values()):
            await self.close_computation(comp, CANCELLED, "client presumed gone", False)
        if session.conn is not None:  # hung: if it wakes, it reconnects and is told
            session.conn.close()
        self._check_free(session)

    # ---- service window -----------------------------------------------------------

    def service_text(self) -> str:
        window = self.opts.service_window
        if window is None:
            return "in service"
        if self.service_state == service.OPEN:
            wait, _ = window.next_change(service.seconds_of_day(service.clock()))
            until = service.format_hhmm(service.seconds_of_day(service.clock() + wait))
            return f"in service hours until {until}"
        what = "not accepting jobs" if self.service_state == service.STOPPED else "closed"
        return f"outside service hours ({what}; opens at {service.format_hhmm(window.start)})"

    def service_tick(self) -> None:
        """Follow the service window: open, stop accepting jobs, or end (kill jobs)."""
        window = self.opts.service_window
        if window is None:
            return
        state = window.state(service.seconds_of_day(service.clock()))
        if state == self.service_state:
            return
        self.service_state = state
        log.info("service window: %s", self.service_text())
        if self.owner is not None:
            self.owner.send(messages.Cpus(cpus=self.usable_cpus()))
        if state == service.OPEN:
            self.jobs.start_jobs()
            if self.owner is None:
                self.announce()
            return
        self.jobs.start_jobs()  # outside service hours: refuses the waiting jobs
        self.jobs.close_lanes()
        if state == service.CLOSED:
            self.jobs.kill_running(f"node is {self.service_text()}")

    # ---- status (stdin menu) ------------------------------------------------------

    def status_text(self) -> str:
        lines = [f"Serving {self.cpus} CPUs as {self.name!r}; {self.jobs.busy} busy;"
                 f" {self.jobs.jobs_done} jobs done; {self.served} clients served"]
        if self.opts.service_window is not None:
            lines.append(f"  service: {self.opts.service_window.describe()};"
                         f" now {self.service_text()}")
        for session in self.sessions.values():
            for comp in session.computations.values():
                lines.append(f"  {session.describe()}: {comp.name!r} running "
                             f"{len(comp.running)} jobs, done {comp.jobs_done}")
        return "\n".join(lines)

    def set_cpus(self, cpus: int) -> None:
        ncpu = os.cpu_count() or 1
        self.cpus = max(0, min(ncpu, cpus if cpus >= 0 else ncpu + cpus))
        log.info("now using %d CPUs", self.cpus)
        if self.owner is not None:
            self.owner.send(messages.Cpus(cpus=self.usable_cpus()))
        self.jobs.start_jobs()
        if self.cpus and self.owner is None:
            self.announce()


def install_signals(daemon: NodeDaemon) -> None:
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, daemon.request_quit)
    for sig in (signal.SIGTERM, signal.SIGABRT):
        loop.add_signal_handler(sig, daemon.request_stop, True)


