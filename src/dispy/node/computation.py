"""The daemon's side of one computation: its directory, its host process, its jobs.

The computation host (``dispy.node.host``) holds the unpickled computation and forks
the job processes; each job process connects to the daemon itself (``JobLink``), so
jobs and results go straight between the daemon and the process that runs them, and
the host is asked only to fork, cancel, reap and close. The daemon only moves opaque
buffers; it never unpickles them, so no user code runs in the daemon's process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import sys
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from .. import fsafe
from ..eventloop import within
from ..wire import hostmsg, messages
from ..wire.codec import FrameError
from ..wire.connection import Connection, ConnectionClosed

log = logging.getLogger("dispy.node")


#: A started ``dispy.node.host`` that waits for its computation: (process, socket).
Launched = tuple[asyncio.subprocess.Process, socket.socket]


async def launch_host() -> Launched:
    """Start a computation host; it imports dispy and waits for its ``init`` frame. The
    daemon keeps one started ahead (a spare): an interpreter start is most of the time
    from a computation's arrival to its setup being done."""
    parent, child = socket.socketpair()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dispy.node.host", str(child.fileno()),
            pass_fds=(child.fileno(),), start_new_session=True,
            stdin=asyncio.subprocess.DEVNULL,
        )
    except BaseException:
        parent.close()
        raise
    finally:
        child.close()
    return proc, parent


async def discard_host(launched: Launched) -> None:
    """A spare that will not be used: closing its socket ends it (it exits at EOF)."""
    proc, parent = launched
    parent.close()
    try:
        await within(proc.wait(), 5)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()


#: seconds from the job end that triggers a spare's start to the start (``job_ended``)
AFTER_JOB = 0.05


class SpareHost:
    """The computation host the daemon keeps started ahead, for its next computation.
    ``allowed`` says whether one may start now (not once the daemon stops accepting)."""

    def __init__(self, allowed: Callable[[], bool] = lambda: True,
                 launch: Callable[[], Coroutine[Any, Any, Launched]] = launch_host) -> None:
        self.allowed = allowed
        self.launch = launch
        self.task: asyncio.Task[Launched] | None = None
        #: the refill planned by ``refill_soon``
        self._due: asyncio.TimerHandle | None = None

    def refill(self) -> None:
        self._cancel_due()
        if self.task is None and self.allowed():
            self.task = asyncio.get_running_loop().create_task(self.launch())

    def refill_soon(self, bound: float) -> None:
        """Refill soon after a job ends (``job_ended``), at the latest after ``bound`` seconds:
        an interpreter starting competes for the CPUs with the first job of the
        computation that took the spare (on 2 cores it held its result back by a third)."""
        if self.task is None and self._due is None and self.allowed():
            self._due = asyncio.get_running_loop().call_later(bound, self.refill)

    def job_ended(self) -> None:
        """A job ended: the planned refill comes ``AFTER_JOB`` seconds later, not at once,
        so that the daemon's fork and the new interpreter do not hold back the delivery
        of that (first) result to its client (on 2 cores, by 0.7-1.5 ms)."""
        due = self._due
        if due is None:
            return
        loop = asyncio.get_running_loop()
        if due.when() > loop.time() + AFTER_JOB:
            due.cancel()
            self._due = loop.call_later(AFTER_JOB, self.refill)

    def _cancel_due(self) -> None:
        if self._due is not None:
            self._due.cancel()
            self._due = None

    async def take(self) -> Launched | None:
        """The spare if it started (and still runs), else None: start one now."""
        self._cancel_due()
        task, self.task = self.task, None
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


