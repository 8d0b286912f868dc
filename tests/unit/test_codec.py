"""The sans-I/O frame codec: round trips of plain and sealed streams however the bytes
are cut, every limit, and sealed records that were tampered with, replayed, reordered,
spliced or injected, which must fail before any frame of theirs is released."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import struct
import threading
import tracemalloc
from collections.abc import Callable, Iterable

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispy.wire import codec
from dispy.wire.codec import (
    BIG,
    BUFLEN,
    FIRST_ALLOCATION,
    FULL,
    GMAC_MIN,
    MAC_CHUNK,
    PRE_AUTH,
    PREFIX,
    FrameDecoder,
    FrameError,
    Limits,
    Sealer,
    encode,
)
from dispy.wire.sync import SyncFrameReader, send_frame_sync

pytestmark = pytest.mark.timeout(60)

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
KEY = b"k" * 32
OTHER_KEY = b"o" * 32

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12,
)
headers = st.dictionaries(st.text(max_size=10), json_values, max_size=6)


@st.composite
def buffers(draw: st.DrawFn) -> bytes:
    """Mostly small buffers; sometimes one of BIG+ bytes (received in place)."""
    if draw(st.integers(0, 9)) == 0:
        size = draw(st.integers(BIG - 1, BIG + 70_000))
        return os.urandom(8) * (size // 8) + b"t" * (size % 8)
    return draw(st.binary(max_size=200))


frame_lists = st.lists(st.tuples(headers, st.lists(buffers(), max_size=4)), min_size=1,
                       max_size=6)
modes = st.sampled_from(["feed", "get_buffer", "bytes"])


def joined(header: dict, bufs: Iterable = ()) -> bytes:
    return b"".join(bytes(p) for p in encode(header, list(bufs)))


def raw_frame(head: bytes, bufs: Iterable[bytes] = ()) -> bytes:
    bufs = list(bufs)
    out = PREFIX.pack(len(head), len(bufs)) + head
    for buf in bufs:
        out += BUFLEN.pack(len(buf)) + buf
    return out


def normal(header: dict) -> dict:
    return json.loads(json.dumps(header))


def push(dec: FrameDecoder, data: bytes, mode: str = "feed",
         cuts: Callable[[int], int] = lambda left: left) -> None:
    """Give ``data`` to ``dec``: with ``feed``, or as a socket would (``get_buffer`` and
    ``received``, at most what the decoder offers), or one byte at a time. ``cuts(left)``
    says how many of the ``left`` bytes to pass next."""
    pos = 0
    while pos < len(data):
        n = 1 if mode == "bytes" else max(1, min(cuts(len(data) - pos), len(data) - pos))
        if mode == "get_buffer":
            target = dec.get_buffer()
            n = min(n, len(target))
            target[:n] = data[pos:pos + n]
            target.release()
            dec.received(n)
        else:
            dec.feed(data[pos:pos + n])
        pos += n


def drain(dec: FrameDecoder) -> list[tuple[dict, list[bytes]]]:
    out = []
    while (frame := dec.next()) is not None:
        out.append((frame[0], [bytes(b) for b in frame[1]]))
    return out


def seal_all(key: bytes, groups: list[list[tuple[dict, list[bytes]]]]) -> list[bytes]:
    """One record per group of frames, in order, as its bytes."""
    sealer = Sealer(key)
    out = []
    for group in groups:
        pieces = [p for header, bufs in group for p in encode(header, bufs)]
        out.append(b"".join(bytes(p) for p in sealer.seal(pieces)))
    return out


def sealed_decoder(key: bytes = KEY, limits: Limits = FULL) -> FrameDecoder:
    dec = FrameDecoder(limits)
    dec.seal(key, limits)
    return dec


# ---- round trips -----------------------------------------------------------------------


@SETTINGS
@given(frame_lists, modes, st.randoms(use_true_random=False))
def test_plain_round_trip_in_any_chunks(frames, mode, rnd):
    dec = FrameDecoder(FULL)
    data = b"".join(joined(h, b) for h, b in frames)
    push(dec, data, mode, lambda left: rnd.choice([1, 2, 7, 100, 5000, 70_000, left]))
    assert drain(dec) == [(normal(h), b) for h, b in frames]
    assert dec._parser.at_boundary()


@SETTINGS
@given(frame_lists, modes, st.randoms(use_true_random=False), st.data())
def test_sealed_round_trip_in_any_chunks(frames, mode, rnd, data):
    cuts = sorted(data.draw(st.sets(st.integers(1, len(frames) - 1), max_size=len(frames)))
                  ) if len(frames) > 1 else []
    bounds = [0, *cuts, len(frames)]
    groups = [frames[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    records = seal_all(KEY, groups)
    dec = sealed_decoder()
    push(dec, b"".join(records), mode, lambda left: rnd.choice([1, 3, 32, 999, 70_000, left]))
    assert drain(dec) == [(normal(h), b) for h, b in frames]


def test_sealed_round_trip_byte_by_byte_with_a_big_buffer():
    big = os.urandom(GMAC_MIN + 3)  # a record tagged with GMAC
    frames = [({"op": "a"}, [b"x"]), ({"op": "big"}, [big, b""]), ({"op": "z"}, [])]
    records = seal_all(KEY, [frames[:1], frames[1:2], frames[2:]])
    assert len(records[1]) == 8 + len(joined(*frames[1])) + 16  # GMAC tag
    assert len(records[0]) == 8 + len(joined(*frames[0])) + 32  # HMAC-SHA256 tag
    for mode in ("bytes", "get_buffer"):
        dec = sealed_decoder()
        push(dec, b"".join(records), mode)
        assert drain(dec) == frames


@SETTINGS
@given(st.lists(st.sampled_from([0, 1, 100, BIG - 1, BIG, MAC_CHUNK, MAC_CHUNK + 1,
                                 3 * MAC_CHUNK + 17, GMAC_MIN - 5]), min_size=1, max_size=5))
def test_streamed_record_is_the_sealed_record(sizes):
    """``Sealer.stream`` (MAC each chunk just before writing it) makes the very bytes
    ``seal`` makes, big pieces cut into views of at most MAC_CHUNK bytes."""
    pieces = [os.urandom(n) for n in sizes]
    size = sum(sizes)
    sealed = b"".join(bytes(p) for p in Sealer(KEY).seal(list(pieces), size))
    streamed = list(Sealer(KEY).stream(list(pieces), size))
    assert b"".join(bytes(p) for p in streamed) == sealed
    assert all(len(p) <= max(MAC_CHUNK, 8, 32) for p in streamed)
    two = Sealer(KEY)  # the sequence number moves on with each record, as with seal
    first, second = list(two.stream([b"a"], 1)), list(two.stream([b"a"], 1))
    assert first != second


def test_stream_refuses_a_piece_before_writing_anything():
    """A piece that cannot be read as bytes (a non-contiguous view) fails before the
    record's first byte is handed on and before the sequence number moves on; any
    contiguous buffer (here an array of doubles) is tagged as its bytes."""
    import array

    sealer = Sealer(KEY)
    strided = memoryview(os.urandom(2 * GMAC_MIN))[::2]
    with pytest.raises((TypeError, ValueError, BufferError)):
        next(sealer.stream([b"head", strided], 4 + GMAC_MIN))
    assert sealer.seq == 0
    doubles = array.array("d", range(GMAC_MIN // 8 + 3))
    raw = doubles.tobytes()
    streamed = b"".join(bytes(p) for p in sealer.stream([doubles], len(raw)))
    assert streamed == b"".join(bytes(p) for p in Sealer(KEY).seal([raw], len(raw)))


def test_a_big_sealed_body_is_read_in_mac_sized_pieces():
    """The decoder offers a big buffer's body at most MAC_CHUNK bytes at a time, so each
    piece is MACed while the CPU still has it in its cache."""
    big = os.urandom(3 * MAC_CHUNK + 5)
    frames = [({"op": "big"}, [big])]
    record = seal_all(KEY, [frames])[0]
    dec = sealed_decoder()
    offered = []
    pos = 0
    while pos < len(record):
        target = dec.get_buffer()
        n = min(len(target), len(record) - pos)
        offered.append(len(target))
        target[:n] = record[pos:pos + n]
        target.release()
        dec.received(n)
        pos += n
    assert drain(dec) == frames
    assert max(offered) <= MAC_CHUNK  # never the whole body (3 * MAC_CHUNK + 5) at once
    assert offered.count(MAC_CHUNK) >= 3


def test_encode_accepts_memoryview_and_bytearray():
    dec = FrameDecoder()
    dec.feed(joined({"a": 1}, [memoryview(b"abc"), bytearray(b"de")]))
    assert drain(dec) == [({"a": 1}, [b"abc", b"de"])]


def test_prefix_layout():
    pieces = encode({"a": 1}, [b"xy"])
    assert pieces[0] == struct.pack("!II", len(b'{"a":1}'), 1) + b'{"a":1}'
    assert pieces[1] == struct.pack("!Q", 2)
    assert pieces[2] == b"xy"


def _subkey(name: bytes) -> bytes:
    return hmac.new(KEY, b"dispy record|" + name, hashlib.sha256).digest()


def test_record_layout():
    """Small records: keyed BLAKE2b under the direction key's BLAKE2b subkey."""
    body = joined({"a": 1})
    record = b"".join(bytes(p) for p in Sealer(KEY).seal([body]))
    assert record[:8] == struct.pack("!Q", len(body))
    assert record[8:-32] == body
    assert record[-32:] == hashlib.blake2b(struct.pack("!Q", 0) + record[:-32],
                                           key=_subkey(b"blake2b"), digest_size=32).digest()


