"""A job process: forked from the computation host, runs one job at a time.

Warm job processes are reused for speed: globals set by setup are inherited at fork;
a global changed by one job stays visible to later jobs in the same process. A job is
cancelled with KeyboardInterrupt (SIGINT), then SIGTERM, then SIGKILL; a process that
dies is replaced by the host. Jobs sent ahead (short ones, node/jobs.py) wait in the
socket and run in the order sent; one the slot names is skipped (ends Cancelled).
"""

from __future__ import annotations

import contextlib
import io
import linecache
import mmap
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import traceback
from collections import deque
from typing import Any

import cloudpickle

from ..wire import codec, hostmsg, messages, oob
from ..wire.messages import MessageError
from ..wire.status import CANCELLED, FINISHED, TERMINATED
from ..wire.sync import SyncFrameReader, send_frame_sync
from . import lanes, results

#: the slot: entries of SLOT_SIZE bytes, each a job uid (NUL-padded). Entry 0 names the
#: running job the host interrupts (CancelJob); the next ones, written in turn, name jobs
#: already sent to this process that are to end Cancelled without starting (SkipJob).
#: After those, one entry the process writes: the job it runs now, so the host escalates
#: a cancel (SIGTERM, SIGKILL) only while the cancelled job is still the one running.
#: Last, a count of the jobs the process has taken (run or skipped): under the lock the
#: host and the process share, a job is skipped only if the process has not reached it.
SLOT_SIZE = 64
SLOT_ENTRIES = 8
_RUNNING = SLOT_ENTRIES * SLOT_SIZE
_TAKEN = _RUNNING + SLOT_SIZE
_COUNT = struct.Struct("=Q")


class _State:
    running = False
    sock: socket.socket | None = None
    reader: SyncFrameReader | None = None
    uid: str | None = None
    #: shared with the host: the uids of the jobs the host wants cancelled
    slot: mmap.mmap | None = None
    #: taken with the host's SkipJob: a job is taken and skip entries read under it
    lock: Any = None
    #: jobs read from the socket while waiting for another frame (dispy_send_file)
    pending: deque[tuple[dict, list]] = deque()
    #: where results of RESULT_FILE_MIN bytes and more go (HostInit.result_dir)
    result_dir: str | None = None
    result_tag: str | None = None
    results_written = 0


#: a result this big is written to a file of the node's result directory, not the link
#: (DoneInFile): the daemon then neither reads it from the link nor copies it into its
#: result log, two copies of it fewer
RESULT_FILE_MIN = 1 << 20


def new_slot() -> mmap.mmap:
    """Anonymous shared memory in which the host names the jobs it cancels."""
    return mmap.mmap(-1, _TAKEN + _COUNT.size)


def _entry(uid: str) -> bytes:
    return uid.encode()[:SLOT_SIZE].ljust(SLOT_SIZE, b"\0")


def write_slot(slot: mmap.mmap, uid: str, entry: int = 0) -> None:
    slot[entry * SLOT_SIZE:(entry + 1) * SLOT_SIZE] = _entry(uid)


def named_in_slot(slot: mmap.mmap, uid: str) -> bool:
    """Whether an entry of ``slot`` (a cancel or skip) is exactly ``uid``."""
    data, key = slot[:_RUNNING], _entry(uid)
    at = data.find(key)
    while at >= 0 and at % SLOT_SIZE:
        at = data.find(key, at + 1)
    return at >= 0


def set_running(slot: mmap.mmap, uid: str | None) -> None:
    """(job process) The job it runs now, or None between jobs."""
    slot[_RUNNING:_TAKEN] = _entry(uid or "")


def running_in_slot(slot: mmap.mmap) -> str:
    """(host) The job the process runs now ("" between jobs)."""
    return slot[_RUNNING:_TAKEN].rstrip(b"\0").decode(errors="replace")


def taken(slot: mmap.mmap) -> int:
    """How many jobs the process has taken from its socket (run or skipped)."""
    return int(_COUNT.unpack_from(slot, _TAKEN)[0])