class HostProcess:
    """A running ``dispy.node.host`` process and the socket to it. Its frames reach
    ``on_message`` decoded (wire/hostmsg.py); one that does not decode is dropped."""

    def __init__(self, on_message: Callable[[messages.Record, list[bytes]], None]) -> None:
        self.on_message = on_message
        self.proc: asyncio.subprocess.Process | None = None
        self.conn: Connection | None = None
        self.reader_task: asyncio.Task | None = None
        self.closed = asyncio.get_running_loop().create_future()
        #: how the computation's cleanup failed (or did not finish), told to the client
        self.problem: str | None = None

    async def start(self, init: hostmsg.HostInit, bufs: list[bytes],
                    launched: Launched | None = None) -> str | None:
        """Start the host (or take ``launched``, a spare) and run setup; returns None
        when ready, else the reason."""
        self.proc, parent = launched or await launch_host()
        self.conn = conn = await Connection.open_unix(parent)
        conn.send(init, bufs)
        try:
            header, _ = await conn.recv()
        except (ConnectionClosed, FrameError, OSError):
            code = await self.proc.wait()
            return f"computation host exited with code {code} during setup"
        try:
            msg = hostmsg.parse_host_message(header)
        except messages.MessageError as exc:
            log.warning("computation host %s: malformed frame: %s", self.proc.pid, exc)
            msg = hostmsg.SetupFailed()
        if not isinstance(msg, hostmsg.Ready):
            await self.proc.wait()
            return msg.reason if isinstance(msg, hostmsg.SetupFailed) else "setup failed"
        self.reader_task = asyncio.create_task(self._read(conn))
        return None

    async def _read(self, conn: Connection) -> None:
        closed = False
        try:
            while True:
                header, bufs = await conn.recv()
                try:
                    msg = hostmsg.parse_host_message(header)
                except messages.MessageError as exc:
                    log.warning("dropped a frame from computation host %s: %s",
                                self.proc.pid if self.proc else "?", exc)
                    continue
                if isinstance(msg, hostmsg.HostClosed):
                    closed, self.problem = True, msg.problem
                    break
                self.on_message(msg, bufs)
        except (ConnectionClosed, FrameError, OSError):
            pass
        finally:
            if self.proc is not None:
                await self.proc.wait()
            if not self.closed.done():
                self.closed.set_result(True)
            if not closed:
                code = self.proc.returncode if self.proc is not None else None
                self.on_message(hostmsg.HostLost(
                    reason=f"computation host exited with code {code}"), [])

    def send(self, msg: messages.Record, bufs: list | tuple = ()) -> None:
        if self.conn is not None:
            self.conn.send(msg, bufs)

    def flush(self) -> None:
        if self.conn is not None:
            self.conn.flush()

    async def close(self, status: int, reason: str, timeout: float) -> None:
        """Ask the host to stop (running jobs end with ``status``) and wait for it."""
        if self.proc is None:
            return
        self.send(hostmsg.CloseHost(status=status, reason=reason))
        try:
            await within(asyncio.shield(self.closed), timeout)
        except asyncio.TimeoutError:
            log.warning("computation host %s did not close in time; killing it", self.proc.pid)
            self.problem = f"cleanup did not finish in {timeout:.0f} s; it was killed"
            self.kill()
            await self.proc.wait()
        if self.conn is not None:
            self.conn.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, 9)
            except ProcessLookupError:
                pass


class JobLink:
    """The daemon's connection to one job process of a computation."""

    __slots__ = ("pid", "conn", "uid", "sent", "seq", "skipping", "skipped", "cancelling",
                 "started", "cancelled", "settling", "lost", "lane")

    def __init__(self, pid: int, conn: Connection) -> None:
        self.pid = pid
        self.conn = conn
        #: the job it runs, or None when idle
        self.uid: str | None = None
        #: the jobs sent to it, in order, as (job, frame buffers): the first is the one it
        #: runs; the others (short jobs only, jobs.py) wait in its socket and keep their
        #: buffers so they can run elsewhere should the process die before reaching them
        self.sent: deque[tuple[messages.Job, list | None, int]] = deque()
        #: how many jobs were sent to it (the third item of ``sent``: the job's number)
        self.seq = 0
        #: jobs sent ahead and cancelled, the host not answered yet (SkipJob)
        self.skipping: set[str] = set()
        #: jobs it will skip (reported Cancelled already: their Done is dropped)
        self.skipped: set[str] = set()
        #: jobs it had taken when cancelled: interrupted when they become its job
        self.cancelling: set[str] = set()
        #: when its job started (time.time()), reported if the job ends without a result
        self.started = 0.0
        #: its job was cancelled or killed: when it ends, the host settles the process
        #: (stops its signal escalation) before it takes another job
        self.cancelled = False
        #: Settles sent to the host and not answered yet
        self.settling = 0
        self.lost = False
        #: its process also serves a lane of the program (node/lanes.py)
        self.lane = False

    def send(self, msg: messages.Record, bufs: list | tuple = (), now: bool = False) -> None:
        self.conn.send(msg, bufs, now)

    def close(self) -> None:
        self.lost = True
        self.conn.close()


