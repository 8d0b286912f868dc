"""Lanes: a job process's own stream to its program, so a job and its result do not
cross the node daemon.

A sequential round trip through dispynode crosses three processes and wakes one of
them twice; on a small machine that is most of the time a job takes (benchmarks/
RESULTS.md). A big job's bytes cross it too: read by the daemon, written again to the
job process, and its result read from a file and written again to the program. A lane
takes the daemon off that path (it is still told everything, but nothing waits for
it): the program opens one more
connection to the node, with the same handshake and session as its own (so only that
program, knowing the secret and its session key, can), naming one of its
computations; the daemon hands the socket, sealed as the handshake left it, to a job
process of that computation without one, an idle one first (``hand_over``: SCM_RIGHTS
on the process's link), and never reads it again. The process then reads jobs from its
lane as well as from the daemon (a lane's job that is here whole first), tells the
daemon when it takes one (``hostmsg.LaneStarted``: from then on the
daemon counts it as any job running there, for CPUs, cancels, a process that dies, the
jobs sent ahead behind it), runs it as any other, sends the result on the lane, then
to the daemon (``hostmsg.LaneDone``), which keeps it until the program acknowledges it,
as any result, and sends it the usual way should the lane not have carried it. A big
result (``jobproc.RESULT_FILE_MIN``) goes to the daemon as the daemon's own jobs' do,
in a result file (``hostmsg.LaneDoneInFile``), so the daemon keeps it without its bytes
crossing the link. Jobs with a timeout or files keep the daemon's way (client/lanes.py
decides).
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import time
from typing import TYPE_CHECKING, Any

from ..wire import codec, hostmsg, messages
from ..wire.sync import SyncFrameReader

if TYPE_CHECKING:  # (job processes import this module: no asyncio there)
    from ..wire.connection import Connection

#: results this big and more go on the lane only when the process could write them to a
#: result file (the daemon's copy, ``hostmsg.LaneDoneInFile``); else to the daemon only,
#: which sends them the usual way
RESULT_MAX = 1 << 20
#: seconds a result may wait for the program to read its lane
SEND_TIMEOUT = 30.0
#: bytes per second a big result on a lane must move at least (after SEND_TIMEOUT): a
#: program that reads slower loses it to the daemon, which sends it from its copy
SEND_RATE = 64 << 10
#: a computation's lanes, at most (as many as a program asks for: client/lanes.py)
PER_COMPUTATION = 4
_FD = struct.Struct("i")


def handable(conn: Connection) -> bool:
    """(daemon) Whether lane ``conn`` can go to a job process at all: sealed, plain (TLS
    stays with us), nothing read since its handshake, nothing left to write."""
    if conn.transport is None or conn.seal_keys is None or conn.sealer is None \
            or conn.decoder.frames or _socket_of(conn) is None \
            or conn.get_extra_info("ssl_object") is not None:
        return False
    conn.flush()  # (the welcome)
    return not conn.transport.get_write_buffer_size()  # (it would be lost)


def hand_over(conn: Connection, link_conn: Connection) -> bool:
    """(daemon) Give ``conn`` (a client's lane: handshake done, nothing read since) to
    the job process behind ``link_conn``; the daemon's end of it is then dropped.
    False when it could not be done (the lane is then closed)."""
    sock, job = _socket_of(conn), _socket_of(link_conn)
    keys = conn.seal_keys
    sealer = conn.sealer
    if not handable(conn) or sock is None or job is None or keys is None \
            or sealer is None or conn.transport is None or link_conn.transport is None:
        return False
    link_conn.flush()
    if link_conn.transport.get_write_buffer_size():
        return False  # (something still queued would be cut into)
    frame = b"".join(codec.encode(hostmsg.LaneHandOver(
        send_key=keys[0].hex(), recv_key=keys[1].hex(), send_seq=sealer.seq,
        recv_seq=conn.decoder.records).header(), []))
    fd = os.dup(sock.fileno())
    try:
        # a socket object of our own on the link's descriptor (the loop's transport has
        # nothing queued: flushed above; a frame this small goes whole or not at all)
        out = socket.socket(fileno=os.dup(job.fileno()))
        try:
            sent = socket.send_fds(out, [frame], [fd])
        finally:
            out.close()
        if sent != len(frame):  # (a few hundred bytes to a local socket: never seen)
            link_conn.close()  # the link is cut mid-frame: the process is lost, not misread
            return False
    except OSError:
        return False
    finally:
        os.close(fd)
    conn.transport.abort()  # (the process holds the socket now)
    return True


def _socket_of(conn: Connection) -> Any:
    transport = conn.transport
    return None if transport is None else transport.get_extra_info("socket")


class FdReader(SyncFrameReader):
    """(job process) The daemon's link, read with ``recvmsg`` so that a socket passed
    with a frame (``LaneHandOver``) is kept, not dropped by a plain ``recv``."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self.fds: list[int] = []

    def read_frame(self) -> codec.Message:
        while True:
            frame = self.decoder.next()
            if frame is not None:
                return frame
            self._receive(0)

    def poll(self) -> bool:
        """Take what the daemon already sent, without waiting; whether a frame is here
        (a busy process finds its next job so, with no ``select`` first)."""
        with contextlib.suppress(BlockingIOError):  # (nothing there yet)
            self._receive(socket.MSG_DONTWAIT)
        return self.buffered()

    def _receive(self, flags: int) -> None:
        n, anc, _, _ = self.sock.recvmsg_into([self.decoder.get_buffer()],
                                              socket.CMSG_SPACE(4 * _FD.size),
                                              flags | socket.MSG_CMSG_CLOEXEC)
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                usable = len(data) - len(data) % _FD.size
                self.fds += [fd for (fd,) in _FD.iter_unpack(data[:usable])]
        if n == 0:
            raise EOFError("peer closed the connection")
        self.decoder.received(n)

    def take_fd(self) -> int | None:
        """The socket that came with the last ``LaneHandOver``; any other passed is closed."""
        fds, self.fds = self.fds, []
        for fd in fds[1:]:
            os.close(fd)
        return fds[0] if fds else None


class LaneGone(Exception):
    """The lane closed or broke: the process goes on with the daemon's jobs only."""


class Lane:
    """(job process) Its end of a lane: sealed records both ways, blocking."""

    def __init__(self, msg: hostmsg.LaneHandOver, fd: int) -> None:
        self.sock = socket.socket(fileno=fd)
        # a program that stops reading does not hold the process: after this long the
        # result goes the daemon's way (LaneGone)
        self.sock.settimeout(SEND_TIMEOUT)
        self.poller = select.poll()  # (not select: a descriptor may be over 1023)
        self.own = select.poll()  # (the lane alone)
        self.own.register(self.sock, select.POLLIN)
        self.reader = SyncFrameReader(self.sock)
        self.reader.decoder.seal(bytes.fromhex(msg.recv_key), codec.FULL)
        self.reader.decoder.records = msg.recv_seq
        self.sealer = codec.Sealer(bytes.fromhex(msg.send_key))
        self.sealer.seq = msg.send_seq
        self.polling = False
        try:
            self.send(messages.LaneReady(pid=os.getpid()).header(), [])
        except LaneGone:
            self.sock.close()
            raise

    def send(self, header: dict[str, Any], pieces: list[Any]) -> None:
        """One sealed record; LaneGone if the program is no longer there, read none of it
        for ``SEND_TIMEOUT``, or took longer than ``SEND_TIMEOUT`` and a second per
        ``SEND_RATE`` bytes (a big result on a slow network moves at its pace; one the
        program reads slower than that, the daemon sends instead, and the process is
        free)."""
        frame = codec.encode(header, pieces)
        size = sum(codec.nbytes(p) for p in frame)
        deadline = time.monotonic() + SEND_TIMEOUT + size / SEND_RATE
        try:
            for piece in self.sealer.seal(frame, size):
                view = memoryview(piece).cast("B")
                while view:
                    left = deadline - time.monotonic()
                    if left > 0:
                        self.sock.settimeout(min(SEND_TIMEOUT, left))
                        try:
                            view = view[self.sock.send(view):]
                            continue
                        except TimeoutError:
                            if left >= SEND_TIMEOUT:  # (it read nothing all that time)
                                raise
                    raise LaneGone(f"the program read {size} bytes too slowly")
        except OSError as exc:
            raise LaneGone(str(exc)) from None
        finally:
            self.sock.settimeout(SEND_TIMEOUT)

    def ready(self) -> tuple[dict, list] | None:
        """(not blocking) The program's next job if it is here whole, with what has come
        of it read. The process takes it before the daemon's next job, so a job sent on
        the lane does not wait behind those, nor is lost if the daemon closes the lane
        meanwhile. LaneGone when the lane ended."""
        decoder = self.reader.decoder
        try:
            while not decoder.frames and self.own.poll(0):
                n = self.sock.recv_into(decoder.get_buffer())
                if n == 0:
                    raise LaneGone("the program closed it")
                decoder.received(n)
            return decoder.next()
        except (OSError, codec.FrameError) as exc:
            raise LaneGone(str(exc)) from None

    def wait(self, daemon: socket.socket) -> tuple[dict, list] | None:
        """Block until the daemon or the lane has something: the lane's next frame, or
        None when the daemon's link is readable. LaneGone when the lane ended."""
        if not self.polling:
            self.poller.register(daemon, select.POLLIN)
            self.poller.register(self.sock, select.POLLIN)
            self.polling = True
        try:
            while not self.reader.buffered():
                ready = self.poller.poll()
                if any(fd == daemon.fileno() for fd, _ in ready):
                    return None
                n = self.sock.recv_into(self.reader.decoder.get_buffer())
                if n == 0:
                    raise LaneGone("the program closed it")
                self.reader.decoder.received(n)
            return self.reader.read_frame()
        except (OSError, codec.FrameError) as exc:
            raise LaneGone(str(exc)) from None

    def close(self) -> None:
        self.sock.close()