def take(slot: mmap.mmap, uid: str) -> None:
    """(job process, under the lock) It takes the next job sent to it."""
    _COUNT.pack_into(slot, _TAKEN, taken(slot) + 1)
    set_running(slot, uid)


def _cancel_requested() -> bool:
    if _State.slot is None or _State.uid is None:
        return False
    return named_in_slot(_State.slot, _State.uid)


def _on_sigint(signum: int, frame: Any) -> None:
    # A late signal meant for an earlier job names that job's uid and is ignored.
    if _State.running and _cancel_requested():
        raise KeyboardInterrupt


def provisional_result(result: Any, relay: bool = False, timeout: float | None = None) -> int:
    """Send ``result`` to the client now; the job goes on. Returns 0, or -1 on failure."""
    if _State.sock is None or _State.uid is None:
        return -1
    try:
        data = cloudpickle.dumps(result, protocol=5)
    except Exception as exc:
        sys.stderr.write(f"dispy_provisional_result: result cannot be pickled: {exc}\n")
        return -1
    send_frame_sync(_State.sock, hostmsg.Provisional(uid=_State.uid), [data])
    return 0


def send_file(path: str, relay: bool = False, timeout: float | None = None) -> int:
    """Send a file from the node to the client's working directory. Returns 0 or -1."""
    if _State.sock is None or _State.uid is None:
        return -1
    try:
        st = os.stat(path)
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        sys.stderr.write(f"dispy_send_file: cannot read {path}: {exc}\n")
        return -1
    rel = os.path.relpath(os.path.abspath(path), os.getcwd())
    if rel.startswith(".."):
        rel = os.path.basename(path)
    send_frame_sync(_State.sock, hostmsg.JobSendFile(
        uid=_State.uid, path=rel, size=st.st_size, mtime=st.st_mtime,
        mode=st.st_mode & 0o7777), [data])
    assert _State.reader is not None
    while True:  # jobs sent ahead may come before the reply: they run after this one
        header, bufs = _State.reader.read_frame()
        try:
            reply = hostmsg.parse_job_request(header)
        except MessageError as exc:
            reply = hostmsg.FileReply(ok=False, reason=f"malformed reply: {exc}")
            break
        if not isinstance(reply, (hostmsg.RunJob, hostmsg.LaneClose, hostmsg.LaneHandOver)):
            break
        if isinstance(reply, hostmsg.LaneHandOver):  # not now (the program tries again)
            fd = _State.reader.take_fd() if isinstance(_State.reader, lanes.FdReader) else None
            if fd is not None:
                os.close(fd)
            send_frame_sync(_State.sock, hostmsg.LaneEnded(reason="busy sending a file"))
            continue
        _State.pending.append((header, bufs))
    if isinstance(reply, hostmsg.FileReply) and reply.ok:
        return 0
    reason = reply.reason if isinstance(reply, hostmsg.FileReply) else f"{reply.op!r} reply"
    sys.stderr.write(f"dispy_send_file: {path} refused: {reason}\n")
    return -1


def register_sources(sources: Any) -> None:
    """Put the shipped source of the computation's files in ``linecache``, so its
    tracebacks show file names and lines as they would on the client (mtime None: the
    entry is never checked against a file of the same name on this machine)."""
    if not isinstance(sources, dict):
        return
    for name, lines in sources.items():
        if isinstance(name, str) and isinstance(lines, list):
            linecache.cache[name] = (sum(len(ln) for ln in lines), None, lines, name)


#: longest exception text sent (it travels in the result's header, whose size is bounded)
MAX_EXCEPTION = 1 << 20


def _format_exception(exc: BaseException) -> str:
    tb = exc.__traceback__.tb_next if exc.__traceback__ else None
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    if len(text) > MAX_EXCEPTION:  # the end names the exception: keep both ends
        half = MAX_EXCEPTION // 2
        text = (f"{text[:half]}\n... ({len(text) - 2 * half} characters left out)\n"
                f"{text[-half:]}")
    return text