def test_big_record_layout():
    """Big records: GMAC (AES-GCM, empty plaintext, the record as associated data) under
    a one-time key from the GMAC subkey and the sequence number; no key serves two
    algorithms."""
    sealer = Sealer(KEY)
    sealer.seal([joined({"a": 1})])  # sequence 0
    body = joined({"a": 2}, [os.urandom(GMAC_MIN)])
    record = b"".join(bytes(p) for p in sealer.seal([body]))
    seq = struct.pack("!Q", 1)
    one_time = hmac.new(_subkey(b"gmac"), seq, hashlib.sha256).digest()
    assert record[-16:] == AESGCM(one_time).encrypt(bytes(12), b"", seq + record[:-16])
    assert len({KEY, _subkey(b"blake2b"), _subkey(b"gmac")}) == 3


def test_empty_record_is_accepted():
    dec = sealed_decoder()
    dec.feed(b"".join(seal_all(KEY, [[], [({"n": 1}, [])]])))
    assert drain(dec) == [({"n": 1}, [])]


def test_truncated_stream_releases_nothing_of_the_cut_frame():
    whole = joined({"op": "x"}, [b"0123456789"])
    for cut in range(len(whole)):
        dec = FrameDecoder()
        dec.feed(whole[:cut])
        assert dec.next() is None
        dec.feed(whole[cut:])
        assert drain(dec) == [({"op": "x"}, [b"0123456789"])]