class Computation:
    """One client computation on this node."""

    def __init__(self, cid: str, request: messages.Compute, bundle: bytes, directory: str,
                 session: Any, tree: str | None = None) -> None:
        self.cid = cid
        self.name = request.name
        self.kind = request.kind
        self.cleanup = request.cleanup
        self.own_dir = request.dest_path is None
        self.bundle = bundle
        self.dir = directory
        #: the node's tree: files of this computation are removed only inside it
        self.tree = tree or directory
        self.session = session
        self.host: HostProcess | None = None
        #: shown to the computation host, which hands it to each job process it forks:
        #: a job process connecting to the daemon proves with it whose it is
        self.token = secrets.token_hex(16)
        #: in the names of its big results' files (results.py), so that files of another
        #: computation whose process had the same pid are never taken for its own
        self.result_tag = secrets.token_hex(8)
        #: job uid -> the job process running it
        self.running: dict[str, JobLink] = {}
        self.links: dict[int, JobLink] = {}
        self.idle: list[JobLink] = []
        #: cancels of jobs it does not have, which may be on a lane not taken yet (uid ->
        #: when: applied when a process takes it, forgotten after a while; jobs.py)
        self.lane_cancels: dict[str, float] = {}
        #: job processes asked of the host and not connected yet; done when the first
        #: ones (one per CPU, at setup) have
        self.forking = 0
        self.forked: asyncio.Future | None = None
        #: link id -> pid of a job process the host forked (told on the host's own
        #: socket), until that process's link connects; and links waiting for it
        self.link_pids: dict[str, int] = {}
        self.link_waiters: dict[str, asyncio.Future] = {}
        #: job processes lost, waiting for the host to tell how they ended
        self.reaping: dict[int, JobLink] = {}
        #: (status, reason) for the jobs still running once the computation closes
        self.closing: tuple[int, str] | None = None
        self.files: list[str] = []
        #: job uid -> files sent with that job (dispy_job_depends), removed after it
        self.job_files: dict[str, list[str]] = {}
        #: job uid -> why a file sent with it (dispy_job_depends) was refused: the job
        #: ends Terminated with it, and never runs without its file
        self.failed_job_files: dict[str, str] = {}
        #: file names already refused (logged once, not once per chunk)
        self.refused_files: set[str] = set()
        self.failed: str | None = None
        self.ready = False
        self.jobs_done = 0
        self.cpu_time = 0.0
        #: how long its jobs run (seconds, moving average; None until one ran): short
        #: ones are sent to job processes ahead of their turn (jobs.py)
        self.run_avg: float | None = None

    def remove_files(self, force: bool) -> None:
        """Delete the computation's directory, with the files its jobs made, unless the
        client asked to keep them. A ``dest_path`` another computation of the program
        still uses (the same folder, or one inside the other) loses only the files sent
        for this one that the others do not use."""
        if not (self.cleanup or force):
            return
        others = [] if self.own_dir else [
            c for c in self.session.computations.values()
            if c is not self and _overlap(c.dir, self.dir)]
        if not others:
            fsafe.remove_beneath(self.tree, self.dir)
            if not self.own_dir:  # dest/<client>/a/b: a and <client> too, once empty
                top, parent = os.path.join(self.tree, "dest"), os.path.dirname(self.dir)
                while parent.startswith(top + os.sep) and fsafe.remove_beneath(
                        self.tree, parent, only_empty=True):
                    parent = os.path.dirname(parent)
            return
        used = {path for c in others for path in c.files}  # (found there by its check)
        for path in self.files:
            if path not in used:
                fsafe.remove_beneath(self.tree, path)


def _overlap(a: str, b: str) -> bool:
    """Whether one directory is, or is inside, the other (dest_path "x" and "x/y")."""
    return a == b or a.startswith(b + os.sep) or b.startswith(a + os.sep)