def _run_function(func: Any, args_buf: bytes, big: list) -> dict[str, Any]:
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    reply: dict[str, Any] = {"status": FINISHED, "exception": None}
    result = None
    try:
        try:
            args, kwargs = oob.loads(args_buf, big)
            _State.running = True
            try:
                if _cancel_requested():
                    raise KeyboardInterrupt
                result = func(*args, **kwargs)
            finally:
                _State.running = False
        except KeyboardInterrupt as exc:
            if _cancel_requested():  # (one the job raised itself is its own failure)
                reply.update(status=CANCELLED,
                             exception="Cancelled\n" + _format_exception(exc))
            else:
                reply.update(status=TERMINATED, exception=_format_exception(exc))
        except BaseException as exc:  # the job's own failure, SystemExit included
            reply.update(status=TERMINATED, exception=_format_exception(exc))
    finally:
        sys.stdout, sys.stderr = saved
    reply["stdout"], reply["stderr"] = out.getvalue(), err.getvalue()
    return _pack_result(reply, result)


def _pack_result(reply: dict[str, Any], result: Any) -> dict[str, Any]:
    try:
        reply["_result"], reply["_oob"] = oob.dumps(result)
    except Exception as exc:
        reply.update(
            status=TERMINATED,
            exception=f"result of type {type(result).__name__} could not be pickled: {exc}",
            _result=cloudpickle.dumps(None), _oob=[],
        )
    return reply


def _program_argv(program: str, args: tuple) -> list[str]:
    if os.path.isfile(program):  # shipped with the computation: in our directory
        program = os.path.abspath(program)
    argv = [program] + [str(a) for a in args]
    if program.endswith(".py"):
        argv.insert(0, sys.executable)
    elif program.endswith(".java"):
        argv.insert(0, "java")
    return argv


def _run_program(program: str, args_buf: bytes) -> dict[str, Any]:
    reply: dict[str, Any] = {"status": FINISHED, "exception": None, "stdout": b"", "stderr": b""}
    result = None
    try:
        args, _ = cloudpickle.loads(args_buf)
        _State.running = True
        try:
            if _cancel_requested():
                raise KeyboardInterrupt
            proc = subprocess.run(_program_argv(program, args), capture_output=True)
        finally:
            _State.running = False
        result, reply["stdout"], reply["stderr"] = proc.returncode, proc.stdout, proc.stderr
    except KeyboardInterrupt as exc:
        reply.update(status=CANCELLED, exception="Cancelled\n" + _format_exception(exc))
    except Exception as exc:
        reply.update(status=TERMINATED, exception=_format_exception(exc))
    return _pack_result(reply, result)


_MISSING = object()


def _add_job_globals(computation: Any, data: bytes) -> list[tuple[Any, str, Any]]:
    """Functions and classes of ``dispy_job_depends``, visible to the computation for
    this job only: returns what they replaced, for ``_restore_globals`` after the job."""
    import builtins

    names = cloudpickle.loads(data)
    namespace = getattr(computation, "__globals__", None)
    saved: list[tuple[Any, str, Any]] = []
    for key, value in names.items():
        if namespace is not None:
            saved.append((namespace, key, namespace.get(key, _MISSING)))
            namespace[key] = value
        saved.append((builtins, key, getattr(builtins, key, _MISSING)))
        setattr(builtins, key, value)
    return saved


def _restore_globals(saved: list[tuple[Any, str, Any]]) -> None:
    """Undo ``_add_job_globals`` so the next job in this warm process does not see them."""
    for where, key, old in reversed(saved):
        if isinstance(where, dict):
            if old is _MISSING:
                where.pop(key, None)
            else:
                where[key] = old
        elif old is _MISSING:
            try:
                delattr(where, key)
            except AttributeError:
                pass
        else:
            setattr(where, key, old)


