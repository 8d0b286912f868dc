"""Frame encoding and decoding: round trips and every limit of read_frame."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading

import pytest
from dispy.wire.frames import FrameError, encode, read_frame, recv_frame_sync, send_frame_sync
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispy.wire import frames

pytestmark = pytest.mark.timeout(30)

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12,
)
headers = st.dictionaries(st.text(max_size=10), json_values, max_size=6)
buffer_lists = st.lists(st.binary(max_size=300), max_size=6)


def joined(header, buffers=()) -> bytes:
    return b"".join(bytes(p) for p in encode(header, buffers))


def read_bytes(data: bytes, eof: bool = True, **limits):
    async def run():
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        if eof:
            reader.feed_eof()
        return await read_frame(reader, **limits)

    return asyncio.run(run())


def raw_frame(head: bytes, buffers=()) -> bytes:
    out = frames.PREFIX.pack(len(head), len(buffers)) + head
    for buf in buffers:
        out += frames.BUFLEN.pack(len(buf)) + buf
    return out


@SETTINGS
@given(headers, buffer_lists)
def test_async_round_trip(header, buffers):
    got_header, got_buffers = read_bytes(joined(header, buffers))
    assert got_header == json.loads(json.dumps(header))
    assert got_buffers == buffers


@SETTINGS
@given(headers, buffer_lists)
def test_sync_round_trip(header, buffers):
    a, b = socket.socketpair()
    with a, b:
        send_frame_sync(a, header, buffers)
        got_header, got_buffers = recv_frame_sync(b)
    assert got_header == json.loads(json.dumps(header))
    assert got_buffers == buffers


def test_sync_large_buffers_are_sent_piecewise():
    big = bytes(range(256)) * 1024  # 256 KiB > 64 KiB: the piecewise path
    a, b = socket.socketpair()
    with a, b:
        sender = threading.Thread(target=send_frame_sync, args=(a, {"op": "x"}, [big, b"t"]))
        sender.start()
        header, buffers = recv_frame_sync(b)
        sender.join(10)
    assert header == {"op": "x"}
    assert buffers == [big, b"t"]


def test_encode_accepts_memoryview_and_bytearray():
    data = joined({"a": 1}, [memoryview(b"abc"), bytearray(b"de")])
    assert read_bytes(data) == ({"a": 1}, [b"abc", b"de"])


def test_several_frames_in_one_stream():
    data = joined({"n": 1}, [b"x"]) + joined({"n": 2})

    async def run():
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return [await read_frame(reader), await read_frame(reader)]

    assert asyncio.run(run()) == [({"n": 1}, [b"x"]), ({"n": 2}, [])]


def test_header_over_max_header():
    data = joined({"pad": "x" * 200})
    with pytest.raises(FrameError, match="header"):
        read_bytes(data, max_header=100)
    assert read_bytes(data, max_header=len(data))[0]["pad"] == "x" * 200


def test_header_length_checked_before_reading_it():
    # A huge announced header is refused from the prefix alone (no data follows).
    data = frames.PREFIX.pack(frames.PRE_AUTH_MAX_HEADER + 1, 0)
    with pytest.raises(FrameError):
        read_bytes(data, eof=False, max_header=frames.PRE_AUTH_MAX_HEADER)


def test_too_many_buffers():
    with pytest.raises(FrameError, match="buffers"):
        read_bytes(joined({}, [b"a", b"b", b"c"]), max_buffers=2)
    with pytest.raises(FrameError, match="buffers"):
        read_bytes(joined({}, [b"a"]), max_buffers=0)
    assert read_bytes(joined({}, [b"a", b"b"]), max_buffers=2) == ({}, [b"a", b"b"])


def test_buffer_over_max_buffer():
    with pytest.raises(FrameError, match="buffer of 11 bytes"):
        read_bytes(joined({}, [b"x" * 11]), max_buffer=10)
    assert read_bytes(joined({}, [b"x" * 10]), max_buffer=10) == ({}, [b"x" * 10])


def test_announced_huge_buffer_refused_without_data():
    data = frames.PREFIX.pack(2, 1) + b"{}" + frames.BUFLEN.pack(1 << 40)
    with pytest.raises(FrameError):
        read_bytes(data, eof=False)


@pytest.mark.parametrize("head", [b"not json", b"{", b"\xff\xfe", b""])
def test_non_json_header(head):
    with pytest.raises(FrameError, match="not JSON"):
        read_bytes(raw_frame(head))


@pytest.mark.parametrize("head", [b"[1,2]", b"1", b'"s"', b"null", b"true"])
def test_json_not_an_object(head):
    with pytest.raises(FrameError, match="not a JSON object"):
        read_bytes(raw_frame(head))


@pytest.mark.parametrize("head", [b"not json", b"[]"])
def test_sync_bad_header(head):
    a, b = socket.socketpair()
    with a, b:
        a.sendall(raw_frame(head))
        with pytest.raises(FrameError):
            recv_frame_sync(b)


def test_sync_limits():
    a, b = socket.socketpair()
    with a, b:
        a.sendall(frames.PREFIX.pack(1000, 0))
        with pytest.raises(FrameError):
            recv_frame_sync(b, max_header=999)
    a, b = socket.socketpair()
    with a, b:
        a.sendall(frames.PREFIX.pack(2, frames.MAX_BUFFERS + 1))
        with pytest.raises(FrameError):
            recv_frame_sync(b)


@SETTINGS
@given(headers, st.lists(st.binary(min_size=1, max_size=50), max_size=3), st.data())
def test_truncated_frame_async(header, buffers, data):
    whole = joined(header, buffers)
    cut = data.draw(st.integers(0, len(whole) - 1))
    with pytest.raises(asyncio.IncompleteReadError):
        read_bytes(whole[:cut])


@pytest.mark.parametrize("cut", [0, 3, 8, 10, 20])
def test_truncated_frame_sync(cut):
    whole = joined({"op": "x"}, [b"0123456789"])
    assert len(whole) > 20
    a, b = socket.socketpair()
    with b:
        a.sendall(whole[:cut])
        a.close()
        with pytest.raises(EOFError):
            recv_frame_sync(b)


def test_prefix_layout():
    pieces = encode({"a": 1}, [b"xy"])
    assert pieces[0] == struct.pack("!II", len(b'{"a":1}'), 1)
    assert pieces[1] == b'{"a":1}'
    assert pieces[2] == struct.pack("!Q", 2)
    assert pieces[3] == b"xy"


@pytest.mark.parametrize("head", [b"[" * 20000, b'{"a":' * 5000])
def test_deeply_nested_header_is_frame_error(head):
    assert len(head) < frames.PRE_AUTH_MAX_HEADER
    with pytest.raises(FrameError):
        read_bytes(raw_frame(head), max_header=frames.PRE_AUTH_MAX_HEADER, max_buffers=0)


def test_sync_reader_buffers_several_frames_and_big_buffers():
    import socket as _socket
    import threading as _threading

    from dispy.wire.frames import SyncFrameReader, send_frame_sync

    a, b = _socket.socketpair()
    big = bytes(range(256)) * 4096  # 1 MiB: received straight from the socket
    frames = [({"op": "x", "i": i}, [b"a" * i, b""]) for i in range(5)]
    frames.append(({"op": "big"}, [b"head", big]))
    frames.append(({"op": "end"}, []))

    def send():
        for header, bufs in frames:
            send_frame_sync(a, header, bufs)

    t = _threading.Thread(target=send)
    t.start()
    reader = SyncFrameReader(b)
    got = [reader.read_frame() for _ in frames]
    t.join()
    assert [h for h, _ in got] == [h for h, _ in frames]
    assert [[bytes(x) for x in bufs] for _, bufs in got] == [bufs for _, bufs in frames]
    assert not reader.buffered()
    send_frame_sync(a, {"op": "again"}, [b"z"])
    send_frame_sync(a, {"op": "more"})
    assert reader.read_frame() == ({"op": "again"}, [b"z"])
    assert reader.buffered()  # the second frame came with the first recv
    assert reader.read_frame() == ({"op": "more"}, [])
    a.close()
    try:
        reader.read_frame()
        raise AssertionError("no EOFError")
    except EOFError:
        pass
    b.close()
