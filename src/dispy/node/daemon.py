"""The dispynode daemon: authenticates clients, stores their files, relays their jobs.

One client program at a time owns the node (all its computations share the CPUs);
another client that connects is told the node is busy and by whom. Results that
cannot be delivered at once are kept until the client acknowledges them.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import logging
import os
import platform
import shutil
import signal
import socket
import stat
import tempfile
import time
import uuid
from collections import deque
from typing import Any

import psutil

from .. import fsafe
from .._version import __version__
from ..wire import auth, connection, handshake, heap, messages, netif, tls
from ..wire.admission import Admission
from ..wire.codec import FrameError
from ..wire.connection import Connection, ConnectionClosed
from ..wire.sessions import session_id
from . import admin, service
from .announcer import Announcer
from .avail import avail_info
from .computation import Computation, HostProcess, Launched, discard_host, launch_host
from .jobs import JobRunner
from .options import NodeOptions
from .results import ResultStore
from .session import Session

log = logging.getLogger("dispy.node")

CANCELLED, TERMINATED = 8, 9


#: Longest path of a Unix socket (sun_path is 108 bytes on Linux, with its NUL).
SOCKET_PATH_MAX = 107


class NodeDaemon(JobRunner):
    def __init__(self, opts: NodeOptions) -> None:
        self.opts = opts
        self.name = opts.name or socket.gethostname()
        self.cpus = opts.cpus
        self.busy = 0
        self.sessions: dict[str, Session] = {}
        self.owner: Session | None = None
        self.served = 0
        self.jobs_done = 0
        self.cpu_time = 0.0
        self.ended: dict[int, int] = {}
        #: --metrics_port (node/metrics.py)
        self.metrics: Any = None
        self.accepting = True
        #: a computation host started ahead, for the next computation (computation.py)
        self.spare: asyncio.Task[Launched] | None = None
        self.stopping = False
        self.stop_event = asyncio.Event()
        self.root = os.path.join(opts.dest_path_prefix, "dispy", f"node-{opts.node_port}")
        self.ifs = netif.select(opts.ip_addrs)
        #: answers requests, announces this node (node/announcer.py)
        self.announcer = Announcer(opts, self.ifs, lambda peer, cid: self.info(peer, cid))
        self.servers: list[asyncio.AbstractServer] = []
        self.tasks: set[asyncio.Task] = set()
        self.node_id = uuid.uuid4().hex
        self.waiting: deque[tuple[Computation, dict, list]] = deque()
        #: computation token -> computation, for job processes connecting (jobs.py)
        self.job_tokens: dict[str, Computation] = {}
        #: private directory of the Unix socket job processes connect to: under the
        #: node's own directory, so a node killed with -9 leaves nothing in /tmp (the next
        #: start removes it); if that path is too long for a socket, a temp directory
        #: named after the node's directory, so the next start finds and removes it too
        self.jobs_dir = os.path.join(self.root, "sockets")
        if len(os.path.join(self.jobs_dir, "jobs")) >= SOCKET_PATH_MAX:
            name = f"dispynode-{hashlib.sha256(self.root.encode()).hexdigest()[:16]}"
            self.jobs_dir = os.path.join(tempfile.gettempdir(), name)
            if len(os.path.join(self.jobs_dir, "jobs")) >= SOCKET_PATH_MAX:
                self.jobs_dir = os.path.join("/tmp", name)  # TMPDIR is long too
        self.jobs_path = os.path.join(self.jobs_dir, "jobs")
        #: service window state (--service_start/stop/end); jobs run only while OPEN
        self.service_state = service.OPEN
        #: uids of jobs killed at service end; their clients were already told
        self.killed: set[str] = set()
        #: client ids presumed gone, whose running jobs are still finishing
        self.zombies: set[str] = set()
        self.lock_fd: int | None = None
        self.store: ResultStore | None = None
        #: bounds connections that have not authenticated yet (wire/admission.py)
        self.admission = Admission("dispynode", logger=log)

    # ---- start and stop ---------------------------------------------------------

    def _lock(self) -> None:
        """Own ``root`` with an flock: the kernel drops it when a node dies (even kill -9),
        so a stale file never stops a restart, while a live node on it is refused.

        The tree is made 0700 and refused when another local user owns it or may write
        to it (they could plant symlinks: a root node would write through them)."""
        try:
            fsafe.private_tree(self.opts.dest_path_prefix,
                               ("dispy", f"node-{self.opts.node_port}"))
            fd = fsafe.open_beneath(self.root, os.path.join(self.root, "node.pid"),
                                    os.O_RDWR | os.O_CREAT, 0o600)
        except (ValueError, OSError) as exc:
            raise SystemExit(f"dispynode: cannot use {self.root}: {_why(exc)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pid = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise SystemExit(
                f"dispynode: another dispynode (PID {pid}) serves port "
                f"{self.opts.node_port} with {self.root}; stop it first"
            ) from None
        previous = os.read(fd, 32).decode(errors="replace").strip()
        if previous and not self.opts.clean:
            log.info("previous dispynode (PID %s) is gone; taking over %s", previous, self.root)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self.lock_fd = fd

    def _clean(self) -> None:
        """--clean: remove files and saved results of earlier runs (all but the lock)."""
        fsafe.clear_tree(self.root, keep=("node.pid",))
        log.info("--clean: removed files of earlier runs in %s", self.root)

    async def start(self) -> None:
        heap.keep_freed()
        self._lock()
        if self.opts.clean:
            self._clean()
        self._clear_jobs_dir()  # a killed node's socket goes
        os.makedirs(self.jobs_dir, mode=0o700, exist_ok=True)
        self._restore_results()
        ssl_ctx = tls.server_context(self.opts.certfile, self.opts.keyfile)
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
        self.servers.append(await connection.serve_unix(self._serve_job_link, self.jobs_path))
        os.chmod(self.jobs_path, 0o600)
        try:
            await self.announcer.start()
        except OSError as exc:
            raise SystemExit(
                f"dispynode: cannot use UDP port {self.opts.node_port}: {exc.strerror}"
            ) from None
        addrs = ", ".join(i.address for i in self.ifs)
        log.info(
            "dispynode %s: serving %d CPUs as %r on %s port %d", __version__, self.cpus,
            self.name, addrs, self.opts.node_port,
        )
        if not self.opts.secret:
            log.warning(
                "dispynode runs without a secret: anyone who can reach port %d can run code"
                " here; use -s/--secret", self.opts.node_port,
            )
        if self.opts.config_file:
            log.info("options from %s (command-line options win)", self.opts.config_file)
        if self.opts.service_window is not None:
            log.info("service window: %s", self.opts.service_window.describe())
            self._service_tick()
        self._spawn(self._housekeeping())
        if self.opts.metrics_port:
            await self._serve_metrics()
        self._refill_spare()
        if self.opts.serve == 0:
            log.info("--serve 0: no clients to serve; quitting")
            self.request_stop(terminate=False)
            return
        self.announce()

    def _clear_jobs_dir(self) -> None:
        """Remove what a killed predecessor left of the socket directory. In the temp
        directory (shared with everyone) only a real directory of ours is removed; one
        that is not ours stops the start with a clear message."""
        try:
            st = os.lstat(self.jobs_dir)
        except FileNotFoundError:
            return
        if os.path.dirname(self.jobs_dir) != self.root and (
                not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid()):
            raise SystemExit(f"dispynode: {self.jobs_dir} exists and is not a directory of"
                             " this user; remove it, or use a shorter --dest_path_prefix")
        shutil.rmtree(self.jobs_dir, ignore_errors=True)

    def _restore_results(self) -> None:
        """Results kept by an earlier run wait for their clients (recover_jobs)."""
        try:
            self.store = ResultStore(os.path.join(self.root, "results.log"))
        except (ValueError, OSError) as exc:
            raise SystemExit(f"dispynode: cannot keep results in {self.root}:"
                             f" {_why(exc)}") from None
        kept = self.store.load()
        for sid, (name, results) in kept.items():
            session = Session(sid, "?", name, "?")
            session.orphan = True
            for header, bufs in results:
                session.undelivered[header["uid"]] = (header, bufs)
                session.saved.add(header["uid"])
            self.sessions[sid] = session
        if kept:
            log.info("kept %d undelivered result(s) of %d client(s) from an earlier run",
                     sum(len(r) for _, r in kept.values()), len(kept))

    def _save_results(self, session: Session, older_than: float | None = None) -> None:
        """Write unacknowledged results to disk (all, or those older than the given time)."""
        uids = [uid for uid, t in session.unsaved.items()
                if older_than is None or t <= older_than]
        items = []
        for uid in uids:
            del session.unsaved[uid]
            entry = session.undelivered.get(uid)
            if entry is not None:
                items.append((session.sid, session.name, entry[0], entry[1]))
                session.saved.add(uid)
        if items and self.store is not None:
            try:
                self.store.save(items)
            except Exception as exc:  # e.g. a full disk: the results stay in memory
                log.warning("could not keep %d result(s) on disk: %s", len(items), exc)

    def _report_soon(self, session: Session, uid: str) -> None:
        """A job's result: on disk first, then to its client, so a node killed at any
        moment loses none. (Deferring the write to group results of one loop iteration
        cost a quarter of tiny-job throughput: the result then left an iteration later.)"""
        self._save_results(session)
        entry = session.undelivered.get(uid)
        if entry is not None and not session.send(*entry):
            log.info("client %s is away: result of job %s kept on disk", session.describe(), uid)

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def request_stop(self, terminate: bool) -> None:
        """SIGINT: finish running jobs, then exit. SIGTERM: end jobs now, then exit."""
        if terminate:
            log.info("dispynode: terminating; running jobs are reported as Terminated")
            self._spawn(self._shutdown(TERMINATED, "dispynode was terminated"))
        elif not self.stopping:
            self.stopping = True
            self.accepting = False
            log.info("dispynode: will quit after %d running job(s) finish", self.busy)
            self._maybe_finish()

    def _maybe_finish(self) -> None:
        if self.stopping and self.busy == 0:
            self._spawn(self._shutdown(CANCELLED, "dispynode quit"))

    async def _shutdown(self, status: int, reason: str) -> None:
        self.accepting = False
        for session in list(self.sessions.values()):
            for comp in list(session.computations.values()):
                await self._close_computation(comp, status, reason, notify=True)
            self._save_results(session)
            if session.conn is not None:
                try:
                    await asyncio.wait_for(session.conn.drain(), self.opts.msg_timeout)
                except (asyncio.TimeoutError, ConnectionError):
                    pass
        self.stop_event.set()

    async def _serve_metrics(self) -> None:
        from .metrics import node_metrics  # prometheus_client only when asked for

        metrics = node_metrics(self)
        await metrics.serve_or_exit("dispynode", self.opts.metrics_host, self.opts.metrics_port)
        self.metrics = metrics

    def _refill_spare(self) -> None:
        if self.spare is None and self.accepting:
            self.spare = asyncio.get_running_loop().create_task(launch_host())

    async def _take_spare(self) -> Launched | None:
        """The spare host if it started (and still runs), else None: start one now."""
        task, self.spare = self.spare, None
        if task is None:
            return None
        try:
            launched = await task
        except OSError as exc:
            log.warning("computation host could not be started ahead: %s", exc)
            return None
        if launched[0].returncode is not None:
            launched[1].close()
            return None
        return launched

    async def stop(self) -> None:
        """Close the listening sockets and connections after ``stop_event``."""
        self.accepting = False
        if self.metrics is not None:
            await self.metrics.stop()
        spare = await self._take_spare()
        if spare is not None:
            await discard_host(spare)
        for server in self.servers:
            server.close()
        for session in self.sessions.values():
            if session.conn is not None:
                session.conn.close()
            self._save_results(session)
        if self.store is not None:
            self.store.close()
        self.announcer.close()
        try:
            os.unlink(os.path.join(self.root, "node.pid"))
        except OSError:
            pass
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None
        shutil.rmtree(self.jobs_dir, ignore_errors=True)

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
            busy_with = f"none: {self._service_text()}"  # clients retry when it opens
        return {
            "name": self.name, "version": __version__, "port": self.opts.node_port,
            "node_id": self.node_id,
            "ip_addr": ip or (self.ifs[0].address if self.ifs else None),
            "cpus": self._usable_cpus(),
            "busy": self.busy, "busy_with": busy_with, "platform": platform.platform(),
            "avail_info": avail_info(self.opts.dest_path_prefix),
            "accepting": self.accepting and self._usable_cpus() > 0,
        }

    def _usable_cpus(self) -> int:
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
        sids: dict[str, str] = {}

        def welcome(hello: dict) -> dict:
            sids["sid"] = session_id(hello.get("session"))
            return self.info(None, sid=sids["sid"])

        if not await self.admission.admit(peer, conn):
            return
        try:
            hello = await handshake.accept(
                conn, self._keys, welcome, self.opts.msg_timeout, f"node {self.name}", log,
                identity={"node_id": self.node_id, "name": self.name})
        finally:
            self.admission.release(peer)
        if hello is None:
            return
        if hello.get("role") == admin.ROLE:  # dispyadmin: node/admin.py serves it
            return await admin.serve(self, conn, peer)
        sid = sids["sid"]
        log.debug("handshake with %s (%s) done", peer, hello.get("client_name"))
        if self.owner is not None and self.owner.sid != sid:
            await conn.close_soon()  # the welcome told it who holds the node
            return
        session = self.sessions.get(sid)
        if session is None:
            session = Session(sid, str(hello.get("client_id", "?"))[:64],
                              str(hello.get("client_name", "?"))[:64], peer)
            self.sessions[sid] = session
        elif session.conn is not None:
            session.conn.close()
        session.conn, session.addr = conn, peer
        session.last_seen = time.monotonic()
        self._keepalive(conn)
        for header, bufs in list(session.undelivered.values()):
            session.send(header, bufs)
        await self._read_client(session, conn)

    async def _read_client(self, session: Session, conn: Connection) -> None:
        try:
            while True:
                header, bufs = await conn.recv()
                session.last_seen = time.monotonic()
                old = session.computations.get(messages.id_field(header, "cid"))
                if header.get("op") == "compute" and old is not None:
                    # the client presumed us dead and sets up again: end the old one first
                    await self._close_computation(old, TERMINATED, "set up again by client",
                                                  notify=False, release=False)
                try:
                    self._on_client(session, header, bufs)
                except Exception:
                    log.exception("failed to handle %r from %s", header.get("op"), conn.peer[0])
        except (ConnectionClosed, OSError):
            log.debug("client %s disconnected", session.describe())
        except FrameError as exc:
            log.warning("dropped connection from %s: %s", conn.peer[0], exc)
        finally:
            if session.conn is conn:
                session.conn = None
                session.last_seen = time.monotonic()  # zombie_interval counts from here
            conn.close()
            self._check_free(session)

    def _keepalive(self, conn: Connection) -> None:
        """TCP keepalive well within --zombie_interval, so a client whose machine vanished
        (no FIN ever comes) is noticed as disconnected, while an idle live one is not. The
        user timeout does the same when results are waiting unacknowledged (keepalive
        probes stop while data is in flight, and retransmissions go on for many minutes)."""
        sock = conn.get_extra_info("socket")
        if sock is None:
            return
        idle = max(1, min(600, int(self.opts.zombie_interval * 60 / 4)))
        interval, count = max(1, idle // 4), 4
        user_timeout = max(self.opts.msg_timeout, idle + interval * count)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT,
                            int(user_timeout * 1000))
        except (OSError, AttributeError):
            pass

    def _on_client(self, session: Session, header: dict, bufs: list[bytes]) -> None:
        try:
            messages.parse_request(header, bufs)
        except messages.MessageError as exc:
            self._refuse_request(session, header, str(exc))
            return
        op = header.get("op")
        if op == "job":
            self._job(session, header, bufs)
        elif op == "ack":
            dropped = []
            for uid in header.get("uids", ()):
                session.undelivered.pop(uid, None)
                session.unsaved.pop(uid, None)
                if uid in session.saved:
                    session.saved.discard(uid)
                    dropped.append(uid)
            if dropped and self.store is not None:
                self.store.drop(session.sid, dropped)
            self._check_free(session)
        elif op == "compute":
            self._compute(session, header, bufs)
        elif op == "file":
            self._file(session, header, bufs)
        elif op == "files_check":
            self._files_check(session, header)
        elif op == "jobs_query":
            self._jobs_query(session, header)
        elif op == "setup":
            comp = session.computations.get(messages.id_field(header, "cid"))
            if comp is not None:
                self._spawn(self._setup(comp, bufs))
        elif op == "cancel":
            comp = session.computations.get(messages.id_field(header, "cid"))
            if comp is not None:
                self._cancel(comp, str(header.get("uid")))
        elif op == "close":
            comp = session.computations.get(messages.id_field(header, "cid"))
            if comp is not None:
                status = CANCELLED if header.get("terminate") else TERMINATED
                self._spawn(self._close_computation(comp, status, "computation closed", True,
                                                    release=not header.get("keep")))
            else:
                session.send({"op": "closed", "cid": header.get("cid")})
        else:
            log.warning("ignoring unknown request %r from %s", op, session.describe())

    def _refuse_request(self, session: Session, header: dict, reason: str) -> None:
        """A request that does not fit its record: refused, nothing else changes."""
        log.warning("refused a request from %s: %s", session.describe(), reason)
        reply = header.get("reply")
        if isinstance(reply, str) and messages.ID.fullmatch(reply):
            session.send({"op": "reply", "reply": reply, "ok": False, "reason": reason})

    # ---- computations -----------------------------------------------------------

    def _compute(self, session: Session, header: dict, bufs: list[bytes]) -> None:
        cid = str(header.get("cid"))
        if self.owner is not None and self.owner is not session:
            session.send({"op": "setup_done", "cid": cid, "ok": False,
                          "reason": f"node is busy with client {self.owner.describe()}"})
            return
        if not self.accepting:
            session.send({"op": "setup_done", "cid": cid, "ok": False,
                          "reason": "node is not accepting computations (shutting down)"})
            return
        if self.owner is None and self.service_state != service.OPEN:
            session.send({"op": "setup_done", "cid": cid, "ok": False,
                          "reason": f"node is {self._service_text()}"})
            return
        try:
            directory = self._computation_dir(session, cid, header.get("dest_path"))
        except (ValueError, OSError) as exc:
            log.warning("refused computation %r from %s: %s", str(header.get("name"))[:80],
                        session.describe(), _why(exc))
            session.send({"op": "setup_done", "cid": cid, "ok": False, "reason": _why(exc)})
            return
        self.owner = session
        session.orphan = False
        comp = Computation(cid, header, bufs[0] if bufs else b"", directory, session,
                           tree=self.root)
        session.computations[cid] = comp
        pulse = header.get("pulse_interval")
        if isinstance(pulse, (int, float)) and pulse > 0:
            session.pulse_interval = min(pulse, session.pulse_interval or pulse)
        log.info("computation %r from %s", comp.name, session.describe())

    def _computation_dir(self, session: Session, cid: str, dest: Any) -> str:
        """The computation's directory (made here): ``clients/<session id>/<cid or
        dest_path>``, ids checked so that no peer names a path outside the tree."""
        fsafe.check_id(session.sid, "session id")
        fsafe.check_id(cid, "computation id")
        base = fsafe.safe_join(self.root, "clients", session.sid)
        directory = fsafe.safe_join(base, dest) if dest else fsafe.safe_join(base, cid)
        fsafe.makedirs_beneath(self.root, directory)
        return directory

    def _file(self, session: Session, header: dict, bufs: list[bytes]) -> None:
        comp = session.computations.get(messages.id_field(header, "cid"))
        reply = header.get("reply")
        if comp is None or comp.failed:
            if reply is not None:
                session.send({"op": "reply", "reply": reply, "ok": False,
                              "reason": "computation is not set up on this node"})
            return
        job_uid = header.get("job")
        try:
            path = fsafe.safe_join(comp.dir, header["path"])
            if fsafe.write_chunk(self.root, path, header, bufs, self.opts.max_file_size):
                if job_uid is None:
                    comp.files.append(path)
                else:
                    comp.job_files.setdefault(str(job_uid), []).append(path)
                if reply is not None:
                    session.send({"op": "reply", "reply": reply, "ok": True})
        except (ValueError, KeyError, TypeError, OSError) as exc:
            if str(header.get("path")) not in comp.refused_files:  # once, not per chunk
                comp.refused_files.add(str(header.get("path")))
                log.warning("refused file %r from %s: %s", header.get("path"),
                            session.describe(), _why(exc))
            if reply is not None:  # cluster.send_file: the client reports it
                session.send({"op": "reply", "reply": reply, "ok": False, "reason": str(exc)})
            elif job_uid is None:
                comp.failed = f"file transfer failed: {exc}"
            else:
                log.warning("file for job %s not stored: %s", job_uid, exc)

    def _jobs_query(self, session: Session, header: dict) -> None:
        """recover_jobs asks which of its jobs this node still knows."""
        known = set(session.undelivered)
        for comp in session.computations.values():
            known.update(comp.running)
        known.update(str(item[1].get("uid")) for item in self.waiting
                     if item[0].session is session)
        unknown = [uid for uid in header.get("uids", ()) if uid not in known]
        session.send({"op": "reply", "reply": header.get("reply"), "unknown": unknown})

    def _files_check(self, session: Session, header: dict) -> None:
        """Answer which of the listed files are missing or differ (shared dest_path)."""
        comp = session.computations.get(messages.id_field(header, "cid"))
        need = []
        for entry in header.get("files", ()):
            try:
                path = fsafe.safe_join(comp.dir, entry["path"]) if comp else None
                st = os.stat(path, follow_symlinks=False) if path else None
            except (ValueError, KeyError, TypeError, OSError):
                st = None
            if (comp is not None and path is not None and st is not None
                    and stat.S_ISREG(st.st_mode) and st.st_size == entry.get("size")
                    and st.st_mtime_ns == entry.get("mtime_ns")):
                comp.files.append(path)
            else:
                need.append(entry.get("path"))
        session.send({"op": "reply", "reply": header.get("reply"), "paths": need})

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
            comp.host = HostProcess(lambda h, b: self._on_host(comp, h, b))
            init = {
                "op": "init", "cid": comp.cid, "dir": comp.dir,
                "jobs_path": self.jobs_path, "token": comp.token,
                "node_name": self.name, "node_ip_addr": self._address_for(session),
                "client_shutdown": self.opts.client_shutdown,
            }
            self.job_tokens[comp.token] = comp
            launched = await self._take_spare()
            comp.failed = await comp.host.start(init, [comp.bundle, *setup_args], launched)
            if comp.failed is None:
                await self._prefork(comp)  # may fail the computation too
            self._refill_spare()
        comp.bundle = b""
        log.debug("setup of %r: %s", comp.name, "failed" if comp.failed else "done")
        if comp.failed is not None:
            log.warning("setup of %r failed: %s", comp.name, comp.failed.strip().splitlines()[-1])
            session.send({"op": "setup_done", "cid": comp.cid, "ok": False, "reason": comp.failed})
            await self._close_computation(comp, CANCELLED, "setup failed", notify=False)
            return
        comp.ready = True
        session.send({"op": "setup_done", "cid": comp.cid, "ok": True, "cpus": self.cpus})

    async def _close_computation(
        self, comp: Computation, status: int, reason: str, notify: bool, release: bool = True
    ) -> None:
        """End a computation; ``release=False`` keeps the node for the client (resetup)."""
        session = comp.session
        if session.computations.get(comp.cid) is not comp:
            return
        del session.computations[comp.cid]
        self.job_tokens.pop(comp.token, None)
        comp.closing = (status, reason)
        if comp.host is not None:
            await comp.host.close(status, reason, self.opts.msg_timeout)
        self._finish_links(comp, reason)
        comp.remove_files(self.opts.force_cleanup)
        self._remove_client_dir(session)  # before the client hears "closed"
        if notify:
            session.send({"op": "closed", "cid": comp.cid})
        log.info("computation %r from %s closed", comp.name, session.describe())
        if release:
            self._check_free(session)

    def _remove_client_dir(self, session: Session) -> None:
        """The client's own directory, once empty (it keeps files with cleanup=False)."""
        if not session.computations and fsafe.valid_id(session.sid):
            fsafe.remove_beneath(self.root, os.path.join(self.root, "clients", session.sid),
                                 only_empty=True)

    def _check_free(self, session: Session) -> None:
        """Release the node when its owner has nothing left here."""
        self._remove_client_dir(session)  # even while results await acks
        if session.computations or (session.undelivered and not session.orphan):
            return
        if session.conn is None and not session.undelivered:
            self.sessions.pop(session.sid, None)
        if self.owner is session:
            self.owner = None
            self.served += 1
            log.info("client %s is done; node is free", session.describe())
            if 0 <= self.opts.serve <= self.served:
                log.info("served %d client(s) as asked by --serve; quitting", self.served)
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
            for session in list(self.sessions.values()):
                if session.pulse_interval and session.conn is not None:
                    if now - last_pulse.get(session.sid, 0) >= session.pulse_interval:
                        last_pulse[session.sid] = now
                        session.send({"op": "pulse", "busy": self.busy,
                                      "avail_info": avail_info(self.opts.dest_path_prefix)})
                await self._check_zombie(session, now)
                self._save_results(session, older_than=now - 1.0)
            self._service_tick()
            if (self.opts.ping_interval and self.owner is None
                    and now - last_announce >= self.opts.ping_interval):
                last_announce = now
                self.announce()

    async def _check_zombie(self, session: Session, now: float) -> None:
        """A client disconnected for --zombie_interval is presumed gone (a zombie): its
        running jobs finish, then its computations close and the node is free again."""
        silent = now - session.last_seen
        if (session.conn is not None or session.orphan
                or silent <= self.opts.zombie_interval * 60):
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
        self._save_results(session)  # recover_jobs can still fetch them
        session.orphan = True
        for comp in list(session.computations.values()):
            await self._close_computation(comp, CANCELLED, "client presumed gone", False)
        self._check_free(session)

    # ---- service window -----------------------------------------------------------

    def _service_text(self) -> str:
        window = self.opts.service_window
        if window is None:
            return "in service"
        if self.service_state == service.OPEN:
            wait, _ = window.next_change(service.seconds_of_day(service.clock()))
            until = service.format_hhmm(service.seconds_of_day(service.clock() + wait))
            return f"in service hours until {until}"
        what = "not accepting jobs" if self.service_state == service.STOPPED else "closed"
        return f"outside service hours ({what}; opens at {service.format_hhmm(window.start)})"

    def _service_tick(self) -> None:
        """Follow the service window: open, stop accepting jobs, or end (kill jobs)."""
        window = self.opts.service_window
        if window is None:
            return
        state = window.state(service.seconds_of_day(service.clock()))
        if state == self.service_state:
            return
        self.service_state = state
        log.info("service window: %s", self._service_text())
        if self.owner is not None:
            self.owner.send({"op": "cpus", "cpus": self._usable_cpus()})
        if state == service.OPEN:
            self._start_jobs()
            if self.owner is None:
                self.announce()
            return
        reason = f"node is {self._service_text()}"
        while self.waiting:
            comp, header, _ = self.waiting.popleft()
            comp.session.send({"op": "job_refused", "cid": comp.cid, "uid": header["uid"],
                               "reason": reason})
        if state == service.CLOSED:
            self._kill_running(reason)

    # ---- status (stdin menu) ------------------------------------------------------

    def status_text(self) -> str:
        lines = [f"Serving {self.cpus} CPUs as {self.name!r}; {self.busy} busy;"
                 f" {self.jobs_done} jobs done; {self.served} clients served"]
        if self.opts.service_window is not None:
            lines.append(f"  service: {self.opts.service_window.describe()};"
                         f" now {self._service_text()}")
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
            self.owner.send({"op": "cpus", "cpus": self._usable_cpus()})
        self._start_jobs()
        if self.cpus and self.owner is None:
            self.announce()


def _why(exc: BaseException) -> str:
    """An error as one line for a log or a peer (an OSError without its errno prefix)."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return str(exc)


def install_signals(daemon: NodeDaemon) -> None:
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, daemon.request_stop, False)
    loop.add_signal_handler(signal.SIGTERM, daemon.request_stop, True)