def test_hold_releases_one_frame_at_a_time():
    """Handshake connections parse one frame at a time: what follows a frame waits
    until that frame is taken."""
    dec = FrameDecoder(PRE_AUTH, hold=True)
    dec.feed(joined({"op": "challenge"}) + joined({"op": "second"})[:5])
    assert len(dec.frames) == 1 and dec._held
    dec.feed(joined({"op": "second"})[5:])
    assert len(dec.frames) == 1
    assert dec.next() == ({"op": "challenge"}, [])
    assert dec.next() == ({"op": "second"}, [])
    assert dec.next() is None


FORGED = b'{"op":"close","cid":"c","x":"'


@pytest.mark.parametrize("injected", [
    PREFIX.pack(len(FORGED) + 40, 0) + FORGED,       # a header the record would finish
    PREFIX.pack(len(FORGED), 0)[:4],                 # half a prefix
    PREFIX.pack(2, 1) + b"{}" + BUFLEN.pack(60),     # a buffer the record would fill
    joined({"op": "close", "cid": "c"}),             # a whole frame
], ids=["header", "half-prefix", "buffer", "frame"])
def test_bytes_injected_between_the_last_plain_frame_and_sealing_fail(injected):
    """A relay appends bytes to the client's auth frame, hoping the first sealed record
    completes a frame it began (its header or buffer). The decoder must refuse to seal
    in the middle of a frame, before any record arrives: otherwise only the luck that
    a record's binary bytes are not JSON keeps the relay's header from coming out of an
    authenticated record."""
    dec = FrameDecoder(PRE_AUTH, hold=True)
    dec.feed(joined({"op": "auth"}) + injected)
    with pytest.raises(FrameError):
        assert dec.next() == ({"op": "auth"}, [])
        dec.seal(KEY, FULL)


