"""Frames as bytes, without I/O: one encoder, one decoder fed with bytes.

A frame is a JSON header plus opaque binary buffers: ``!II`` (header length, number of
buffers), the header, then for each buffer ``!Q`` its length and its bytes. The header
is plain JSON, so a daemon reads every message without unpickling anything.

Two kinds of stream carry frames:

- **plain**: frames back to back. Used for the handshake (small headers, no buffers)
  and for local links that the filesystem protects (a node's computation host and job
  processes).
- **sealed**, after a handshake: records, each ``!Q`` body length, the body (one or more
  whole frames) and a tag over the record's sequence number, its length and its body,
  with a subkey of that direction's key (``RecordKeys``: one per algorithm, so no key
  serves two): keyed BLAKE2b (32 bytes; RFC 7693's MAC mode) for records under
  ``GMAC_MIN`` bytes, GMAC (AES-GCM over authenticated data only, 16 bytes) with a
  one-time key HMAC-SHA256(GMAC subkey, sequence number) and so a fixed nonce for
  bigger ones. BLAKE2b, not HMAC-SHA256, for the small ones: four of them per
  job's round trip, and OpenSSL 3's one-shot HMAC costs 3-5 us each in a daemon's loop
  against about 1 us (a sequential round trip 9 % shorter). GMAC, not Poly1305, for
  the big ones: 8 MB in 0.5 ms against 0.8 here, and the payload workload (which MACs
  each 8 MB four times) ran a third faster with it. The decoder
  releases a record's frames only after its tag checks, so nothing in a frame is acted
  on, parsed as JSON or unpickled before it is known to come from the authenticated
  peer, in order, unaltered.

The decoder is sans-I/O (after h11): ``get_buffer``/``received`` fit
``asyncio.BufferedProtocol`` and let the kernel write big buffers in place, while
``feed`` serves blocking sockets and tests. Buffers are allocated as their bytes
arrive, so a declared size alone never makes a process allocate memory.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from hashlib import blake2b
from typing import Any, NamedTuple, Protocol

import orjson

from . import freshbytes

PREFIX = struct.Struct("!II")
BUFLEN = struct.Struct("!Q")
RECLEN = struct.Struct("!Q")
SEQ = struct.Struct("!Q")
#: records at least this big are tagged with GMAC, smaller ones with keyed BLAKE2b
GMAC_MIN = 256 * 1024
#: most bytes of a sealed record's body read at once into a big buffer: each piece is
#: MACed right after the kernel wrote it, while it is still in the CPU's cache (reading
#: megabytes at once and MACing them afterwards reads them from memory a second time)
MAC_CHUNK = 256 * 1024

#: Limits for a peer that has not authenticated yet: small JSON, no buffers.
PRE_AUTH_MAX_HEADER = 64 * 1024
MAX_HEADER = 16 * 1024 * 1024
MAX_BUFFERS = 4096
#: Buffers at least this big get a buffer of their own, filled in place.
BIG = 64 * 1024
#: A big buffer gets this much memory at once (or its size, if smaller); beyond it,
#: memory grows with what arrived, so a declared size alone cannot make us allocate.
FIRST_ALLOCATION = 16 << 20
#: The sender starts a new record once a record's body is this big.
RECORD_TARGET = 1 << 20

Buffer = bytes | bytearray | memoryview
Header = dict[str, Any]
Message = tuple[Header, list[Any]]


class FrameError(Exception):
    """A frame that breaks the format, the limits or its tag; the connection is dropped."""


class Limits(NamedTuple):
    max_header: int = MAX_HEADER
    max_buffers: int = MAX_BUFFERS
    max_buffer: int = 1 << 31


PRE_AUTH = Limits(PRE_AUTH_MAX_HEADER, 0, 0)
FULL = Limits()


#: orjson as ``json`` would: int keys as strings; dataclasses, datetimes and subclasses
#: of str/int/dict/list refused (so they go to ``json``, which decides as before).
_ORJSON = (orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS
           | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS)


def to_json(value: Any) -> bytes:
    """Compact JSON. orjson (C: 0.35 instead of 4 us for a job's header, several per
    job in each process) where it can; ``json`` for what orjson refuses (an int over
    64 bits, a lone surrogate, a subclass). NaN and infinities become null (valid JSON:
    a header never needs them; ``json`` wrote tokens that only Python reads)."""
    try:
        return orjson.dumps(value, option=_ORJSON)
    except TypeError:
        return json.dumps(value, separators=(",", ":")).encode()


def to_json_kept(value: Any) -> bytes:
    """``to_json`` for text kept in memory (a journal's state): a right-sized copy, so
    orjson's 1 KiB buffer is freed at once (see ``encode_sized``)."""
    return bytes(memoryview(to_json(value)))


_decode = json.JSONDecoder().decode


def from_json(raw: bytes | bytearray | memoryview) -> Any:
    """``to_json`` reversed; ValueError (or RecursionError) for what is not JSON. What
    orjson refuses is given to ``json`` (NaN, numbers beyond a double) as before; an
    integer past 64 bits reads as a float (a typed field then refuses it)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _decode(bytes(raw).decode())


def dumps(header: Header) -> bytes:
    return to_json(header)


def loads(raw: bytes | bytearray) -> Header:
    try:
        header = from_json(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise FrameError(f"header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise FrameError("header is not a JSON object")
    return header


def nbytes(piece: Buffer) -> int:
    return piece.nbytes if isinstance(piece, memoryview) else len(piece)


def encode(header: Header, buffers: Sequence[Buffer] = ()) -> list[Buffer]:
    """The pieces of one frame, in order (buffers are not copied)."""
    return encode_sized(header, buffers)[0]


def encode_sized(header: Header, buffers: Sequence[Buffer] = ()) -> tuple[list[Buffer], int,
                                                                          bool]:
    """``encode``, with the frame's size and whether it holds a big buffer."""
    head = dumps(header)
    # one new bytes, and orjson's own freed at once: orjson makes 1 KiB and shrinks it,
    # and thousands of those kept until a flush (a batch to 1 000 nodes) leave holes no
    # next header fits in: each dumps then takes fresh memory, 1.1 us instead of 0.2
    pieces: list[Buffer] = [PREFIX.pack(len(head), len(buffers)) + head]
    size, big = PREFIX.size + len(head), False
    for buf in buffers:
        n = buf.nbytes if isinstance(buf, memoryview) else len(buf)
        pieces.append(BUFLEN.pack(n))
        pieces.append(buf)
        size += BUFLEN.size + n
        big = big or n >= BIG
    return pieces, size, big


class _Mac(Protocol):
    def update(self, data: Buffer) -> None: ...


class RecordKeys(NamedTuple):
    """The keys one direction's records are tagged with, derived from its key."""

    small: bytes  # keyed BLAKE2b
    big: bytes  # derives GMAC's one-time keys

    @classmethod
    def of(cls, key: bytes) -> RecordKeys:
        return cls(hmac.new(key, b"dispy record|blake2b", hashlib.sha256).digest(),
                   hmac.new(key, b"dispy record|gmac", hashlib.sha256).digest())


def record_mac(keys: RecordKeys, seq: int, head: bytes, size: int) -> tuple[_Mac, int]:
    """The MAC of record ``seq`` (its length already fed) and its tag size."""
    if size < GMAC_MIN:
        return hashlib.blake2b(SEQ.pack(seq) + head, key=keys.small, digest_size=32), 32
    one_time = hmac.new(keys.big, SEQ.pack(seq), hashlib.sha256).digest()
    mac = _Gmac(one_time)
    mac.update(SEQ.pack(seq) + head)
    return mac, 16


class _Gmac:
    """GMAC: AES-GCM over authenticated data only, with a key used for one record."""

    __slots__ = ("_enc",)

    def __init__(self, key: bytes) -> None:
        cipher = _GCM or load_gmac()
        self._enc = cipher(key)

    def update(self, data: Buffer) -> None:
        self._enc.authenticate_additional_data(data)

    def finalize(self) -> bytes:
        self._enc.finalize()
        return bytes(self._enc.tag)


_GCM_NONCE = bytes(12)  # each key tags one record only
#: key -> AES-GCM encryptor, once ``load_gmac`` ran
_GCM: Callable[[bytes], Any] | None = None


def load_gmac() -> Callable[[bytes], Any]:
    """Import AES-GCM (cryptography's, 7 ms here) now. It tags only records of
    ``GMAC_MIN`` bytes and more (big arguments or results, or a burst of small frames
    written together), so a program loads it with its first such record, not at import:
    a program of a few small jobs never does. Daemons load it before they serve, as the
    job processes they fork never seal (their links are plain)."""
    global _GCM
    if _GCM is None:
        from cryptography.hazmat.primitives.ciphers import Cipher
        from cryptography.hazmat.primitives.ciphers.algorithms import AES
        from cryptography.hazmat.primitives.ciphers.modes import GCM

        def encryptor(key: bytes) -> Any:
            return Cipher(AES(key), GCM(_GCM_NONCE)).encryptor()
        _GCM = encryptor
    return _GCM


def tag_of(mac: Any) -> bytes:
    return mac.finalize() if isinstance(mac, _Gmac) else mac.digest()


class Sealer:
    """Wraps frame pieces into authenticated records for one direction."""

    def __init__(self, key: bytes) -> None:
        self.keys = RecordKeys.of(key)
        self.seq = 0

    def seal(self, pieces: list[Buffer], size: int | None = None) -> list[Buffer]:
        """Pieces of whole frames -> pieces of one record (body not copied)."""
        if size is None:
            size = sum(nbytes(p) for p in pieces)
        head = RECLEN.pack(size)
        if size < BIG:  # small: one join, one C call for the tag
            body = b"".join(pieces)
            tag = blake2b(SEQ.pack(self.seq) + head + body, key=self.keys.small,
                          digest_size=32).digest()
            self.seq += 1
            return [head + body + tag]
        return list(self.stream(pieces, size))  # big: the pieces as a socket gets them

    def stream(self, pieces: list[Buffer], size: int) -> Iterator[Buffer]:
        """The pieces of one record as ``seal`` makes them, with big pieces cut into
        ``MAC_CHUNK`` views, each MACed just before it is handed on: written to the socket
        right away, the kernel copies it while it is still in the CPU's cache."""
        # every piece as a byte view first: a piece that cannot be one (not contiguous)
        # fails here, before any byte of the record is written or the sequence moves on
        views = [memoryview(piece).cast("B") for piece in pieces]
        head = RECLEN.pack(size)
        mac, _ = record_mac(self.keys, self.seq, head, size)
        self.seq += 1
        yield head
        for view in views:
            n = view.nbytes
            if n <= MAC_CHUNK:
                mac.update(view)
                yield view
                continue
            for start in range(0, n, MAC_CHUNK):
                chunk = view[start:start + MAC_CHUNK]
                mac.update(chunk)
                yield chunk
        yield tag_of(mac)


# ---- decoder -------------------------------------------------------------------------

_PREFIX, _HEADER, _BUFLEN, _BUF = range(4)
#: no big buffer being received (one shared empty view: a client has 1 000 parsers)
_NO_VIEW = memoryview(b"")


class _FrameParser:
    """Frames from a stream of bytes (the body of records, or a plain stream)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.state = _PREFIX
        self.need = PREFIX.size
        self.acc = bytearray()
        self.header = b""
        self.left = 0  # buffers still to read in this frame
        self.bufs: list[Any] = []
        #: a big buffer being received in place (freshbytes), and its writable view
        self.big: bytes | bytearray | None = None
        self.bigview = _NO_VIEW
        self.filled = 0
        self.blen = 0
        self.done: list[tuple[bytes, list[Any]]] = []

    def at_boundary(self) -> bool:
        return self.state == _PREFIX and not self.acc

    def direct(self) -> memoryview | None:
        """Where the next bytes of a big buffer go, or None."""
        if self.state != _BUF or self.big is None:
            return None
        if self.filled == len(self.big):
            self._grow()
        return self.bigview[self.filled:]

    def _grow(self) -> None:
        assert self.big is not None
        size = min(self.blen, max(FIRST_ALLOCATION, 2 * len(self.big)))
        bigger, view = freshbytes.fresh(size)
        view[:self.filled] = self.bigview[:self.filled]
        self.big, self.bigview = bigger, view

    def filled_direct(self, n: int) -> None:
        self.filled += n
        if self.filled == self.blen:
            self._buffer_done(self.big)

    def _whole_frames(self, data: memoryview, pos: int, end: int) -> int:
        """Frames that lie whole in ``data`` from ``pos``, parsed in one pass (the common
        case of small frames); returns where the first partial or big one starts."""
        lim = self.limits
        while end - pos >= 8:
            hlen, nbufs = PREFIX.unpack_from(data, pos)
            if hlen > lim.max_header or nbufs > lim.max_buffers or hlen >> 24 in (0x15, 0x16):
                break  # the slow path raises the error
            p = pos + 8 + hlen
            if p > end:
                break
            bufs = []
            for _ in range(nbufs):
                if end - p < 8:
                    return pos
                (blen,) = BUFLEN.unpack_from(data, p)
                if blen >= BIG or blen > lim.max_buffer or end - p - 8 < blen:
                    return pos
                p += 8 + blen
                bufs.append(bytes(data[p - blen:p]))
            self.done.append((bytes(data[pos + 8:pos + 8 + hlen]), bufs))
            pos = p
        return pos

    def consume(self, data: memoryview) -> None:
        """Take all of ``data``; finished frames collect in ``done``."""
        pos, end = 0, len(data)
        while pos < end:
            if self.state == _PREFIX and not self.acc:
                start = pos
                pos = self._whole_frames(data, pos, end)
                if pos == end:
                    break
                if pos != start:
                    continue
            if self.state == _BUF and self.big is not None:
                target = self.direct()
                assert target is not None
                k = min(len(target), end - pos)
                target[:k] = data[pos:pos + k]
                target.release()
                pos += k
                self.filled_direct(k)
                continue
            need = self.need
            if not self.acc and end - pos >= need:  # whole piece here: one copy
                pos += need
                self._step(bytes(data[pos - need:pos]))
                continue
            k = min(need - len(self.acc), end - pos)
            self.acc += data[pos:pos + k]
            pos += k
            if len(self.acc) == need:
                piece, self.acc = bytes(self.acc), bytearray()
                self._step(piece)

    def _step(self, piece: bytes) -> None:
        lim = self.limits
        if self.state == _PREFIX:
            if piece[:2] in (b"\x15\x03", b"\x16\x03"):
                raise FrameError("the peer speaks TLS (a TLS record came instead of a frame)")
            hlen, nbufs = PREFIX.unpack(piece)
            if hlen > lim.max_header:
                raise FrameError(f"header of {hlen} bytes is over the limit of {lim.max_header}")
            if nbufs > lim.max_buffers:
                raise FrameError(f"{nbufs} buffers is over the limit of {lim.max_buffers}")
            self.left = nbufs
            self.state, self.need = _HEADER, hlen
            if hlen == 0:
                self._step(b"")
        elif self.state == _HEADER:
            self.header = piece
            self._next_buffer()
        elif self.state == _BUFLEN:
            (blen,) = BUFLEN.unpack(piece)
            if blen > lim.max_buffer:
                raise FrameError(f"buffer of {blen} bytes is over the limit of {lim.max_buffer}")
            self.left -= 1
            self.blen = blen
            self.state = _BUF
            if blen >= BIG:
                self.big, self.bigview, self.filled = b"", _NO_VIEW, 0
            elif blen == 0:
                self._buffer_done(b"")
            else:
                self.need = blen
        else:
            self._buffer_done(piece)

    def _buffer_done(self, buf: Any) -> None:
        self.bufs.append(buf)
        self.big, self.bigview = None, _NO_VIEW
        self._next_buffer()

    def _next_buffer(self) -> None:
        if self.left:
            self.state, self.need = _BUFLEN, BUFLEN.size
            return
        self.done.append((self.header, self.bufs))
        self.header, self.bufs = b"", []
        self.state, self.need = _PREFIX, PREFIX.size


_REC_HEAD, _REC_BODY, _REC_TAG = range(3)


_THREAD = threading.local()


def _scratch() -> bytearray:
    """This thread's read buffer (FrameDecoder.SCRATCH)."""
    buf: bytearray | None = getattr(_THREAD, "scratch", None)
    if buf is None:
        buf = _THREAD.scratch = bytearray(FrameDecoder.SCRATCH)
    return buf


class FrameDecoder:
    """Bytes in, frames out. Plain until ``seal`` is called with the peer's key; then
    every byte must belong to a record whose tag checks.

    ``hold`` (for handshakes) parses one frame at a time: bytes after a frame wait until
    that frame is taken, so a switch to sealed records happens exactly between frames."""

    #: where socket reads land before they are parsed: one buffer per thread, shared by
    #: its connections (``received`` copies everything out before the next read), so a
    #: client with 1 000 node links does not hold 1 000 of them
    SCRATCH = 256 * 1024

    def __init__(self, limits: Limits = FULL, hold: bool = False) -> None:
        self.frames: deque[tuple[bytes, list[Any]]] = deque()
        self._parser = _FrameParser(limits)
        self._hold = hold
        self._held = b""
        self._key: RecordKeys | None = None
        self._seq = 0
        self._rstate = _REC_HEAD
        self._racc = bytearray()
        self._body_left = 0
        self._mac: Any = None
        self._tag_size = 32
        self._max_record = 0

    # -- feeding --

    def get_buffer(self) -> memoryview:
        """Where the next received bytes should be written (``received`` tells how many)."""
        if not self._held:
            target = self._parser.direct()
            if target is not None:
                if self._key is None:
                    return target
                if self._rstate == _REC_BODY:
                    return target[:min(self._body_left, MAC_CHUNK)]
                target.release()
        return memoryview(_scratch())

    def received(self, n: int) -> None:
        """``n`` bytes were written into the last ``get_buffer``."""
        if not self._held:
            target = self._parser.direct()
            if target is not None and (self._key is None or self._rstate == _REC_BODY):
                if self._key is not None:
                    self._mac.update(target[:n])
                    self._body_left -= n
                target.release()
                self._parser.filled_direct(n)
                if self._key is not None and self._body_left == 0:
                    self._rstate, self._racc = _REC_TAG, bytearray()
                self._collect()
                return
            if target is not None:
                target.release()
        with memoryview(_scratch()) as view:
            self.feed(view[:n])

    def feed(self, data: Buffer) -> None:
        """Decode ``data`` (copied as needed); finished frames are appended to ``frames``."""
        view = memoryview(data).cast("B")
        if self._held:
            self._held += bytes(view)
            return
        if self._key is None:
            self._feed_plain(view)
        else:
            self._feed_sealed(view)

    def _feed_plain(self, view: memoryview) -> None:
        if not self._hold:
            try:
                self._parser.consume(view)
            finally:  # frames whole before bad bytes are taken too, as with records
                self._collect()
            return
        # one frame at a time: feed byte ranges until a frame completes, hold the rest
        pos = 0
        while pos < len(view):
            p = self._parser
            big = p.state == _BUF and p.big is not None
            step = p.blen - p.filled if big else p.need - len(p.acc)
            k = min(max(step, 1), len(view) - pos)
            p.consume(view[pos:pos + k])
            pos += k
            if p.done:
                self._collect()
                if pos < len(view):
                    self._held = bytes(view[pos:])
                return

    def _feed_sealed(self, view: memoryview) -> None:
        pos, end = 0, len(view)
        while pos < end:
            if (self._rstate == _REC_HEAD and not self._racc and end - pos >= RECLEN.size
                    and self._parser.at_boundary()):
                taken = self._whole_record(view, pos, end)
                if taken:
                    pos += taken
                    continue
            if self._rstate == _REC_BODY:
                k = min(self._body_left, end - pos)
                chunk = view[pos:pos + k]
                self._mac.update(chunk)
                self._parser.consume(chunk)
                pos += k
                self._body_left -= k
                if self._body_left == 0:
                    self._rstate, self._racc = _REC_TAG, bytearray()
                continue
            need = RECLEN.size if self._rstate == _REC_HEAD else self._tag_size
            k = min(need - len(self._racc), end - pos)
            self._racc += view[pos:pos + k]
            pos += k
            if len(self._racc) < need:
                continue
            if self._rstate == _REC_HEAD:
                self._open_record(bytes(self._racc))
            else:
                self._close_record(bytes(self._racc))

    def _whole_record(self, view: memoryview, pos: int, end: int) -> int:
        """A small record that lies whole in ``view``: its tag checked with one C call,
        then its frames parsed; returns the bytes taken (0: not such a record)."""
        (size,) = RECLEN.unpack_from(view, pos)
        total = RECLEN.size + size + 32
        if size >= BIG or end - pos < total:
            return 0
        assert self._key is not None
        signed = bytes(view[pos:pos + RECLEN.size + size])
        tag = bytes(view[pos + RECLEN.size + size:pos + total])
        if not hmac.compare_digest(
                blake2b(SEQ.pack(self._seq) + signed, key=self._key.small, digest_size=32).digest(),
                tag):
            raise FrameError(f"record {self._seq} failed its authentication tag (tampered, "
                             "replayed, reordered or not from the authenticated peer)")
        self._parser.consume(memoryview(signed)[RECLEN.size:])
        if not self._parser.at_boundary():
            raise FrameError("record ends inside a frame")
        self._seq += 1
        self._collect()
        return total

    def _open_record(self, head: bytes) -> None:
        (size,) = RECLEN.unpack(head)
        if size > self._max_record:
            raise FrameError(f"record of {size} bytes is over the limit of {self._max_record}")
        assert self._key is not None
        self._mac, self._tag_size = record_mac(self._key, self._seq, head, size)
        self._body_left = size
        self._rstate, self._racc = (_REC_BODY if size else _REC_TAG), bytearray()

    def _close_record(self, tag: bytes) -> None:
        if not hmac.compare_digest(tag_of(self._mac), tag):
            raise FrameError(f"record {self._seq} failed its authentication tag (tampered, "
                             "replayed, reordered or not from the authenticated peer)")
        if not self._parser.at_boundary():
            raise FrameError("record ends inside a frame")
        self._seq += 1
        self._rstate, self._racc = _REC_HEAD, bytearray()
        self._collect()

    def _collect(self) -> None:
        if self._key is not None and self._rstate != _REC_HEAD:
            return  # frames of an unfinished record wait for its tag
        done = self._parser.done
        if done:
            self.frames.extend(done)
            done.clear()

    # -- taking frames --

    def next_raw(self) -> tuple[bytes, list[Any]] | None:
        """The next whole frame as (header bytes, buffers), or None."""
        if not self.frames:
            return None
        frame = self.frames.popleft()
        if self._held and not self.frames:
            held, self._held = self._held, b""
            self.feed(held)
        return frame

    def next(self) -> Message | None:
        """The next whole frame with its header parsed, or None."""
        raw = self.next_raw()
        return None if raw is None else (loads(raw[0]), raw[1])

    @property
    def records(self) -> int:
        """Sealed records taken so far: the number the next one must carry."""
        return self._seq

    @records.setter
    def records(self, n: int) -> None:
        self._seq = n

    def seal(self, key: bytes, limits: Limits) -> None:
        """From now on the peer sends records tagged with ``key``."""
        if self.frames or not self._parser.at_boundary():
            # a frame begun in plain bytes must not be finished by sealed ones
            raise FrameError("frames arrived before the handshake finished")
        self._key = RecordKeys.of(key)
        self._parser.limits = limits
        self._max_record = limits.max_header + 2 * limits.max_buffer + (1 << 20)
        self._hold = False
        held, self._held = self._held, b""
        if held:
            self.feed(held)
