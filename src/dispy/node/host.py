"""Computation host: the process that holds one computation on a node.

Started by the daemon with a socket to it (``python -m dispy.node.host FD``). It
unpickles the shipped computation (the daemon never does), runs ``setup`` once, forks
warm job processes that inherit setup's globals, escalates cancellation (SIGINT,
SIGTERM, SIGKILL), reaps job processes and says how they ended, and runs ``cleanup``
when the computation closes. Jobs and results do not pass through it: each job
process it forks is connected to the daemon's job socket before the fork.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.synchronize  # noqa: F401 (imported ahead: Lock() at a fork)
import os
import secrets
import selectors
import signal
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

from ..wire import hostmsg, records
from ..wire.messages import MAX_PROBLEM, MessageError
from ..wire.sync import SyncFrameReader, send_frame_sync
from . import initfile, jobenv, jobproc

log = logging.getLogger("dispy.node.host")

#: Seconds after KeyboardInterrupt before SIGTERM, and after that before SIGKILL.
CANCEL_TERM_AFTER = 5.0
CANCEL_KILL_AFTER = 3.0
#: Seconds a job process that closed its connection has to exit before SIGKILL.
REAP_WAIT = 2.0


@dataclass
class JobProcess:
    pid: int
    slot: Any
    escalate: list[tuple[float, int]] = field(default_factory=list)
    #: the slot entry the next SkipJob writes (1 .. SLOT_ENTRIES - 1, round robin)
    next_skip: int = 1
    #: the job the escalation is for: it stops once the process runs another
    escalating: str = ""
    #: shared with the process: it takes a job, or the host names one to skip
    lock: Any = None


class ComputationHost:
    def __init__(self, daemon: socket.socket) -> None:
        self.daemon = daemon
        self.from_daemon = SyncFrameReader(daemon)
        self.procs: dict[int, JobProcess] = {}
        self.computation: Any = None
        self.program: str | None = None
        self.cleanup: Any = None
        #: close() of dispynode's --init file, run when the computation ends
        self.init_close: Any = None
        self.setup_args: tuple = ()
        self.allow_shutdown = False
        self.closing = False
        self.pid = os.getpid()
        #: the daemon's socket for job processes, and the token they show there
        self.jobs_path = ""
        self.token = ""

    # ---- set up -----------------------------------------------------------------

    def init(self, init: hostmsg.HostInit, bufs: list[bytes]) -> None:
        os.makedirs(init.dir, exist_ok=True)
        os.chdir(init.dir)
        sys.path.insert(0, init.dir)
        self.jobs_path, self.token = init.jobs_path, init.token
        jobproc._State.result_dir = init.result_dir  # (inherited by the job processes)
        jobproc._State.result_tag = init.result_tag
        self.allow_shutdown = init.client_shutdown
        jobenv.install(
            init.node_name, init.node_ip_addr, init.dir,
            jobproc.provisional_result, jobproc.send_file, self._shutdown_request,
        )
        try:
            if os.environ.get(initfile.ENV):
                self.init_close = initfile.run(os.environ[initfile.ENV])
            bundle = cloudpickle.loads(bufs[0])
            jobproc.register_sources(bundle.get("sources"))
            self.setup_args = tuple(cloudpickle.loads(bufs[1])) if len(bufs) > 1 else ()
            self.computation = bundle.get("computation")
            self.program = bundle.get("program")
            self.cleanup = bundle.get("cleanup")
            namespace = getattr(self.computation, "__globals__", None)
            for name, obj in bundle.get("globals", {}).items():
                if namespace is not None:
                    namespace.setdefault(name, obj)
            setup = bundle.get("setup")
            if setup is not None:
                ret = setup(*self.setup_args)
                if ret != 0:
                    raise RuntimeError(f"setup returned {ret!r}, not 0")
        except BaseException as exc:
            reason = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            send_frame_sync(self.daemon, hostmsg.SetupFailed(reason=reason))
            raise SystemExit(1) from None
        send_frame_sync(self.daemon, hostmsg.Ready(pid=os.getpid()))
        for _ in range(init.fork):  # the daemon tells the client meanwhile
            self._fork()

    def _shutdown_request(self) -> int:
        """dispynode_shutdown(): only in a cluster's cleanup, only with --client_shutdown."""
        if not self.allow_shutdown:
            log.warning("dispynode_shutdown() refused: the node was not started with"
                        " --client_shutdown")
            return -1
        if not self.closing or os.getpid() != self.pid:
            log.warning("dispynode_shutdown() refused: it works only in a cluster's cleanup"
                        " function")
            return -1
        send_frame_sync(self.daemon, hostmsg.ShutdownRequest())
        return 0

    # ---- job processes ----------------------------------------------------------

    def _fork(self) -> None:
        """Fork a job process, connected to the daemon before the fork so that a
        failure is seen here. The daemon learns its pid from this host's own socket
        ("forked"), never from the job socket: the hello there names only a link id,
        drawn after the fork so the job process never knows it."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.jobs_path)
        except OSError as exc:
            sock.close()
            send_frame_sync(self.daemon, hostmsg.ForkFailed(
                reason=f"job process cannot reach the node: {exc}"))
            return
        slot, lock = jobproc.new_slot(), multiprocessing.Lock()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            self.daemon.close()
            jobproc.serve(sock, slot, lock, self.computation, self.program)
        self.procs[pid] = JobProcess(pid, slot, lock=lock)
        link = secrets.token_hex(16)
        send_frame_sync(self.daemon, hostmsg.Forked(pid=pid, link=link))
        send_frame_sync(sock, hostmsg.Hello(token=self.token, link=link))
        sock.close()

    def _reap(self, pid: int) -> str:
        """Wait for a job process whose socket closed; say how it ended. Only a process
        forked here is waited for or killed: never a pid merely named (0 or -1 would
        be a whole process group, or every process)."""
        if self.procs.pop(pid, None) is None:
            log.warning("asked to reap pid %r, which is not a job process of this host", pid)
            return "not a job process of this computation"
        deadline = time.monotonic() + REAP_WAIT
        try:
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                if time.monotonic() > deadline:  # closed its socket but lives on
                    os.kill(pid, signal.SIGKILL)  # forked here: pid > 0
                    _, status = os.waitpid(pid, 0)
                    return "job process closed its connection; killed"
                time.sleep(0.005)
        except ChildProcessError:
            return "job process vanished"
        if os.WIFSIGNALED(status):
            return f"job process was killed by signal {signal.Signals(os.WTERMSIG(status)).name}"
        return f"job process exited with code {os.WEXITSTATUS(status)}"

    # ---- requests from the daemon ------------------------------------------------

    def _daemon_event(self) -> None:
        """Handle the daemon's requests (all those already buffered)."""
        self._daemon_frame()
        while not self.closing and self.from_daemon.buffered():
            self._daemon_frame()

    def _daemon_frame(self) -> None:
        try:
            header, bufs = self.from_daemon.read_frame()
        except (EOFError, OSError):
            self._close()
            return
        try:
            msg = hostmsg.parse_host_request(header)
        except MessageError as exc:
            log.warning("ignored a frame from the daemon: %s", exc)
            return
        proc = None
        if isinstance(msg, (hostmsg.CancelJob, hostmsg.SkipJob, hostmsg.KillJob,
                            hostmsg.Settle)):
            proc = self.procs.get(msg.pid)
        if isinstance(msg, hostmsg.Fork):
            for _ in range(msg.count):
                self._fork()
        elif isinstance(msg, hostmsg.CancelJob) and proc is not None:
            now = time.monotonic()
            proc.escalate = [
                (now + CANCEL_TERM_AFTER, signal.SIGTERM),
                (now + CANCEL_TERM_AFTER + CANCEL_KILL_AFTER, signal.SIGKILL),
            ]
            proc.escalating = msg.uid
            jobproc.write_slot(proc.slot, msg.uid)
            self._signal(proc, signal.SIGINT)
        elif isinstance(msg, hostmsg.SkipJob) and proc is not None:
            with proc.lock:
                reached = jobproc.taken(proc.slot) >= msg.seq
                if not reached:  # it will find this entry when it takes the job
                    jobproc.write_slot(proc.slot, msg.uid, proc.next_skip)
                    proc.next_skip = proc.next_skip % (jobproc.SLOT_ENTRIES - 1) + 1
            send_frame_sync(self.daemon, hostmsg.Skipped(pid=msg.pid, uid=msg.uid,
                                                         reached=reached))
        elif isinstance(msg, hostmsg.KillJob) and proc is not None:  # service ended: no grace
            self._signal(proc, signal.SIGKILL)
        elif isinstance(msg, hostmsg.Settle):  # its cancelled job ended: it may take another
            if proc is not None:
                proc.escalate = []
            send_frame_sync(self.daemon, hostmsg.Settled(pid=msg.pid))
        elif isinstance(msg, hostmsg.Reap):
            send_frame_sync(self.daemon, hostmsg.Reaped(pid=msg.pid, reason=self._reap(msg.pid)))
        elif isinstance(msg, hostmsg.CloseHost):
            self._close()

    def _signal(self, proc: JobProcess, sig: int) -> None:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass

    def _escalate(self) -> float | None:
        now = time.monotonic()
        nearest = None
        for proc in list(self.procs.values()):
            if proc.escalate and jobproc.running_in_slot(proc.slot) != proc.escalating:
                proc.escalate = []  # the cancelled job ended: the next one is not hit
            while proc.escalate and proc.escalate[0][0] <= now:
                self._signal(proc, proc.escalate.pop(0)[1])
            if proc.escalate:
                due = proc.escalate[0][0] - now
                nearest = due if nearest is None else min(nearest, due)
        return nearest

    def _close(self) -> None:
        """Kill the job processes (the daemon ends their jobs), then run cleanup."""
        self.closing = True
        for proc in list(self.procs.values()):
            self._signal(proc, signal.SIGKILL)
        for pid in list(self.procs):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self.procs.clear()
        problem = None
        if callable(self.cleanup):
            try:
                self.cleanup(*self.setup_args)
            except BaseException:  # the client hears it (HostClosed -> Closed)
                problem = traceback.format_exc()[-MAX_PROBLEM:]
        if self.init_close is not None:
            try:
                self.init_close()
            except BaseException:
                traceback.print_exc()
        try:
            send_frame_sync(self.daemon, hostmsg.HostClosed(problem=problem))
        except OSError:
            pass

    # ---- main loop --------------------------------------------------------------

    def run(self) -> None:
        try:
            header, bufs = self.from_daemon.read_frame()
        except EOFError:  # a spare the daemon did not need (or the daemon is gone)
            return
        try:
            init = hostmsg.parse_host_request(header)
            if not isinstance(init, hostmsg.HostInit):
                raise MessageError(f"{init.op!r} before 'init'")
        except MessageError as exc:
            send_frame_sync(self.daemon, hostmsg.SetupFailed(reason=f"bad init frame: {exc}"))
            raise SystemExit(1) from None
        self.init(init, bufs)
        sel = selectors.DefaultSelector()
        sel.register(self.daemon, selectors.EVENT_READ)
        while not self.closing:
            if sel.select(timeout=self._escalate()):
                self._daemon_event()


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s - %(message)s")
    sock = socket.socket(fileno=int(sys.argv[1]))
    sock.setblocking(True)
    jobenv.preload()
    records.warm()  # inherited by the job processes this host forks
    ComputationHost(sock).run()
    os._exit(0)


if __name__ == "__main__":
    main()