def test_seal_refuses_frames_that_came_before_it():
    dec = FrameDecoder(PRE_AUTH)
    dec.feed(joined({"op": "auth"}) + joined({"op": "early"}))
    dec.next()
    with pytest.raises(FrameError, match="before the handshake finished"):
        dec.seal(KEY, FULL)


# ---- limits ---------------------------------------------------------------------------


def decode(data: bytes, limits: Limits = FULL) -> list:
    dec = FrameDecoder(limits)
    dec.feed(data)
    return drain(dec)


def test_header_over_max_header():
    data = joined({"pad": "x" * 200})
    with pytest.raises(FrameError, match="header of 210 bytes is over the limit of 100"):
        decode(data, Limits(max_header=100))
    assert decode(data, Limits(max_header=len(data)))[0][0]["pad"] == "x" * 200


def test_header_length_checked_from_the_prefix_alone():
    with pytest.raises(FrameError, match="over the limit"):
        decode(PREFIX.pack(codec.PRE_AUTH_MAX_HEADER + 1, 0), PRE_AUTH)


def test_too_many_buffers():
    with pytest.raises(FrameError, match="3 buffers is over the limit of 2"):
        decode(joined({}, [b"a", b"b", b"c"]), Limits(max_buffers=2))
    assert decode(joined({}, [b"a", b"b"]), Limits(max_buffers=2)) == [({}, [b"a", b"b"])]
    with pytest.raises(FrameError, match="buffers"):
        decode(PREFIX.pack(2, codec.MAX_BUFFERS + 1))


def test_buffer_over_max_buffer():
    with pytest.raises(FrameError, match="buffer of 11 bytes is over the limit of 10"):
        decode(joined({}, [b"x" * 11]), Limits(max_buffer=10))
    assert decode(joined({}, [b"x" * 10]), Limits(max_buffer=10)) == [({}, [b"x" * 10])]


def test_announced_huge_buffer_refused_without_its_data():
    with pytest.raises(FrameError, match="over the limit"):
        decode(PREFIX.pack(2, 1) + b"{}" + BUFLEN.pack(1 << 40))


@pytest.mark.parametrize("data", [
    joined({"op": "hello"}, [b"pickle?"]),                 # no buffers before auth
    joined({"op": "hello", "nonce": "x" * codec.PRE_AUTH_MAX_HEADER}),
])
def test_pre_auth_limits(data):
    with pytest.raises(FrameError, match="over the limit"):
        decode(data, PRE_AUTH)


def test_record_over_max_record():
    limits = Limits(max_header=1000, max_buffers=4, max_buffer=1000)
    limit = 1000 + 2 * 1000 + (1 << 20)
    dec = sealed_decoder(limits=limits)
    with pytest.raises(FrameError, match=f"record of {limit + 1} bytes is over the limit"):
        dec.feed(struct.pack("!Q", limit + 1))


def test_a_tls_client_hello_is_named():
    with pytest.raises(FrameError, match="speaks TLS"):
        decode(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 32, PRE_AUTH)


@pytest.mark.parametrize("head", [b"not json", b"{", b"\xff\xfe", b""])
def test_non_json_header(head):
    with pytest.raises(FrameError, match="not JSON"):
        decode(raw_frame(head))


@pytest.mark.parametrize("head", [b"[1,2]", b"1", b'"s"', b"null", b"true"])
def test_json_not_an_object(head):
    with pytest.raises(FrameError, match="not a JSON object"):
        decode(raw_frame(head))


@pytest.mark.parametrize("head", [b"[" * 20000, b'{"a":' * 5000])
def test_deeply_nested_header_is_frame_error(head):
    assert len(head) < codec.PRE_AUTH_MAX_HEADER
    with pytest.raises(FrameError):
        decode(raw_frame(head), PRE_AUTH)