def _result_file(pieces: list[Any]) -> str | None:
    """Write a result's buffers to a new file of the node's result directory; its name,
    or None (no such directory, or the write failed: the result goes by the link)."""
    if _State.result_dir is None or _State.result_tag is None or \
            len(pieces) > codec.FULL.max_buffers or \
            any(memoryview(p).nbytes > codec.FULL.max_buffer for p in pieces):
        return None  # (over the wire's limits: the link refuses it, as any frame)
    _State.results_written += 1
    name = f"{os.getpid()}-{_State.result_tag}-{_State.results_written}"
    path = os.path.join(_State.result_dir, name)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o600)
    except OSError:
        return None
    try:
        results.writev_at(fd, pieces)
    except OSError:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        return None
    os.close(fd)
    return name


def serve(sock: socket.socket, slot: mmap.mmap, lock: Any, computation: Any,
          program: str | None) -> None:
    """Job loop of a forked job process; never returns."""
    signal.signal(signal.SIGINT, _on_sigint)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _State.sock = sock
    _State.reader = reader = lanes.FdReader(sock)
    _State.slot = slot
    _State.lock = lock
    lane: lanes.Lane | None = None
    code = 0
    try:
        while True:
            try:
                if _State.pending:
                    header, bufs = _State.pending.popleft()
                elif lane is None:
                    header, bufs = reader.read_frame()
                else:
                    try:
                        frame = _lane_first(lane, sock, reader)
                        if frame is not None:
                            try:
                                _lane_job(lane, frame, computation, program)
                            finally:
                                frame = None  # (its arguments go now, not with the lane)
                            continue
                    except (lanes.LaneGone, MessageError) as exc:
                        lane.close()
                        lane = None
                        send_frame_sync(sock, hostmsg.LaneEnded(reason=str(exc)[:200]))
                        continue
                    header, bufs = reader.read_frame()
            except KeyboardInterrupt:
                continue
            except (EOFError, OSError):
                break
            job = hostmsg.parse_job_request(header)
            if isinstance(job, hostmsg.LaneHandOver):
                fd = reader.take_fd()
                if lane is not None:
                    lane.close()
                lane = None
                try:
                    if fd is None:
                        raise lanes.LaneGone("no socket came with it")
                    lane = lanes.Lane(job, fd)
                except lanes.LaneGone as exc:  # (the program gave up meanwhile)
                    send_frame_sync(sock, hostmsg.LaneEnded(reason=str(exc)[:200]))
                continue
            if isinstance(job, hostmsg.LaneClose):
                if lane is not None:
                    lane.close()
                lane = None
                continue
            if not isinstance(job, hostmsg.RunJob):  # the daemon sends nothing else here
                raise MessageError(f"unexpected {job.op!r}")
            start = _take(job.uid)
            if 0 < job.oob <= len(bufs):  # as oob.split
                bufs, big = bufs[:-job.oob], bufs[-job.oob:]
            else:
                big = []
            saved = _add_job_globals(computation, bufs[1]) if len(bufs) > 1 else []
            try:
                reply = _run(computation, program, bufs[0], big)
            finally:
                _restore_globals(saved)
            done, pieces, size = _ended(job.uid, start, reply)
            _State.uid = None
            set_running(slot, None)
            sys.stdout.flush()
            name = _result_file(pieces) if size >= RESULT_FILE_MIN else None
            if name is not None:
                lens = [memoryview(p).nbytes for p in pieces]
                done = hostmsg.DoneInFile(
                    uid=done.uid, status=done.status, exception=done.exception,
                    start_time=done.start_time, end_time=done.end_time, text=done.text,
                    oob=done.oob, file=name, lens=lens)
                pieces = []
            try:
                send_frame_sync(sock, done, pieces)
            except BaseException:
                if name is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(str(_State.result_dir), name))
                raise
            del reply, done, pieces, bufs, big  # (not kept while the next job runs)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)


