"""Big frame buffers are received into new ``bytes`` in place (wire/freshbytes.py), so an
8 MB argument or result is not copied again when it is unpickled."""

from __future__ import annotations

import gc
import os
import socket

import pytest

from dispy.wire import freshbytes, oob
from dispy.wire.codec import BIG, FIRST_ALLOCATION, FULL, FrameDecoder, Sealer, encode
from dispy.wire.sync import SyncFrameReader, send_frame_sync

pytestmark = pytest.mark.timeout(60)

KEY = bytes(range(32))


def test_fresh_is_bytes_filled_through_its_view():
    obj, view = freshbytes.fresh(100_000)
    assert type(obj) is bytes and len(obj) == 100_000 and len(view) == 100_000
    data = os.urandom(100_000)
    view[:] = data
    assert obj == data


@pytest.mark.parametrize("size", [0, 1])
def test_tiny_sizes_are_never_shared_singletons(size):
    obj, view = freshbytes.fresh(size)
    assert len(obj) == size and not view.readonly
    view[:] = b"z" * size
    assert b"" == b"" and b"\0" == bytes(1)  # the interpreter's own objects untouched


def test_view_keeps_its_bytes_alive():
    obj, view = freshbytes.fresh(BIG)
    del obj
    gc.collect()
    freshbytes.fresh(BIG)  # would reuse the memory of a freed object
    view[:] = b"q" * BIG
    assert bytes(view[:3]) == b"qqq"


def frames_of(header: dict, bufs: list) -> bytes:
    return b"".join(bytes(p) for p in encode(header, bufs))


def test_decoded_big_buffer_is_bytes_and_unpickles_uncopied():
    value = os.urandom(3 * BIG)
    data, bufs = oob.dumps(value)
    dec = FrameDecoder()
    wire = frames_of({"op": "r", "oob": len(bufs)}, [data, *bufs])
    for i in range(0, len(wire), 7777):  # in pieces, as a socket delivers them
        dec.feed(wire[i:i + 7777])
    header, got = dec.next()
    assert type(got[-1]) is bytes
    result = oob.loads(got[0], got[1:])
    assert result == value and result is got[-1]


def test_buffer_past_the_first_allocation_grows_into_bytes():
    size = FIRST_ALLOCATION + BIG + 5
    value = os.urandom(size)
    dec = FrameDecoder()
    wire = frames_of({}, [value])
    step = 1 << 20
    for i in range(0, len(wire), step):
        dec.feed(wire[i:i + step])
    _, got = dec.next()
    assert type(got[0]) is bytes and got[0] == value


def test_sync_reads_give_bytes():
    value = os.urandom(2 * BIG + 1)
    a, b = socket.socketpair()
    try:
        send_frame_sync(a, {"op": "x"}, [value, b"small"])
        header, got = SyncFrameReader(b).read_frame()
    finally:
        a.close()
        b.close()
    assert header == {"op": "x"} and type(got[0]) is bytes and got[0] == value
    assert got[1] == b"small"


def test_sealed_reads_give_bytes():
    value = os.urandom(5 * BIG)
    pieces = encode({"op": "s"}, [value])
    wire = b"".join(bytes(p) for p in Sealer(KEY).seal(pieces))
    dec = FrameDecoder()
    dec.seal(KEY, FULL)
    for i in range(0, len(wire), 65000):
        dec.feed(wire[i:i + 65000])
    header, got = dec.next()
    assert header == {"op": "s"} and type(got[0]) is bytes and got[0] == value