@pytest.mark.parametrize("declared", [256 << 20, 2 << 30])
@pytest.mark.parametrize("mode", ["feed", "get_buffer", "sealed"])
def test_declared_size_alone_allocates_little(declared, mode):
    """8 bytes of a buffer declared 256 MiB (or 2 GiB) cost at most FIRST_ALLOCATION
    (16 MiB), whatever the declared size: memory grows with what arrives."""
    start = PREFIX.pack(2, 1) + b"{}" + BUFLEN.pack(declared) + b"12345678"
    tracemalloc.start()
    try:
        if mode == "sealed":
            dec = sealed_decoder()
            mac_head = struct.pack("!Q", declared + 100)  # the record says it too
            dec.feed(mac_head + start)
        else:
            dec = FrameDecoder(FULL)
            push(dec, start, mode)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert dec.next() is None
    big = dec._parser.big
    assert big is not None and dec._parser.filled == 8
    assert len(big) <= FIRST_ALLOCATION
    assert peak <= FIRST_ALLOCATION + (1 << 20)
    assert len(dec.get_buffer()) <= FIRST_ALLOCATION  # what a socket read may fill


def test_big_buffer_grows_with_what_arrives():
    size = FIRST_ALLOCATION + 3 * BIG
    data = joined({}, [b"\1" * size])
    dec = FrameDecoder()
    dec.feed(data[:FIRST_ALLOCATION])
    assert len(dec._parser.big) == FIRST_ALLOCATION
    dec.feed(data[FIRST_ALLOCATION:FIRST_ALLOCATION + 40])
    assert len(dec._parser.big) == size  # min(declared, twice what it had)
    dec.feed(data[FIRST_ALLOCATION + 40:])
    assert drain(dec) == [({}, [b"\1" * size])]


# ---- sealed records under attack --------------------------------------------------------

FRAMES = [[({"op": "one", "n": i}, [b"a" * i])] for i in range(3)]
FRAMES[1].append(({"op": "two"}, [os.urandom(BIG + 5)]))  # big buffer in the middle one
BAD_PAD = b"\xff" * 64


