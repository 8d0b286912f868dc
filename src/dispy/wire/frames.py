"""Framed messages: a JSON header plus opaque binary buffers.

The header is plain JSON, so a daemon can read every message without unpickling
anything. Buffers carry pickled payloads (computation, arguments, results) and file
chunks; only the process that owns them (a job process, the client) unpickles them,
and only after the peer authenticated.

Layout: ``!II`` (header length, number of buffers), header bytes, then for each
buffer ``!Q`` length and its bytes.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from typing import Any

from . import heap

PREFIX = struct.Struct("!II")
BUFLEN = struct.Struct("!Q")

#: Limits for a peer that has not authenticated yet: small JSON, no buffers.
PRE_AUTH_MAX_HEADER = 64 * 1024
MAX_HEADER = 16 * 1024 * 1024
MAX_BUFFERS = 4096

Buffer = bytes | bytearray | memoryview
Message = tuple[dict[str, Any], list[bytes]]


class FrameError(Exception):
    """A frame that breaks the format or the limits; the connection is dropped."""


def encode(header: dict[str, Any], buffers: list[Buffer] | tuple = ()) -> list[Buffer]:
    """Return the pieces of one frame, ready to be written in order (no copies of buffers)."""
    head = json.dumps(header, separators=(",", ":")).encode()
    pieces: list[Buffer] = [PREFIX.pack(len(head), len(buffers)), head]
    for buf in buffers:
        pieces.append(BUFLEN.pack(memoryview(buf).nbytes))
        pieces.append(buf)
    return pieces


def _decode_header(raw: bytes) -> dict[str, Any]:
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise FrameError(f"header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise FrameError("header is not a JSON object")
    return header


def _check(hlen: int, nbufs: int, max_header: int, max_buffers: int) -> None:
    if hlen > max_header:
        raise FrameError(f"header of {hlen} bytes is over the limit of {max_header}")
    if nbufs > max_buffers:
        raise FrameError(f"{nbufs} buffers is over the limit of {max_buffers}")


async def read_frame(
    reader: asyncio.StreamReader,
    max_header: int = MAX_HEADER,
    max_buffers: int = MAX_BUFFERS,
    max_buffer: int = 1 << 31,
) -> Message:
    """Read one frame; raises FrameError on a malformed one, IncompleteReadError on EOF."""
    hlen, nbufs = PREFIX.unpack(await reader.readexactly(PREFIX.size))
    _check(hlen, nbufs, max_header, max_buffers)
    header = _decode_header(await reader.readexactly(hlen))
    buffers = []
    for _ in range(nbufs):
        (blen,) = BUFLEN.unpack(await reader.readexactly(BUFLEN.size))
        if blen > max_buffer:
            raise FrameError(f"buffer of {blen} bytes is over the limit of {max_buffer}")
        if blen >= BIG_READ:
            heap.note_big()
            buffers.append(await _read_big(reader, blen))
        else:
            buffers.append(await reader.readexactly(blen))
    return header, buffers


#: Buffers at least this big are read by ``_read_big``.
BIG_READ = 1 << 20


async def _read_big(reader: asyncio.StreamReader, n: int) -> bytes | bytearray:
    """``n`` bytes into one preallocated bytearray, moved out of the reader's buffer as
    they arrive: ``readexactly`` would first grow its buffer to ``n`` bytes (copying it
    on each reallocation) and then copy it out once more. Uses StreamReader internals
    (stable since 3.8); without them, falls back to ``readexactly``."""
    if not all(hasattr(reader, a) for a in ("_buffer", "_wait_for_data",
                                             "_maybe_resume_transport", "_eof")):
        return await reader.readexactly(n)
    out = bytearray(n)
    view = memoryview(out)
    got = 0
    while got < n:
        buf = reader._buffer  # type: ignore[attr-defined]
        if not buf:
            if reader._eof:  # type: ignore[attr-defined]
                raise asyncio.IncompleteReadError(bytes(view[:got]), n)
            await reader._wait_for_data("readexactly")  # type: ignore[attr-defined]
            continue
        k = min(len(buf), n - got)
        with memoryview(buf) as src:
            view[got:got + k] = src[:k]
        del buf[:k]
        got += k
        reader._maybe_resume_transport()  # type: ignore[attr-defined]
    view.release()
    return out


#: Pieces at least this big are written on their own (as memoryviews): joining them, as
#: ``writelines`` does, or slicing ``bytes`` after a partial send would copy them.
BIG_PIECE = 64 * 1024


def write_pieces(writer: asyncio.StreamWriter, pieces: list[Buffer]) -> None:
    """Write frame pieces with as few writes (syscalls) and copies as possible."""
    small: list[Buffer] = []
    for piece in pieces:
        size = piece.nbytes if isinstance(piece, memoryview) else len(piece)
        if size < BIG_PIECE:
            small.append(piece)
            continue
        if small:
            writer.write(b"".join(small))
            small = []
        if size >= BIG_READ:
            heap.note_big()
        writer.write(memoryview(piece).cast("B"))
    if small:
        writer.write(b"".join(small) if len(small) > 1 else small[0])


def write_frame(writer: asyncio.StreamWriter, header: dict, buffers: list | tuple = ()) -> None:
    """Queue one frame on an asyncio writer."""
    write_pieces(writer, encode(header, buffers))


class FrameBatch:
    """Frames for one connection, written together at the end of the loop iteration
    that produced them: a burst of results, jobs and acks then costs one send (and one
    wake-up of the peer) instead of one per frame. Whoever drains or closes the writer
    must ``flush`` first."""

    __slots__ = ("pieces",)

    def __init__(self) -> None:
        self.pieces: list[Buffer] = []

    def add(self, header: dict, buffers: list | tuple, flush: Any) -> None:
        """Queue a frame; ``flush`` (no arguments) is called once, soon, on the loop."""
        if not self.pieces:
            asyncio.get_running_loop().call_soon(flush)
        self.pieces += encode(header, buffers)

    def write_to(self, writer: asyncio.StreamWriter | None) -> None:
        """Write what is queued (dropped when the connection is gone)."""
        pieces, self.pieces = self.pieces, []
        if pieces and writer is not None and not writer.is_closing():
            write_pieces(writer, pieces)


# ---- blocking sockets (computation host and job processes) ---------------------------


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    """``n`` bytes, in one ``bytes`` received in place (no copy) when possible."""
    first = sock.recv(n, socket.MSG_WAITALL)
    if len(first) == n:
        return first
    if not first:
        raise EOFError("peer closed the connection")
    buf = bytearray(n)
    buf[:len(first)] = first
    got = len(first)
    view = memoryview(buf)
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            raise EOFError("peer closed the connection")
        got += k
    return bytes(buf)


def recv_frame_sync(sock: socket.socket, max_header: int = MAX_HEADER) -> Message:
    """Blocking read of one frame; EOFError when the peer is gone."""
    hlen, nbufs = PREFIX.unpack(_recv_exactly(sock, PREFIX.size))
    _check(hlen, nbufs, max_header, MAX_BUFFERS)
    header = _decode_header(_recv_exactly(sock, hlen))
    buffers = []
    for _ in range(nbufs):
        (blen,) = BUFLEN.unpack(_recv_exactly(sock, BUFLEN.size))
        buffers.append(_recv_exactly(sock, blen))
    return header, buffers


class SyncFrameReader:
    """Blocking frame reads through a buffer: one ``recv`` usually brings a whole frame
    (or several), where reading piece by piece costs 4 + 2 per buffer syscalls. Big
    buffers are received straight from the socket. Whoever waits with ``select`` must
    first handle what ``buffered`` says is already here."""

    CHUNK = 64 * 1024

    def __init__(self, sock: socket.socket, max_header: int = MAX_HEADER) -> None:
        self.sock = sock
        self.max_header = max_header
        self._buf = bytearray()
        self._pos = 0

    def buffered(self) -> bool:
        """True when a whole frame is already in the buffer."""
        buf, pos, end = self._buf, self._pos, len(self._buf)
        if end - pos < PREFIX.size:
            return False
        hlen, nbufs = PREFIX.unpack_from(buf, pos)
        pos += PREFIX.size + hlen
        for _ in range(nbufs):
            if end - pos < BUFLEN.size:
                return False
            (blen,) = BUFLEN.unpack_from(buf, pos)
            pos += BUFLEN.size + blen
        return pos <= end

    def _need(self, n: int) -> None:
        while len(self._buf) - self._pos < n:
            if self._pos and self._pos == len(self._buf):
                self._buf.clear()
                self._pos = 0
            chunk = self.sock.recv(max(self.CHUNK, n - (len(self._buf) - self._pos)))
            if not chunk:
                raise EOFError("peer closed the connection")
            self._buf += chunk

    def _take(self, n: int) -> bytes:
        self._need(n)
        start = self._pos
        self._pos += n
        data = bytes(self._buf[start:self._pos])
        if self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        elif self._pos > (1 << 20):
            del self._buf[:self._pos]
            self._pos = 0
        return data

    def _take_big(self, n: int) -> bytes | bytearray:
        avail = len(self._buf) - self._pos
        if avail >= n:
            return self._take(n)
        if avail == 0:
            return _recv_exactly(self.sock, n)
        out = bytearray(n)
        out[:avail] = memoryview(self._buf)[self._pos:]
        self._buf.clear()
        self._pos = 0
        view = memoryview(out)
        got = avail
        while got < n:
            k = self.sock.recv_into(view[got:])
            if k == 0:
                raise EOFError("peer closed the connection")
            got += k
        return out

    def read_frame(self) -> Message:
        """Blocking read of one frame; EOFError when the peer is gone."""
        hlen, nbufs = PREFIX.unpack(self._take(PREFIX.size))
        _check(hlen, nbufs, self.max_header, MAX_BUFFERS)
        header = _decode_header(self._take(hlen))
        buffers: list[Any] = []
        for _ in range(nbufs):
            (blen,) = BUFLEN.unpack(self._take(BUFLEN.size))
            buffers.append(self._take_big(blen) if blen >= self.CHUNK else self._take(blen))
        return header, buffers


def send_frame_sync(sock: socket.socket, header: dict, buffers: list | tuple = ()) -> None:
    """Blocking write of one frame."""
    pieces = encode(header, buffers)
    total = sum(memoryview(p).nbytes for p in pieces)
    if total < 65536:
        sock.sendall(b"".join(pieces))
    else:
        for piece in pieces:
            sock.sendall(piece)
