"""Connection.deliver_to: frames handed to a handler in the read callback, in order,
replies still going to their requests, a handler's bug logged without losing the link,
and the end of the connection reported once. Real sockets (a Unix socket pair)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from dispy.wire.codec import FULL, FrameError, encode_sized
from dispy.wire.connection import Connection, ConnectionClosed

pytestmark = pytest.mark.timeout(30)


async def _open(sock: socket.socket) -> Connection:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_unix_connection(lambda: Connection(FULL, local=True),
                                                sock=sock)
    return conn


async def pair() -> tuple[Connection, Connection]:
    a, b = socket.socketpair()
    return await _open(a), await _open(b)


def test_frames_reach_the_handler_in_order_and_the_end_is_reported():
    async def main():
        left, right = await pair()
        for i in range(3):
            left.send({"op": "n", "i": i}, [b"x" * i])
        left.flush()
        await asyncio.sleep(0.05)  # frames queued before the handler is set come first
        seen, batches = [], []
        ended = right.deliver_to(lambda h, bufs: seen.append((h["i"], bufs)),
                                 lambda: batches.append(len(seen)))
        for i in range(3, 6):
            left.send({"op": "n", "i": i})
        left.flush()
        await asyncio.sleep(0.05)
        left.close()
        reason = await asyncio.wait_for(ended, 5)
        assert [i for i, _ in seen] == [0, 1, 2, 3, 4, 5]
        assert seen[2][1] == [b"xx"] and batches and batches[-1] == 6
        assert isinstance(reason, ConnectionClosed)

    asyncio.run(main())


def test_a_handler_bug_is_logged_and_the_link_kept(caplog):
    async def main():
        left, right = await pair()
        seen = []

        def handler(header, bufs):
            if header["i"] == 1:
                raise RuntimeError("bug")
            seen.append(header["i"])

        ended = right.deliver_to(handler)
        for i in range(3):
            left.send({"op": "n", "i": i})
        left.flush()
        await asyncio.sleep(0.1)
        assert seen == [0, 2] and not ended.done()
        left.close()
        await asyncio.wait_for(ended, 5)

    asyncio.run(main())
    assert "failed to handle a frame" in caplog.text


def test_replies_still_go_to_their_requests():
    async def main():
        left, right = await pair()
        right.deliver_to(lambda h, bufs: right.send({"op": "reply", "reply": h["reply"],
                                                     "ok": True}))
        got = []
        left.deliver_to(lambda h, bufs: got.append(h))  # replies do not come here
        answer = await left.request({"op": "ping"}, (), 5)
        assert answer is not None and answer["ok"] is True and got == []
        left.close()
        right.close()

    asyncio.run(main())


def test_garbage_ends_the_connection_with_the_frame_error():
    async def main():
        a, b = socket.socketpair()
        right = await _open(b)
        ended = right.deliver_to(lambda h, bufs: None)
        a.sendall(b"\xff" * 64)
        reason = await asyncio.wait_for(ended, 5)
        assert isinstance(reason, FrameError)
        a.close()

    asyncio.run(main())


def test_send_now_writes_at_once_after_what_was_queued():
    """``now=True`` writes the frame (and frames queued before it, in order) within the
    call: the peer can read them without this side's loop turning."""
    async def main():
        left, right = await pair()
        left.send({"op": "n", "i": 0})
        sent = left.bytes_out
        left.send({"op": "n", "i": 1}, [b"abc"], now=True)
        assert left.bytes_out > sent and not left._out
        seen = []
        ended = right.deliver_to(lambda h, bufs: seen.append((h["i"], bufs)))
        for _ in range(100):
            if len(seen) == 2:
                break
            await asyncio.sleep(0.01)
        assert seen == [(0, []), (1, [b"abc"])]
        left.close()
        await asyncio.wait_for(ended, 5)

    asyncio.run(main())


def test_frames_before_bad_bytes_in_the_same_read_are_handled_first():
    """A good frame and garbage arrive in one read: the frame reaches the handler (as
    ``recv`` hands it out before it raises), then the connection ends with the error."""
    async def main():
        a, b = socket.socketpair()
        right = await _open(b)
        seen = []
        ended = right.deliver_to(lambda h, bufs: seen.append(h["i"]))
        pieces, _, _ = encode_sized({"op": "n", "i": 7})
        a.sendall(b"".join(bytes(p) for p in pieces) + b"\xff" * 64)
        reason = await asyncio.wait_for(ended, 5)
        assert seen == [7] and isinstance(reason, FrameError)
        a.close()

    asyncio.run(main())


def test_a_frame_queued_for_the_caller_to_flush_never_holds_back_a_later_send():
    """send(flush_soon=False) leaves the write to its caller (the engine flushes its
    links once per turn); a plain send after it still plans a flush, so a caller that
    never flushed cannot stall the link."""
    async def main():
        left, right = await pair()
        left.send({"op": "n", "i": 0}, flush_soon=False)
        await asyncio.sleep(0.05)
        assert right.pending() == 0  # not written: the caller was to flush it
        left.send({"op": "n", "i": 1})
        first = await asyncio.wait_for(right.recv(), 5)
        second = await asyncio.wait_for(right.recv(), 5)
        assert [first[0]["i"], second[0]["i"]] == [0, 1]
        left.close()
        right.close()

    asyncio.run(main())