def released_until_error(stream: bytes, limits: Limits = FULL, key: bytes = KEY,
                         mode: str = "feed") -> tuple[list, FrameError | None]:
    """Frames released before the decoder raised (None: it never did, even after as
    many bytes as a record may hold)."""
    dec = sealed_decoder(key, limits)
    try:
        push(dec, stream, mode, lambda left: 997)
        for _ in range((dec._max_record + 100) // len(BAD_PAD) + 1):
            dec.feed(BAD_PAD)
    except FrameError as exc:
        return [f for f in dec.frames], exc
    return list(dec.frames), None


def heads(frames: list) -> list[bytes]:
    return [f[0] if isinstance(f[0], bytes) else codec.dumps(f[0]) for f in frames]


SMALL = Limits(max_header=4096, max_buffers=8, max_buffer=BIG + 100)


@pytest.mark.parametrize("mode", ["feed", "get_buffer"])
def test_every_flipped_byte_fails_and_releases_nothing_of_its_record(mode):
    records = seal_all(KEY, FRAMES)
    first = heads(FRAMES[0])
    start = len(records[0])
    middle = records[1]
    # every byte of the length and the tag, and a spread of the body
    positions = [*range(8), *range(8, len(middle) - 32, 997), *range(len(middle) - 32,
                                                                      len(middle))]
    for pos in positions:
        for bit in (0x01, 0x80):
            bad = bytearray(b"".join(records))
            bad[start + pos] ^= bit
            frames, exc = released_until_error(bytes(bad), SMALL, mode=mode)
            assert exc is not None, f"flip at {pos} went unnoticed"
            assert [bytes(f[0]) for f in frames] == first, f"flip at {pos}"


@pytest.mark.parametrize("mode", ["feed", "get_buffer"])
def test_big_records_gmac_catches_flips_replays_and_other_keys(mode):
    """Records of GMAC_MIN bytes and more carry a 16-byte GMAC under a key used for that
    record only: a flipped bit anywhere, the record replayed, or sealed under another
    key, fails it before any of its frames is released."""
    big = [[({"op": "a"}, [b"x"])], [({"op": "big"}, [os.urandom(GMAC_MIN + 5)])],
           [({"op": "z"}, [])]]
    records = seal_all(KEY, big)
    assert len(records[1]) == 8 + len(joined(*big[1][0])) + 16
    limits = Limits(max_header=4096, max_buffers=8, max_buffer=GMAC_MIN + 100)
    start, middle = len(records[0]), records[1]
    for pos in [*range(8), *range(8, len(middle) - 16, 9_973), *range(len(middle) - 16,
                                                                       len(middle))]:
        bad = bytearray(b"".join(records))
        bad[start + pos] ^= 0x40
        frames, exc = released_until_error(bytes(bad), limits, mode=mode)
        assert exc is not None, f"flip at {pos} went unnoticed"
        assert [bytes(f[0]) for f in frames] == heads(big[0]), f"flip at {pos}"
    frames, exc = released_until_error(records[0] + middle + middle, limits, mode=mode)
    assert exc is not None and "record 2 failed" in str(exc)
    theirs = seal_all(OTHER_KEY, big)[1]
    frames, exc = released_until_error(records[0] + theirs, limits, mode=mode)
    assert exc is not None and "record 1 failed" in str(exc)


def test_failed_tag_is_named_in_the_error():
    records = seal_all(KEY, FRAMES)
    bad = bytearray(records[0])
    bad[-1] ^= 1
    _, exc = released_until_error(bytes(bad))
    assert exc is not None and "record 0 failed its authentication tag" in str(exc)


@pytest.mark.parametrize("order", [
    [0, 1, 0],   # replay of an earlier record
    [0, 1, 1],   # the same record twice
    [0, 2, 1],   # two records swapped
    [1],         # the first one skipped
])
def test_replayed_or_reordered_records_fail(order):
    records = seal_all(KEY, FRAMES)
    stream = b"".join(records[i] for i in order)
    good = 0
    while good < len(order) and order[good] == good:
        good += 1
    frames, exc = released_until_error(stream)
    assert exc is not None and "authentication tag" in str(exc)
    assert [bytes(f[0]) for f in frames] == [h for i in range(good) for h in heads(FRAMES[i])]


def test_record_spliced_from_another_connection_fails():
    ours, theirs = seal_all(KEY, FRAMES), seal_all(OTHER_KEY, FRAMES)
    for i in range(3):
        stream = b"".join(ours[:i]) + theirs[i] + b"".join(ours[i + 1:])
        frames, exc = released_until_error(stream)
        assert exc is not None and f"record {i} failed" in str(exc)
        assert [bytes(f[0]) for f in frames] == [h for j in range(i) for h in heads(FRAMES[j])]


def test_other_direction_key_fails():
    """A record the node sealed to the client, reflected back to the node."""
    records = seal_all(OTHER_KEY, FRAMES[:1])
    _, exc = released_until_error(records[0], key=KEY)
    assert exc is not None


@pytest.mark.parametrize("plain", [
    joined({"op": "done", "uid": "x"}, [b"pickle"]),
    joined({}),
    raw_frame(b"{}", [b"\0" * 10]),
])
def test_plain_frame_injected_after_sealing_fails(plain):
    records = seal_all(KEY, FRAMES)
    for at in range(len(records) + 1):
        stream = b"".join(records[:at]) + plain + b"".join(records[at:])
        frames, exc = released_until_error(stream)
        assert exc is not None
        assert [bytes(f[0]) for f in frames] == [h for j in range(at) for h in heads(FRAMES[j])]


def test_frames_wait_for_their_records_tag():
    records = seal_all(KEY, FRAMES)
    for mode in ("feed", "get_buffer"):
        dec = sealed_decoder()
        push(dec, records[0] + records[1][:-1], mode)
        assert [bytes(f[0]) for f in dec.frames] == heads(FRAMES[0])
        assert dec._parser.done  # parsed, not released
        push(dec, records[1][-1:], mode)
        assert [bytes(f[0]) for f in dec.frames] == heads(FRAMES[0]) + heads(FRAMES[1])


def test_record_ending_inside_a_frame_fails():
    """A peer with the key that cuts a frame across records (never done) is dropped."""
    whole = joined({"op": "x"}, [b"abc"])
    sealer = Sealer(KEY)
    stream = b"".join(bytes(p) for p in sealer.seal([whole[:5]]))
    dec = sealed_decoder()
    with pytest.raises(FrameError, match="ends inside a frame"):
        dec.feed(stream)


# ---- blocking reader ------------------------------------------------------------------


def test_sync_reader_several_frames_and_big_buffers():
    a, b = socket.socketpair()
    big = os.urandom(3 << 20)  # received in place, across many recv calls
    frames = [({"op": "x", "i": i}, [b"a" * i, b""]) for i in range(5)]
    frames += [({"op": "big"}, [b"head", big, big[:BIG]]), ({"op": "end"}, [])]

    def send() -> None:
        for header, bufs in frames:
            send_frame_sync(a, header, bufs)

    with a, b:
        sender = threading.Thread(target=send)
        sender.start()
        reader = SyncFrameReader(b)
        got = [reader.read_frame() for _ in frames]
        sender.join(10)
        assert [(h, [bytes(x) for x in bufs]) for h, bufs in got] == frames
        assert not reader.buffered()
        send_frame_sync(a, {"op": "again"}, [b"z"])
        send_frame_sync(a, {"op": "more"})
        assert reader.read_frame() == ({"op": "again"}, [b"z"])
        assert reader.buffered()  # the second frame came with the first recv
        assert reader.read_frame() == ({"op": "more"}, [])
        a.shutdown(socket.SHUT_WR)
        with pytest.raises(EOFError):
            reader.read_frame()


@pytest.mark.parametrize("cut", [0, 3, 8, 10, 20])
def test_sync_reader_truncated_frame(cut):
    whole = joined({"op": "x"}, [b"0123456789"])
    a, b = socket.socketpair()
    with a, b:
        a.sendall(whole[:cut])
        a.shutdown(socket.SHUT_WR)
        with pytest.raises(EOFError):
            SyncFrameReader(b).read_frame()


@pytest.mark.parametrize("data,limits", [
    (raw_frame(b"not json"), FULL),
    (raw_frame(b"[]"), FULL),
    (PREFIX.pack(1000, 0), Limits(max_header=999)),
    (PREFIX.pack(2, codec.MAX_BUFFERS + 1), FULL),
])
def test_sync_reader_bad_frames(data, limits):
    a, b = socket.socketpair()
    with a, b:
        a.sendall(data)
        with pytest.raises(FrameError):
            SyncFrameReader(b, limits).read_frame()


# ---- JSON: orjson where it can, json for the rest, the same values either way --------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner,
                                                                max_size=4),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(_json_values)
