"""dispyscheduler: several client programs share the same nodes at the same time.

Clients (SharedJobCluster) authenticate with the cluster secret, nodes with the node
secret; the two are checked separately, each leg with its own TLS certificate. Jobs of
every client are matched to node CPUs by the one scheduling core.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
import uuid
from typing import Any

from .. import config, fsafe
from .._version import __version__
from ..client.engine import Engine
from ..client.links import Profile
from ..wire import auth, codec, connection, handshake, heap, localpath, messages, records, tls
from ..wire.admission import Admission
from ..wire.codec import FrameError, Limits
from ..wire.connection import Connection
from ..wire.pulses import PulseWatch, zombie_after
from ..wire.sessions import session_id
from .clients import ClientService, ClientSession
from .httpd import SchedulerMonitor
from .journal import SavedState, SchedulerJournal
from .options import SchedulerOptions
from .programs import ProgramSink, node_engine
from .restore import restore

log = logging.getLogger("dispy.scheduler")

#: at most this many seconds between the pulses each program gets
PROGRAM_PULSE = 10.0


class SchedulerDaemon:
    def __init__(self, opts: SchedulerOptions) -> None:
        self.opts = opts
        self.name = socket.gethostname()
        self.scheduler_id = uuid.uuid4().hex
        self.root = os.path.join(opts.dest_path_prefix, "dispy",
                                 f"scheduler-{opts.scheduler_port}")
        self.node_profile = Profile(opts.node_secret, opts.node_certfile, opts.node_keyfile)
        self.sessions: dict[str, ClientSession] = {}
        self.servers: list[asyncio.AbstractServer] = []
        self.tasks: set[asyncio.Task] = set()
        self.stop_event = asyncio.Event()
        self.engine: Engine | None = None
        #: where the engine's jobs end: at the programs (scheduler/programs.py)
        self.programs = ProgramSink()
        self.service: ClientService | None = None
        self.monitor: SchedulerMonitor | None = None
        #: bounds connections that have not authenticated yet (wire/admission.py)
        self.admission = Admission("dispyscheduler", logger=log)
        #: the name of our local path (wire/localpath.py); None: programs here use TCP
        self.local_name: str | None = None
        #: what a restart needs (scheduler/journal.py); opened once the tree is made
        self.journal: SchedulerJournal | None = None
        #: set once the journal is read: connections wait for it
        self.ready = asyncio.Event()
        #: --metrics_port (scheduler/metrics.py)
        self.metrics: Any = None

    def spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    # ---- start and stop ---------------------------------------------------------

    async def start(self) -> None:
        heap.keep_freed()
        loop = asyncio.get_running_loop()
        try:
            self.engine, self.programs = node_engine(
                self.opts.port, self.opts.ip_addrs or None, self.opts.policy, loop,
                self.opts.nodes, self.opts.msg_timeout)
            self.engine.finder.multicast = self.opts.ipv4_udp_multicast
            if self.opts.ext_ip_addrs:  # nodes elsewhere announce to it (through the NAT)
                self.engine.finder.ext_ip_addr = self.opts.ext_ip_addrs[0]
        except OSError as exc:
            raise SystemExit(f"dispyscheduler: {exc}") from None
        self.service = ClientService(self.engine, self.opts, self.node_profile, self.spawn)
        ssl_ctx = tls.server_context(self.opts.cluster_certfile, self.opts.cluster_keyfile)
        codec.load_gmac()  # nor its first big record
        records.warm()  # not in the first program's handshake and first job
        await handshake.rehearse()  # nor its first run of the handshake's code
        hosts = [i.address for i in self.engine.ifs] if self.opts.ip_addrs else [None]
        for host in hosts:
            try:
                server = await connection.serve(self._serve_conn, host,
                                                self.opts.scheduler_port, ssl_ctx,
                                                handshake_timeout=self.opts.msg_timeout)
            except OSError as exc:
                raise SystemExit(
                    f"dispyscheduler: cannot listen on TCP port {self.opts.scheduler_port}"
                    f" ({host or 'all interfaces'}): {exc.strerror}") from None
            self.servers.append(server)
        if ssl_ctx is None and not self.opts.tcp_only:  # (TLS programs keep TLS)
            self.local_name = await localpath.serve("scheduler", self._serve_conn,
                                                    self.servers, "programs")
        # its directory only once it serves: a start that fails leaves nothing behind
        try:  # 0700, refused if another local user owns it or may write to it
            fsafe.private_tree(self.opts.dest_path_prefix,
                               ("dispy", f"scheduler-{self.opts.scheduler_port}"))
        except (ValueError, OSError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise SystemExit(f"dispyscheduler: cannot use {self.root}: {why}") from None
        if self.opts.clean:
            fsafe.clear_tree(self.root)
        state = self._open_journal()
        await self.engine.start()
        if state is not None and self.journal is not None:
            restore(state, self.journal, self.service, self.sessions, self.root,
                    self.opts.msg_timeout, self.spawn)
        self.ready.set()
        # Warnings and notes come before the line that says the daemon is ready, so
        # whoever waits for that line has seen them.
        if not self.opts.cluster_secret:
            log.warning("dispyscheduler runs without --cluster_secret: anyone who can reach"
                        " port %d can run code on its nodes and read its programs' jobs;"
                        " use --cluster_secret", self.opts.scheduler_port)
        if self.opts.config_file:
            log.info("options from %s (command-line options win)", self.opts.config_file)
        addrs = ", ".join(self.opts.ext_ip_addrs or [i.address for i in self.engine.ifs])
        log.info("dispyscheduler %s: clients connect to %s port %d; nodes on port %d;"
                 " policy %s", __version__, addrs, self.opts.scheduler_port,
                 self.opts.node_port, self.opts.policy)
        self.spawn(self._housekeeping())
        if self.opts.httpd:
            self._start_monitor()
        if self.opts.metrics_port:
            await self._serve_metrics()
        self._find_nodes()

    def _open_journal(self) -> SavedState | None:
        """The journal of the last run (None if it cannot be used: the scheduler then
        runs without one, as before, and says so)."""
        assert self.engine is not None and self.service is not None
        old = [n for n in ("journal.sqlite", "journal.sqlite-wal", "journal.sqlite-shm",
                           "journal.sqlite.blobs") if os.path.lexists(os.path.join(self.root, n))]
        if old:  # this scheduler's journal before 5.0's log (a development version's)
            log.warning("dispyscheduler: the SQLite journal of an earlier version is not"
                        " read; removed %s", ", ".join(old))
            for name in old:
                fsafe.remove_beneath(self.root, os.path.join(self.root, name))
        try:
            journal = SchedulerJournal(os.path.join(self.root, "journal.log"))
            self.scheduler_id = journal.scheduler_id()
            state = journal.load()
            journal.start_boot(self.engine.client_id, self.engine.session_key)
        except (ValueError, OSError) as exc:
            log.error("dispyscheduler: %s; it keeps no journal: a restart loses the programs'"
                      " jobs", exc)
            return None
        self.journal = self.programs.journal = journal
        self.service.boot = journal.boot
        return state

    async def _serve_metrics(self) -> None:
        from .metrics import scheduler_metrics  # prometheus_client only when asked for

        assert self.engine is not None
        metrics = scheduler_metrics(self)
        await metrics.serve_or_exit("dispyscheduler", self.opts.metrics_host,
                                    self.opts.metrics_port)
        self.metrics = self.programs.metrics = metrics

    def _start_monitor(self) -> None:
        """--httpd: the monitor page of every program's computation."""
        assert self.engine is not None and self.service is not None
        try:
            self.monitor = SchedulerMonitor(self.opts.httpd_host, self.opts.httpd_port,
                                            asyncio.get_running_loop(),
                                            self.engine.core.running)
        except OSError as exc:
            raise SystemExit(f"dispyscheduler: --httpd cannot serve on port"
                             f" {self.opts.httpd_port}: {exc.strerror or exc}") from None
        self.programs.observer = self.monitor.event
        self.spawn(self._follow_computations())

    async def _follow_computations(self) -> None:
        while self.monitor is not None and self.service is not None:
            self.monitor.sync(self.service.computations)
            await asyncio.sleep(1.0)

    def _find_nodes(self) -> None:
        """Ask the nodes on our networks (and those named with -n) to announce themselves,
        so the first computation finds them at once."""
        assert self.engine is not None
        secret = self.opts.node_secret
        self.engine.finder.broadcast(self.opts.node_port,
                                        auth.derive_key(secret) if secret else None)

    def request_stop(self) -> None:
        self.stop_event.set()

    async def stop(self) -> None:
        """Close every computation (running jobs are terminated), then the connections."""
        for server in self.servers:
            server.close()
        if self.metrics is not None:
            await self.metrics.stop()
        if self.monitor is not None:
            monitor, self.monitor = self.monitor, None
            await asyncio.get_running_loop().run_in_executor(None, monitor.shutdown)
        if self.service is not None:
            for cs in list(self.service.computations.values()):
                cs.session.send(messages.SchedulerStopping(cid=cs.client_cid))
                await self.service.close(cs, terminate=True)
        for session in list(self.sessions.values()):
            if session.conn is not None:
                session.conn.close()
                session.conn = None  # (its reader, ending later, leaves it to us)
            if not session.clusters and not session.undelivered:
                self._drop_session(session)  # now, while the journal is open
        for task in list(self.tasks):
            task.cancel()
        if self.journal is not None:
            self.journal.close()
        log.info("dispyscheduler stopped")

    # ---- clients ------------------------------------------------------------------

    def program_pulse(self) -> float:
        """Seconds between the pulses a program gets (it answers each; one that answers
        none for --zombie_interval is hung, and one that hears none for 5 of them
        presumes the scheduler hung)."""
        return min(PROGRAM_PULSE, self.opts.zombie_interval * 60 / 5)

    def _welcome(self, hello: dict) -> dict:
        return {"scheduler": True, "scheduler_id": self.scheduler_id, "name": self.name,
                "pulse_interval": self.opts.pulse_interval, "cpus": 0,
                "node_port": self.opts.node_port, "pulse": self.program_pulse()}

    def _keys(self, role: str) -> bytes | None:
        return auth.derive_key(self.opts.cluster_secret) if role == auth.CLIENT_ROLE else None

    async def _serve_conn(self, conn: Connection) -> None:
        peer = conn.peer[0]
        local = localpath.is_local(conn)  # the local path: carries on a TCP session
        key = localpath.admission_key(conn)
        await self.ready.wait()
        if not await self.admission.admit(key, conn):
            return

        def welcome(hello: dict) -> dict:
            if local:  # or refused
                localpath.carries_on(hello, self.sessions.get(session_id(hello.get("session"))))
            return {**self._welcome(hello), **localpath.offer(conn, self.local_name)}

        try:
            hello = await handshake.accept(
                conn, self._keys, welcome, self.opts.msg_timeout,
                f"dispyscheduler {self.name}", log,
                identity={"scheduler_id": self.scheduler_id},
                limits=Limits(max_buffer=config.MaxFrameSize))
        finally:
            self.admission.release(key)
        if hello is None:
            return
        sid = session_id(hello.get("session"))
        session = self.sessions.get(sid)
        if local:
            if session is None or session.conn is None:  # (checked as it was welcomed)
                return
            peer = session.addr
            log.debug("%s moved to the local path", session.describe())
        if session is None:
            session = ClientSession(sid, str(hello.get("client_id", "?"))[:64],
                                    str(hello.get("client_name", "?"))[:64], peer,
                                    os.path.join(self.root, f"client-{uuid.uuid4().hex}"),
                                    self.opts.msg_timeout,  # its directory: never a peer's id
                                    self.journal)
            self.sessions[sid] = session
            if self.journal is not None:
                self.journal.session(sid, session.client_id, session.name, peer, session.root)
            log.info("%s connected", session.describe())
        resend = localpath.switch(session.conn, conn,
                                  bool(localpath.offer(conn, self.local_name)),
                                  self.opts.msg_timeout)
        session.conn, session.addr = conn, peer
        session.last_seen = time.monotonic()
        session.pulses = PulseWatch()  # a pulse lost with an old connection counts no more
        idle = max(1, min(600, int(self.opts.zombie_interval * 60 / 4)))
        conn.keepalive(idle, self.opts.msg_timeout)  # a machine that vanished is noticed
        if resend:
            for header, bufs in list(session.undelivered.values()):
                session.send(header, bufs)
        await self._read_client(session, conn)

    async def _read_client(self, session: ClientSession, conn: Connection) -> None:
        """A program's frames, handled as they are decoded (in the read callback: no task
        wake-up, and no loop turn, per frame); its jobs are dispatched after each read."""
        service, engine = self.service, self.engine
        assert service is not None and engine is not None

        def frame(header: dict, bufs: list) -> None:
            session.last_seen = time.monotonic()
            session.pulses.heard()
            try:
                service.handle(session, header, bufs)
            except Exception:
                log.exception("failed to handle %r from %s", header.get("op"),
                              session.describe())

        try:
            ended = await conn.deliver_to(frame, engine.dispatch)
            if isinstance(ended, FrameError):
                log.warning("dropped connection from %s: %s", session.describe(), ended)
            elif session.conn is not conn and session.conn is not None:
                log.debug("%s: now on another connection", session.describe())
            else:
                log.info("%s disconnected", session.describe())
        finally:
            conn.close()
            if session.conn is conn:
                session.conn = None
                session.last_seen = time.monotonic()  # zombie_interval counts from here
                if not session.clusters and not session.undelivered:
                    self._drop_session(session)

    # ---- periodic work --------------------------------------------------------------

    async def _housekeeping(self) -> None:
        last_pulse: dict[str, float] = {}
        while True:
            await asyncio.sleep(min(5.0, max(0.5, self.opts.zombie_interval * 60 / 10)))
            now = time.monotonic()
            try:
                for session in list(self.sessions.values()):
                    if session.conn is not None and \
                            now - last_pulse.get(session.sid, 0) >= self.program_pulse():
                        last_pulse[session.sid] = now
                        session.pulses.pulsed(now)
                        session.send(messages.Pulse())
                self._zombies(now)
            except Exception:
                log.exception("scheduler housekeeping failed")

    def _zombies(self, now: float) -> None:
        """End the computations of clients away longer than --zombie_interval, or
        connected without answering a pulse that long (a stopped or hung program)."""
        assert self.service is not None
        limit = self.opts.zombie_interval * 60
        for session in list(self.sessions.values()):
            if session.conn is None:
                silent, how = now - session.last_seen, "away"
                if silent < limit:
                    continue
            else:
                silent, how = session.pulses.silent_for(session.conn, now), "silent"
                if silent < zombie_after(self.opts.zombie_interval, self.opts.msg_timeout):
                    continue
                session.conn.close()
            log.warning("%s %s for %.0f s (--zombie_interval): its %d computation(s)"
                        " are closed and their jobs cancelled", session.describe(), how,
                        silent, len(session.clusters))
            self._drop_session(session)
            for cs in list(session.clusters.values()):
                self.spawn(self.service.close(cs, terminate=True))
            session.undelivered.clear()
            self.spawn(self._remove_later(session.root))

    def _drop_session(self, session: ClientSession) -> None:
        self.sessions.pop(session.sid, None)
        if self.journal is not None:
            self.journal.drop_session(session.sid)
            self.journal.flush()

    async def _remove_later(self, path: str) -> None:
        await asyncio.sleep(1)
        fsafe.remove_beneath(self.root, path)

    # ---- status ---------------------------------------------------------------------

    def status_text(self) -> str:
        assert self.engine is not None and self.service is not None
        lines = [f"dispyscheduler {__version__} on {self.name}, policy {self.opts.policy}"]
        lines.append("  nodes:")
        for link in self.engine.links.values():
            node = link.node
            if node is None or link.state != "connected":
                continue
            lines.append(f"    {node.name:20} {link.ip}:{link.port}  cpus {node.cpus}"
                         f"  busy {self.engine.core.node_busy(link.key)}"
                         f"  jobs done {node.jobs_done}")
        lines.append("  computations:")
        for cs in self.service.computations.values():
            state = "running" if self.engine.core.admitted(cs.cid) else "waiting"
            running = self.engine.core.running(cs.cid)
            lines.append(f"    {cs.describe()}: {state}, {len(cs.jobs) - running} job(s)"
                         f" pending, {running} running")
        away = [s for s in self.sessions.values() if s.conn is None]
        if away:
            lines.append(f"  clients away: {', '.join(s.describe() for s in away)}")
        return "\n".join(lines)


def install_signals(daemon: SchedulerDaemon) -> None:
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, daemon.request_stop)
    loop.add_signal_handler(signal.SIGTERM, daemon.request_stop)
