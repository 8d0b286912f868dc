"""One connection class for every link of every dispy program.

``Connection`` is an asyncio ``BufferedProtocol`` around the sans-I/O ``FrameDecoder``:
big buffers are received in place, frames queued by ``send`` in one loop iteration go
out in one write (one record when sealed), ``request`` waits for the peer's ``reply``
frame, and every failure ends in one place: ``recv`` raises ``ConnectionClosed`` with
the reason (EOF, reset, a malformed frame or a failed authentication tag).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, cast

from ..eventloop import within
from . import heap
from .codec import (
    BIG,
    FULL,
    PRE_AUTH,
    RECORD_TARGET,
    Buffer,
    FrameDecoder,
    FrameError,
    Header,
    Limits,
    Message,
    Sealer,
    encode_sized,
    loads,
    nbytes,
)
from .records import Record

log = logging.getLogger("dispy.wire")


class Traffic:
    """Bytes this process received and sent on all its connections (metrics)."""

    received = 0
    sent = 0


class ConnectionClosed(Exception):
    """The connection is gone; ``str()`` says why, ``received`` how many bytes came
    before (0: the peer closed without a word, as a TLS daemon does to a plain peer)."""

    def __init__(self, reason: str, received: int = 0) -> None:
        super().__init__(reason)
        self.received = received


class Connection(asyncio.BufferedProtocol):
    """A framed, optionally sealed, connection. Plain (handshake limits, one frame at a
    time) until ``seal``; ``local`` connections (Unix sockets the filesystem protects)
    are plain for good, with full limits."""

    def __init__(self, limits: Limits = PRE_AUTH, local: bool = False) -> None:
        self.transport: asyncio.Transport | None = None
        self.decoder = FrameDecoder(limits, hold=not local)
        self._sealer: Sealer | None = None
        #: (send, receive) keys of the records, once sealed (a lane hands them on)
        self.seal_keys: tuple[bytes, bytes] | None = None
        self._out: list[Buffer] = []
        self._out_size = 0
        self._out_big = False
        self._flush_soon = False
        #: frames are queued, not written, until the peer speaks or ``release`` (``hold``)
        self.held = False
        #: called before queued frames are written (the node keeps on disk the results
        #: they report first): every write of queued frames goes through ``flush``
        self.before_flush: Callable[[], None] | None = None
        self._waiter: asyncio.Future | None = None
        self._closed: str | None = None
        self._error: Exception | None = None
        self._paused = False
        self._drain_waiters: list[asyncio.Future] = []
        self._replies: dict[str, asyncio.Future] = {}
        #: ``deliver_to``'s handlers and the future that ends with the connection
        self._handler: Callable[[dict, list], None] | None = None
        self._after: Callable[[], object] | None = None
        self._ended: asyncio.Future | None = None
        self.loop = asyncio.get_running_loop()
        self.peer: tuple[str, int] = ("?", 0)
        #: our own address of this connection (the one the peer reached us at)
        self.sockname: str | None = None
        self.bytes_in = 0
        self.bytes_out = 0

    # ---- opening ------------------------------------------------------------------------

    @classmethod
    async def open(cls, host: str, port: int, ssl_ctx: ssl.SSLContext | None = None,
                   timeout: float = 10.0) -> Connection:
        loop = asyncio.get_running_loop()
        _, conn = await within(
            loop.create_connection(cls, host, port, ssl=ssl_ctx), timeout)
        return conn

    @classmethod
    async def open_unix(cls, sock: socket.socket) -> Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_unix_connection(lambda: cls(local=True), sock=sock)
        return conn

    # ---- protocol callbacks -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport (uvloop's are not asyncio.Transport subclasses)
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer = (str(peer[0]), int(peer[1]))
        name = transport.get_extra_info("sockname")
        if isinstance(name, tuple) and len(name) >= 2:
            self.sockname = str(name[0])
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family == socket.AF_UNIX:
            self.peer = ("local", _peer_uid(sock))  # (no address: the peer's user id)
        elif sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.decoder.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self.bytes_in += nbytes
        Traffic.received += nbytes
        if self.held:
            self.release()  # the peer speaks here: it stays on this connection
        try:
            self.decoder.received(nbytes)
        except FrameError as exc:
            # frames whole before the bad bytes passed their tags: handled, as ``recv``
            # hands them out before it raises the error
            if self.decoder.frames and self._handler is not None:
                self._deliver()
            self._fail(exc)
            return
        if self.decoder.frames:
            if self._handler is not None:
                self._deliver()
            else:
                self._wake()

    def eof_received(self) -> bool | None:
        self._set_closed("connection closed by peer")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._set_closed(f"connection lost: {exc}" if exc else "connection closed")
        for fut in self._drain_waiters:
            if not fut.done():
                fut.set_result(None)
        self._drain_waiters.clear()
        for fut in self._replies.values():
            if not fut.done():
                fut.set_result(None)
        self._replies.clear()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        for fut in self._drain_waiters:
            if not fut.done():
                fut.set_result(None)
        self._drain_waiters.clear()

    # ---- reading ------------------------------------------------------------------------

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _set_closed(self, reason: str) -> None:
        if self._closed is None:
            self._closed = reason
        self._wake()
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(self._error or ConnectionClosed(self._closed,
                                                                   self.bytes_in))

    def _fail(self, exc: Exception) -> None:
        self._error = exc
        self._set_closed(str(exc))
        if self.transport is not None:
            self.transport.abort()

    def pending(self) -> int:
        """Frames received and waiting to be taken by ``recv``."""
        return len(self.decoder.frames)

    def deliver_to(self, handler: Callable[[dict, list], None],
                   after: Callable[[], object] | None = None) -> asyncio.Future:
        """From now on hand each frame to ``handler`` as soon as it is decoded, in the
        read callback (no task wake-up and no loop iteration per frame: the hot links
        use this instead of ``recv``), then call ``after`` once the frames of that read
        are handled. A handler's exception is logged and the connection kept. Returns a
        future that ends with the connection: its result is the ConnectionClosed (or
        FrameError) that ``recv`` would raise."""
        self._handler, self._after = handler, after
        self._ended = self.loop.create_future()
        if self.decoder.frames:
            self._deliver()
        if self._closed is not None and not self._ended.done():
            self._ended.set_result(self._error or ConnectionClosed(self._closed,
                                                                   self.bytes_in))
        return self._ended

    def _deliver(self) -> None:
        assert self._handler is not None
        while True:
            raw = self.decoder.next_raw()
            if raw is None:
                break
            message = self._take(raw)
            if message is None:
                continue
            try:
                self._handler(*message)
            except Exception:  # a bug in a handler must not cost the link
                log.exception("failed to handle a frame from %s", self.peer[0])
        if self._after is not None:
            try:
                self._after()
            except Exception:
                log.exception("failed after frames from %s", self.peer[0])

    def _take(self, raw: tuple[bytes, list]) -> Message | None:
        """A decoded frame as (header, buffers); None for a reply a request took."""
        header = loads(raw[0])
        if header.get("op") == "reply":
            fut = self._replies.pop(str(header.get("reply")), None)
            if fut is not None:
                if not fut.done():
                    fut.set_result((header, raw[1]))
                return None
        for buf in raw[1]:
            if len(buf) >= BIG:
                heap.note_big()
        return header, raw[1]

    async def recv(self, timeout: float | None = None) -> Message:
        """The next frame; ``ConnectionClosed`` (or ``FrameError`` for a bad frame) when the
        connection ends, ``asyncio.TimeoutError`` after ``timeout`` seconds of silence."""
        while True:
            raw = self.decoder.next_raw()
            if raw is None:
                if self._error is not None:
                    raise self._error
                if self._closed is not None:
                    raise ConnectionClosed(self._closed, self.bytes_in)
                self._waiter = self.loop.create_future()
                try:
                    if timeout is None:
                        await self._waiter
                    else:
                        await within(self._waiter, timeout)
                finally:
                    self._waiter = None
                continue
            message = self._take(raw)
            if message is not None:
                return message

    # ---- writing ------------------------------------------------------------------------

    def is_closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def send(self, header: Header | Record, buffers: Sequence[Buffer] = (),
             now: bool = False, flush_soon: bool = True) -> bool:
        """Queue a frame (a header, or a typed record of wire/messages.py); frames queued
        in one loop iteration go out together. ``now``: write it (and what was queued)
        at once, for a link where nothing else would join it (a job process's).
        ``flush_soon=False``: the caller calls ``flush`` before it returns to the loop
        (a planned flush costs the loop one more turn, and a poll, when the frame was
        queued from a callback the loop itself had planned); a later plain ``send``
        still plans a flush, so such a frame never holds the link back."""
        if self.is_closing():
            return False
        if isinstance(header, Record):
            header = header.header()
        pieces, size, big = encode_sized(header, buffers)
        if flush_soon and not now and not self._flush_soon:
            self._flush_soon = True
            self.loop.call_soon(self.flush)
        self._out += pieces
        self._out_size += size
        self._out_big = self._out_big or big
        if now or self._out_size >= RECORD_TARGET:
            self.flush()
        return True

    def flush(self) -> None:
        """Write what ``send`` queued now."""
        self._flush_soon = False
        if self.held:
            return
        if self.before_flush is not None and self._out:
            self.before_flush()
        pieces, size, big = self._out, self._out_size, self._out_big
        self._out, self._out_size, self._out_big = [], 0, False
        if not pieces or self.is_closing():
            return
        if not big:  # the common case: one write of small pieces
            if self._sealer is not None:
                pieces = self._sealer.seal(pieces, size)
            assert self.transport is not None
            self.bytes_out += size
            Traffic.sent += size
            self.transport.write(pieces[0] if len(pieces) == 1 else b"".join(pieces))
            return
        if size >= (1 << 20):
            heap.note_big()
        self._write(pieces if self._sealer is None else self._sealer.stream(pieces, size))

    def hold(self) -> None:
        """Write what is queued, then queue frames without writing them until the peer
        sends something here, ``release`` or ``hand_over`` (a daemon that offered the
        local path does not know yet which connection the peer will read)."""
        self.flush()
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.flush()

    def hand_over(self, other: Connection) -> None:
        """Move the frames held here to ``other``, after what it queued already (its
        welcome), in their order; this connection writes nothing more."""
        pieces, size, big = self._out, self._out_size, self._out_big
        self._out, self._out_size, self._out_big = [], 0, False
        self.held = False
        if pieces and not other.is_closing():
            other._out += pieces
            other._out_size += size
            other._out_big = other._out_big or big
            if not other._flush_soon:
                other._flush_soon = True
                other.loop.call_soon(other.flush)

    def _write(self, pieces: Iterable[Buffer]) -> None:
        """Few writes and no copies of big pieces: ``writelines`` would join them. A
        sealed record's pieces come from ``Sealer.stream``: each big one is written as
        soon as it is MACed."""
        assert self.transport is not None
        small: list[Buffer] = []
        for piece in pieces:
            size = nbytes(piece)
            self.bytes_out += size
            Traffic.sent += size
            if size < BIG:
                small.append(piece)
                continue
            if small:
                self.transport.write(b"".join(small))
                small = []
            self.transport.write(memoryview(piece).cast("B"))
        if small:
            self.transport.write(b"".join(small) if len(small) > 1 else small[0])

    async def drain(self) -> None:
        """Wait until the transport's buffer is below its high-water mark."""
        self.flush()
        if self._paused and not self.is_closing():
            fut = self.loop.create_future()
            self._drain_waiters.append(fut)
            await fut

    async def request(self, header: Header | Record, buffers: Sequence[Buffer] = (),
                      timeout: float = 30.0) -> Header | None:
        """Send ``header`` and wait for the peer's ``reply`` to it (None: none came)."""
        answer = await self.request_frame(header, buffers, timeout)
        return None if answer is None else answer[0]

    async def request_frame(self, header: Header | Record, buffers: Sequence[Buffer] = (),
                            timeout: float = 30.0) -> Message | None:
        """``request``, with the reply's buffers. Replies are routed while a task reads
        with ``recv``."""
        if isinstance(header, Record):
            header = header.header()
        token = secrets.token_hex(8)
        fut = self.loop.create_future()
        self._replies[token] = fut
        try:
            if not self.send({**header, "reply": token}, buffers):
                return None
            return await within(fut, timeout)
        except asyncio.TimeoutError:
            return None
        finally:
            self._replies.pop(token, None)

    def seal(self, send_key: bytes, recv_key: bytes, limits: Limits) -> None:
        """After the handshake: every record both ways carries a tag with these keys."""
        self.flush()
        self._sealer = Sealer(send_key)
        self.seal_keys = (send_key, recv_key)
        try:
            self.decoder.seal(recv_key, limits)
        except FrameError as exc:
            self._fail(exc)

    @property
    def sealed(self) -> bool:
        return self._sealer is not None

    @property
    def sealer(self) -> Sealer | None:
        return self._sealer

    def close(self) -> None:
        self.flush()
        if self.transport is not None:
            self.transport.close()
        self._set_closed("closed")

    async def close_soon(self, timeout: float = 1.0) -> None:
        """Send what is queued (for at most ``timeout`` s), then close."""
        with contextlib.suppress(asyncio.TimeoutError, OSError, ConnectionError):
            await within(self.drain(), timeout)
        self.close()

    def keepalive(self, idle: int, min_timeout: float) -> None:
        """TCP keepalive probes after ``idle`` s of silence (4, ``idle/4`` apart), and
        the same bound on unacknowledged data (probes stop while data is in flight,
        and retransmissions go on for many minutes): a peer whose machine vanished is
        noticed. A no-op where the options are missing."""
        sock = self.get_extra_info("socket")
        if sock is None:
            return
        interval, count = max(1, idle // 4), 4
        user_timeout = max(min_timeout, idle + interval * count)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT,
                            int(user_timeout * 1000))
        except (OSError, AttributeError):
            pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default if self.transport is None else self.transport.get_extra_info(name,
                                                                                     default)


Handler = Callable[[Connection], Awaitable[None]]


def _peer_uid(sock: socket.socket) -> int:
    """The user id of a Unix socket's peer (-1 where the OS does not say)."""
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return int(struct.unpack("3i", creds)[1])
    except (OSError, AttributeError, struct.error):
        return -1


async def _run(handler: Handler, conn: Connection) -> None:
    try:
        await handler(conn)
    except Exception:
        log.exception("connection handler failed for %s", conn.peer[0])
    finally:
        conn.close()


def _acceptor(handler: Handler, limits: Limits = PRE_AUTH,
              local: bool = False) -> type[Connection]:
    """A Connection class that runs ``handler(conn)`` as a task for each connection a
    server accepts (the tasks are kept until they end)."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task] = set()

    class _Accepted(Connection):
        def __init__(self) -> None:
            super().__init__(limits, local=local)

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            task = loop.create_task(_run(handler, self))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    return _Accepted


async def serve(handler: Handler, host: str | None, port: int,
                ssl_ctx: ssl.SSLContext | None = None, handshake_timeout: float = 10.0,
                **kw: Any) -> asyncio.AbstractServer:
    """Listen and run ``handler(conn)`` as a task for each accepted connection."""
    kwargs: dict[str, Any] = dict(kw)
    if ssl_ctx is not None:
        kwargs["ssl_handshake_timeout"] = handshake_timeout
    return await asyncio.get_running_loop().create_server(
        _acceptor(handler), host, port, ssl=ssl_ctx, **kwargs)


async def serve_unix(handler: Handler, path: str) -> asyncio.AbstractServer:
    """Listen on a Unix socket for local links (plain frames, full limits)."""
    return await asyncio.get_running_loop().create_unix_server(
        _acceptor(handler, FULL, local=True), path)


async def serve_peers(handler: Handler, sock: socket.socket) -> asyncio.AbstractServer:
    """Serve peers on a listening Unix socket as on TCP (handshake, sealed frames):
    the local path (wire/localpath.py)."""
    return await asyncio.get_running_loop().create_unix_server(_acceptor(handler),
                                                               sock=sock)