def test_to_json_reads_back_as_json_would(value):
    """Any JSON value (ints past 64 bits and lone surrogates included, which orjson
    refuses) encodes to text ``json`` reads back to the same value, and ``from_json``
    agrees with ``json``."""
    raw = codec.to_json(value)
    assert json.loads(raw) == value
    assert codec.from_json(raw) == json.loads(raw) or _has_big_int(value)


def _has_big_int(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return not -(1 << 63) <= value < (1 << 64)
    if isinstance(value, list):
        return any(_has_big_int(v) for v in value)
    if isinstance(value, dict):
        return any(_has_big_int(v) for v in value.values())
    return False


def test_to_json_as_json_for_int_keys_and_subclasses():
    import enum

    class Level(enum.IntEnum):
        HIGH = 3

    class Name(str):
        pass

    assert json.loads(codec.to_json({1: "a", "n": Level.HIGH, "s": Name("x")})) == \
        {"1": "a", "n": 3, "s": "x"}


@pytest.mark.parametrize("raw", [b'{"a":NaN}', b'{"a":1e400}', b'{"a":Infinity}'])
def test_from_json_reads_what_json_reads(raw):
    assert str(codec.from_json(raw)) == str(json.loads(raw))


@pytest.mark.parametrize("raw", [b"\xff{}", b"[1", b"[" * 100_000, b'"\\ud800', b""])
def test_loads_turns_bad_json_into_frame_error(raw):
    with pytest.raises(FrameError):
        codec.loads(raw)

