"""A rogue TCP relay for tests: sits between a dispy program and a daemon on loopback,
forwards every byte (it is a plain router), and parses what passes (frames are only
authenticated, not encrypted) so a test can inject, tamper with or replay bytes
exactly between frames and records.

Each direction starts with plain handshake frames (client to daemon: hello and auth;
daemon to client: challenge), then carries sealed records (length, body, tag).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from dispy.wire import codec

C2S, S2C = "c2s", "s2c"
#: plain frames each direction carries before its records
PLAIN_FRAMES = {C2S: 2, S2C: 1}


@dataclass
class Unit:
    """One plain frame or one sealed record, as it passed."""

    direction: str
    kind: str  # "plain" or "record"
    raw: bytes
    frames: list[tuple[dict, list[bytes]]] = field(default_factory=list)

    def ops(self) -> list[str]:
        return [str(h.get("op")) for h, _ in self.frames]


def _record_size(head: bytes) -> int:
    (size,) = codec.RECLEN.unpack(head)
    return 8 + size + (32 if size < codec.GMAC_MIN else 16)


def _frames_of(body: bytes) -> list[tuple[dict, list[bytes]]]:
    dec = codec.FrameDecoder(codec.FULL)
    try:
        dec.feed(body)
        out = []
        while (frame := dec.next()) is not None:
            out.append((frame[0], [bytes(b) for b in frame[1]]))
        return out
    except codec.FrameError:
        return []


class _Direction:
    """Splits one direction's bytes into units; forwards each whole unit."""

    def __init__(self, link: Link, name: str) -> None:
        self.link, self.name = link, name
        self.buf = bytearray()
        self.plain_left = PLAIN_FRAMES[name]

    def _unit_size(self) -> int | None:
        if self.plain_left:
            if len(self.buf) < 8:
                return None
            hlen, nbufs = codec.PREFIX.unpack_from(self.buf)
            pos = 8 + hlen
            for _ in range(nbufs):
                if len(self.buf) < pos + 8:
                    return None
                pos += 8 + codec.BUFLEN.unpack_from(self.buf, pos)[0]
            return pos if len(self.buf) >= pos else None
        if len(self.buf) < 8:
            return None
        size = _record_size(bytes(self.buf[:8]))
        return size if len(self.buf) >= size else None

    def take(self, data: bytes) -> list[Unit]:
        self.buf += data
        units = []
        while (size := self._unit_size()) is not None:
            raw = bytes(self.buf[:size])
            del self.buf[:size]
            if self.plain_left:
                self.plain_left -= 1
                units.append(Unit(self.name, "plain", raw, _frames_of(raw)))
            else:
                (body,) = codec.RECLEN.unpack(raw[:8])
                units.append(Unit(self.name, "record", raw, _frames_of(raw[8:8 + body])))
        return units


class Link:
    """One relayed connection."""

    def __init__(self, relay: Relay, number: int) -> None:
        self.relay, self.number = relay, number
        self.units: list[Unit] = []
        self.writers: dict[str, asyncio.StreamWriter] = {}
        self.closed = False

    def records(self, direction: str) -> list[Unit]:
        return [u for u in self.units if u.direction == direction and u.kind == "record"]

    def sealed(self) -> bool:
        """Both sides sealed: the daemon's welcome went to the client."""
        return bool(self.records(S2C))

    def write(self, direction: str, data: bytes) -> None:
        """Put ``data`` on the wire towards the client (S2C) or the daemon (C2S)."""
        writer = self.writers[direction]
        if not writer.is_closing():
            writer.write(data)


#: decides what of a unit is forwarded (return the bytes to write, b"" to drop it)
Hook = Callable[[Link, Unit], bytes]


class Relay:
    """Listens on a free loopback port and relays to ``target``; runs its own event loop
    in a thread, so blocking tests (a JobCluster) can use it."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.links: list[Link] = []
        self.hook: Hook | None = None
        self.lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: asyncio.AbstractServer | None = None
        self.tasks: set[asyncio.Task] = set()

    def __enter__(self) -> Relay:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    async def _listen(self) -> None:
        self.server = await asyncio.start_server(self._accept, sock=self.sock)

    async def _close(self) -> None:
        assert self.server is not None
        self.server.close()
        for link in self.links:
            for writer in link.writers.values():
                writer.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def call(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` in the relay's loop (writes must happen there)."""
        self.loop.call_soon_threadsafe(fn)

    async def _accept(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter
                      ) -> None:
        try:
            dreader, dwriter = await asyncio.open_connection(*self.target)
        except OSError:
            cwriter.close()
            return
        with self.lock:
            link = Link(self, len(self.links))
            self.links.append(link)
        link.writers = {C2S: dwriter, S2C: cwriter}
        for reader, name in ((creader, C2S), (dreader, S2C)):
            task = asyncio.get_running_loop().create_task(self._pump(link, reader, name))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _pump(self, link: Link, reader: asyncio.StreamReader, name: str) -> None:
        parser = _Direction(link, name)
        writer = link.writers[name]
        try:
            while data := await reader.read(1 << 20):
                for unit in parser.take(data):
                    with self.lock:
                        link.units.append(unit)
                    out = unit.raw if self.hook is None else self.hook(link, unit)
                    if out and not writer.is_closing():
                        writer.write(out)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            link.closed = True
            for w in link.writers.values():
                with contextlib.suppress(Exception):
                    w.close()

    # ---- for tests --------------------------------------------------------------------

    def wait_for(self, test: Callable[[], object], timeout: float = 30.0) -> object:
        """Wait until ``test()`` is true (checked under the lock), return its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                value = test()
            if value:
                return value
            time.sleep(0.02)
        raise AssertionError("relay: condition not met in time")

    def find(self, direction: str, op: str) -> tuple[Link, Unit, dict] | None:
        """The first record (any link) carrying a frame of ``op``."""
        for link in self.links:
            for unit in link.records(direction):
                for header, _ in unit.frames:
                    if header.get("op") == op:
                        return link, unit, header
        return None


def forged_record(frames: list[tuple[dict, list[bytes]]], tag: bytes | None = None) -> bytes:
    """A record of ``frames`` with a tag made without the key (random by default)."""
    body = b"".join(bytes(p) for h, b in frames for p in codec.encode(h, b))
    size_tag = 32 if len(body) < codec.GMAC_MIN else 16
    return struct.pack("!Q", len(body)) + body + (tag or os.urandom(size_tag))


def plain_frame(header: dict, bufs: list[bytes]) -> bytes:
    return b"".join(bytes(p) for p in codec.encode(header, bufs))
