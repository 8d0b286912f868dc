"""Frames over blocking sockets, for the computation host and job processes.

The same sans-I/O decoder as every asyncio link: one ``recv`` usually brings a whole
frame (or several), and a big buffer is received in place.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

from .codec import FULL, Buffer, FrameDecoder, Header, Limits, Message, encode, nbytes
from .records import Record


class SyncFrameReader:
    """Blocking frame reads from a local, trusted socket. Whoever waits with ``select``
    must first handle what ``buffered`` says is already here."""

    def __init__(self, sock: socket.socket, limits: Limits = FULL) -> None:
        self.sock = sock
        self.decoder = FrameDecoder(limits)

    def buffered(self) -> bool:
        """True when a whole frame is already decoded."""
        return bool(self.decoder.frames)

    def read_frame(self) -> Message:
        """Blocking read of one frame; EOFError when the peer is gone."""
        while True:
            frame = self.decoder.next()
            if frame is not None:
                return frame
            n = self.sock.recv_into(self.decoder.get_buffer())
            if n == 0:
                raise EOFError("peer closed the connection")
            self.decoder.received(n)


def send_frame_sync(sock: socket.socket, header: Header | Record,
                    buffers: Sequence[Buffer] = ()) -> None:
    """Blocking write of one frame (a record is sent as its ``header()``)."""
    if isinstance(header, Record):
        header = header.header()
    pieces = encode(header, buffers)
    if sum(nbytes(p) for p in pieces) < 65536:
        sock.sendall(b"".join(pieces))
    else:
        for piece in pieces:
            sock.sendall(piece)
