"""Computation host: the process that holds one computation on a node.

Started by the daemon with a socket to it (``python -m dispy.node.host FD``). It
unpickles the shipped computation (the daemon never does), runs ``setup`` once, forks
warm job processes that inherit setup's globals, relays their results, escalates
cancellation (SIGINT, SIGTERM, SIGKILL), replaces job processes that die, and runs
``cleanup`` when the computation closes.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

from ..wire.frames import SyncFrameReader, send_frame_sync
from . import jobenv, jobproc

log = logging.getLogger("dispy.node.host")

#: Seconds after KeyboardInterrupt before SIGTERM, and after that before SIGKILL.
CANCEL_TERM_AFTER = 5.0
CANCEL_KILL_AFTER = 3.0


@dataclass
class JobProcess:
    pid: int
    sock: socket.socket
    slot: Any
    reader: SyncFrameReader
    uid: str | None = None
    cancelled: bool = False
    escalate: list[tuple[float, int]] = field(default_factory=list)


class ComputationHost:
    def __init__(self, daemon: socket.socket) -> None:
        self.daemon = daemon
        self.from_daemon = SyncFrameReader(daemon)
        self.sel = selectors.DefaultSelector()
        self.procs: dict[int, JobProcess] = {}
        self.cpus = 1
        self.computation: Any = None
        self.program: str | None = None
        self.cleanup: Any = None
        self.setup_args: tuple = ()
        self.allow_shutdown = False
        self.closing = False
        self.pid = os.getpid()
        #: job processes waiting for the client's answer to dispy_send_file
        self.file_waiters: list[JobProcess] = []

    # ---- set up -----------------------------------------------------------------

    def init(self, header: dict, bufs: list[bytes]) -> None:
        os.makedirs(header["dir"], exist_ok=True)
        os.chdir(header["dir"])
        sys.path.insert(0, header["dir"])
        self.cpus = header["cpus"]
        self.allow_shutdown = header.get("client_shutdown", False)
        jobenv.install(
            header["node_name"], header["node_ip_addr"], header["dir"],
            jobproc.provisional_result, jobproc.send_file, self._shutdown_request,
        )
        try:
            bundle = cloudpickle.loads(bufs[0])
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
            send_frame_sync(self.daemon, {"op": "setup_failed", "reason": reason})
            raise SystemExit(1) from None
        send_frame_sync(self.daemon, {"op": "ready", "pid": os.getpid()})

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
        send_frame_sync(self.daemon, {"op": "shutdown_request"})
        return 0

    # ---- job processes ----------------------------------------------------------

    def _fork(self) -> JobProcess:
        parent, child = socket.socketpair()
        slot = jobproc.new_slot()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            parent.close()
            self.daemon.close()
            for proc in self.procs.values():
                proc.sock.close()
            jobproc.serve(child, slot, self.computation, self.program)
        child.close()
        proc = JobProcess(pid, parent, slot, SyncFrameReader(parent))
        self.procs[pid] = proc
        self.sel.register(parent, selectors.EVENT_READ, ("proc", proc))
        return proc

    def _idle_proc(self) -> JobProcess:
        for proc in self.procs.values():
            if proc.uid is None:
                return proc
        return self._fork()

    def _reap(self, proc: JobProcess) -> str:
        self.sel.unregister(proc.sock)
        proc.sock.close()
        del self.procs[proc.pid]
        try:
            _, status = os.waitpid(proc.pid, 0)
        except ChildProcessError:
            return "job process vanished"
        if os.WIFSIGNALED(status):
            return f"job process was killed by signal {signal.Signals(os.WTERMSIG(status)).name}"
        return f"job process exited with code {os.WEXITSTATUS(status)}"

    def _proc_event(self, proc: JobProcess) -> None:
        """Handle the frames from a job process (all those already buffered)."""
        self._proc_frame(proc)
        while proc.pid in self.procs and proc.reader.buffered():
            self._proc_frame(proc)

    def _proc_frame(self, proc: JobProcess) -> None:
        try:
            header, bufs = proc.reader.read_frame()
        except (EOFError, OSError):
            uid, cancelled = proc.uid, proc.cancelled
            reason = self._reap(proc)
            if uid is not None:
                status = jobproc.CANCELLED if cancelled else jobproc.TERMINATED
                text = ("Cancelled: " if cancelled else "") + reason
                if self.closing:
                    status, text = self.close_status, self.close_reason or reason
                now = time.time()
                send_frame_sync(
                    self.daemon,
                    {"op": "done", "uid": uid, "status": status, "exception": text,
                     "text": self.program is None, "start_time": now, "end_time": now},
                    [cloudpickle.dumps(None), b"", b""],
                )
            return
        op = header.get("op")
        if op == "done":
            proc.uid, proc.cancelled, proc.escalate = None, False, []
        elif op == "send_file":
            send_frame_sync(self.daemon, header, bufs)
            self.file_waiters.append(proc)
            return
        send_frame_sync(self.daemon, header, bufs)

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
            self._close(jobproc.TERMINATED, "node daemon went away")
            return
        op = header.get("op")
        if op == "job":
            proc = self._idle_proc()
            proc.uid = header["uid"]
            send_frame_sync(proc.sock, header, bufs)
        elif op == "cancel":
            self._cancel(header["uid"])
        elif op == "kill":  # service window ended: no grace period
            for proc in list(self.procs.values()):
                if proc.uid == header["uid"]:
                    proc.cancelled = True
                    self._signal(proc, signal.SIGKILL)
        elif op == "cpus":
            self.cpus = max(1, int(header["cpus"]))
        elif op == "file_reply":
            if self.file_waiters:
                send_frame_sync(self.file_waiters.pop(0).sock, header)
        elif op == "close":
            self._close(header.get("status", jobproc.CANCELLED), header.get("reason", ""))

    def _cancel(self, uid: str) -> None:
        for proc in self.procs.values():
            if proc.uid == uid and not proc.cancelled:
                proc.cancelled = True
                now = time.monotonic()
                proc.escalate = [
                    (now + CANCEL_TERM_AFTER, signal.SIGTERM),
                    (now + CANCEL_TERM_AFTER + CANCEL_KILL_AFTER, signal.SIGKILL),
                ]
                jobproc.write_slot(proc.slot, uid)
                self._signal(proc, signal.SIGINT)

    def _signal(self, proc: JobProcess, sig: int) -> None:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass

    def _escalate(self) -> float | None:
        now = time.monotonic()
        nearest = None
        for proc in list(self.procs.values()):
            while proc.escalate and proc.escalate[0][0] <= now:
                self._signal(proc, proc.escalate.pop(0)[1])
            if proc.escalate:
                due = proc.escalate[0][0] - now
                nearest = due if nearest is None else min(nearest, due)
        return nearest

    def _close(self, status: int, reason: str) -> None:
        self.closing = True
        self.close_status, self.close_reason = status, reason
        for proc in list(self.procs.values()):
            self._signal(proc, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while self.procs and time.monotonic() < deadline:
            for key, _ in self.sel.select(timeout=0.5):
                kind, proc = key.data
                if kind == "proc":
                    self._proc_event(proc)
        if callable(self.cleanup):
            try:
                self.cleanup(*self.setup_args)
            except BaseException:
                traceback.print_exc()
        try:
            send_frame_sync(self.daemon, {"op": "closed"})
        except OSError:
            pass

    # ---- main loop --------------------------------------------------------------

    def run(self) -> None:
        header, bufs = self.from_daemon.read_frame()
        self.init(header, bufs)
        self.sel.register(self.daemon, selectors.EVENT_READ, ("daemon", None))
        while not self.closing:
            timeout = self._escalate()
            for key, _ in self.sel.select(timeout=timeout):
                kind, proc = key.data
                if kind == "daemon":
                    self._daemon_event()
                elif proc.pid in self.procs:
                    self._proc_event(proc)
                if self.closing:
                    break


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s - %(message)s")
    sock = socket.socket(fileno=int(sys.argv[1]))
    sock.setblocking(True)
    ComputationHost(sock).run()
    os._exit(0)


if __name__ == "__main__":
    main()