def _lane_first(lane: lanes.Lane, sock: socket.socket,
                reader: lanes.FdReader) -> tuple[dict, list] | None:
    """The lane's next job if it is here whole (it goes before the daemon's); else None
    when the daemon has a frame; else the first of the two to come. (A job still
    arriving on the lane does not hold up the daemon's: a job sent there meanwhile has
    its ``dispy_job_timeout`` running.)"""
    frame = lane.ready()
    if frame is not None:
        return frame
    if reader.buffered() or reader.poll():
        return None
    return lane.wait(sock)


def _take(uid: str) -> float:
    """The job ``uid`` is this process's now (its slot says so); its start time."""
    _State.uid = uid
    assert _State.slot is not None
    with _State.lock:  # after this, a SkipJob for it finds it taken (and so no skip)
        take(_State.slot, uid)
    return time.time()


def _run(computation: Any, program: str | None, args: bytes, big: list) -> dict[str, Any]:
    if program is not None:
        return _run_program(program, args)
    return _run_function(computation, args, big)


def _ended(uid: str, start: float, reply: dict[str, Any]) -> tuple[messages.Done, list, int]:
    """A job's end: its Done (no cid: the daemon adds it), its buffers, their size."""
    data, big = reply["_result"], reply["_oob"]
    out, err = reply["stdout"], reply["stderr"]
    done = messages.Done(uid=uid, status=reply["status"], exception=reply["exception"],
                         start_time=start, end_time=time.time(), text=isinstance(out, str),
                         oob=len(big))
    if isinstance(out, str):
        out, err = out.encode(errors="replace"), err.encode(errors="replace")
    pieces = [data, out, err, *big]
    size = len(data) + len(out) + len(err)
    if big:
        size += sum(memoryview(b).nbytes for b in big)
    return done, pieces, size


def _lane_job(lane: lanes.Lane, frame: tuple[dict, list], computation: Any,
              program: str | None) -> None:
    """A job from the lane: the daemon told it is taken (it counts it as running), run,
    its result on the lane, then to the daemon, which keeps it. The slot names it while
    it runs (a cancel interrupts only that job), not as taken (SkipJob counts only the
    daemon's own jobs)."""
    header, bufs = frame
    job = messages.Job.parse(header)
    if len(bufs) != 1 + job.oob or job.timeout is not None:  # (those go by the daemon)
        raise MessageError("a job the program may not send on a lane")
    _State.uid = job.uid
    assert _State.slot is not None and _State.sock is not None
    set_running(_State.slot, job.uid)  # (not counted as taken: that is the daemon's jobs')
    send_frame_sync(_State.sock, hostmsg.LaneStarted(uid=job.uid))
    start = time.time()
    reply = _run(computation, program, bufs[0], bufs[1:])
    done, pieces, size = _ended(job.uid, start, reply)
    del reply
    sys.stdout.flush()
    # a big result: the daemon's copy is a file (as the daemon's own jobs'), so the
    # lane can carry it too without the link carrying it again
    name = _result_file(pieces) if size >= RESULT_FILE_MIN else None
    delivered = False
    try:
        if size < lanes.RESULT_MAX or name is not None:
            lane.send(done.client_header(job.cid), pieces)
            delivered = True
    finally:  # (LaneGone: the daemon sends it; the lane is dropped by the caller)
        assert _State.sock is not None
        if name is not None:
            send_frame_sync(_State.sock, hostmsg.LaneDoneInFile(
                uid=done.uid, status=done.status, exception=done.exception,
                start_time=done.start_time, end_time=done.end_time, text=done.text,
                oob=done.oob, file=name, lens=[memoryview(p).nbytes for p in pieces],
                delivered=delivered))
        else:
            send_frame_sync(_State.sock, hostmsg.LaneDone(
                uid=done.uid, status=done.status, exception=done.exception,
                start_time=done.start_time, end_time=done.end_time, text=done.text,
                oob=done.oob, delivered=delivered), pieces)
        _State.uid = None
        assert _State.slot is not None
        set_running(_State.slot, None)
