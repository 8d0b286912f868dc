"""NodeLink's acknowledgements: they wait for a journal commit or a job to the same node
and go in that write; alone only after ACK_DELAY (or ACK_BATCH of them at once)."""

from __future__ import annotations

import asyncio

import pytest

from dispy.client import links
from dispy.client.links import NodeLink, Profile
from dispy.wire import messages

pytestmark = pytest.mark.timeout(30)


class _Conn:
    """Records what the link queues and when it asks for a write."""

    def __init__(self) -> None:
        self.frames: list[tuple[str, bool]] = []

    def send(self, header, bufs=(), flush_soon: bool = True) -> bool:
        self.frames.append((header.header()["op"], flush_soon))
        return True


def _link() -> tuple[NodeLink, _Conn, list[str]]:
    conn = _Conn()
    commits: list[str] = []
    link = NodeLink("10.0.0.1", 51348, Profile(), conn=conn)  # type: ignore[arg-type]
    link.commit = lambda: commits.append("commit")
    return link, conn, commits


def test_acks_ride_with_the_next_job_in_the_same_write():
    async def main() -> None:
        link, conn, commits = _link()
        link.ack_soon("u1")
        link.ack_soon("u2")
        assert conn.frames == [] and link.ack_timer is not None  # waiting
        job = messages.Job(cid="c", uid="u3")
        assert link.send_job(job, [b"args"])
        # both queued for the engine's one flush of the link; the timer is off
        assert conn.frames == [("job", False), ("ack", False)]
        assert commits == ["commit"] and link.acks == [] and link.ack_timer is None
        assert link.send_job(messages.Job(cid="c", uid="u4"), [b"args"])
        assert conn.frames[-1] == ("job", False)  # no acks waiting: no ack frame

    asyncio.run(main())


def test_acks_no_job_takes_go_alone_after_the_delay(monkeypatch):
    monkeypatch.setattr(links, "ACK_DELAY", 0.01)

    async def main() -> None:
        link, conn, commits = _link()
        link.ack_soon("u1")
        await asyncio.sleep(0.1)
        assert conn.frames == [("ack", True)] and commits == ["commit"]
        assert link.acks == [] and link.ack_timer is None

    asyncio.run(main())


def test_a_full_batch_of_acks_goes_at_once():
    async def main() -> None:
        link, conn, _ = _link()
        for i in range(links.ACK_BATCH):
            link.ack_soon(f"u{i}")
        assert conn.frames == [("ack", True)] and link.ack_timer is None

    asyncio.run(main())


def test_a_job_the_link_cannot_take_leaves_the_acks_waiting():
    async def main() -> None:
        link, _, _ = _link()
        link.conn = None  # the connection is gone
        link.ack_soon("u1")
        assert not link.send_job(messages.Job(cid="c", uid="u2"), [b"args"])
        assert link.acks == ["u1"] and link.ack_timer is not None  # still the timer's
        link.ack_timer.cancel()

    asyncio.run(main())
