"""Discovery cannot amplify, and forged announcements cost a client little (pure parts)."""

from __future__ import annotations

import json

import pytest

from dispy.client.announced import AnnouncedNodes
from dispy.config import PROTOCOL_VERSION
from dispy.node.announcer import Announcer
from dispy.node.options import NodeOptions
from dispy.wire import discovery
from dispy.wire.discoverymsg import Discover, NodeAnnouncement, RelayAnnouncement

pytestmark = pytest.mark.timeout(10)


def test_attempts_are_bounded_and_freed_by_done():
    a = AnnouncedNodes(max_connecting=3, max_pending=100, max_unreached=100)
    for i in range(10):
        a.offer((f"10.0.0.{i}", 51348))
    first = a.take()
    assert [k for k, _ in first] == [(f"10.0.0.{i}", 51348) for i in (9, 8, 7)]  # newest
    assert a.take() == []  # three attempts under way
    a.done(first[0][0], met=True)
    assert [k for k, _ in a.take()] == [("10.0.0.6", 51348)]


def test_pending_queue_is_bounded_oldest_give_way():
    a = AnnouncedNodes(max_connecting=1, max_pending=5, max_unreached=10)
    for i in range(3000):
        a.offer(i, {"n": i})
    assert len(a.pending) == 5 and a.dropped == 2995
    assert [k for k, _ in a.take()] == [2999]
    a.offer("real node")  # answering discover after the burst: next to be tried
    a.done(2999, met=False)
    assert [k for k, _ in a.take()] == ["real node"]


def test_repeated_announcements_are_one_entry_and_carry_the_latest_info():
    a = AnnouncedNodes(max_connecting=1)
    a.offer("n", "busy with x")
    a.offer("n", None)
    assert a.take() == [("n", None)]
    a.offer("n", "again")  # already being tried: ignored
    assert not a.pending


def test_unreached_nodes_are_forgotten_oldest_first():
    a = AnnouncedNodes(max_connecting=100, max_pending=100, max_unreached=2)
    for i in range(5):
        a.offer(i)
    keys = sorted(k for k, _ in a.take())
    forgotten = []
    for key in keys:
        forgotten += a.done(key, met=False)
    assert forgotten == [0, 1, 2] and list(a.unreached) == [3, 4]
    a.offer(4)
    a.take()
    assert a.done(4, met=True) == [] and list(a.unreached) == [3]


def test_bad_bounds():
    with pytest.raises(ValueError):
        AnnouncedNodes(max_connecting=0)


def test_discover_request_is_padded_to_a_fixed_size():
    msg = discovery.discover(51347, "c" * 32)
    assert len(discovery.encode(msg)) == discovery.DISCOVER_SIZE
    got = discovery.decode(discovery.encode(msg))
    assert isinstance(got, Discover) and got.reply_port == 51347


def test_reply_is_never_larger_than_the_request():
    full = NodeAnnouncement(port=1, platform="x" * 600)
    lean = full.lean()
    assert discovery.reply_within([full, lean], discovery.DISCOVER_SIZE) is full
    assert discovery.reply_within([full, lean], 300) is lean
    assert discovery.reply_within([full, lean], 20) is None
    huge = NodeAnnouncement(port=1, platform="y" * 10000)  # over MAX_DATAGRAM: skipped
    assert discovery.reply_within([huge, lean], 300) is lean


class FakeUdp:
    """The announcer's socket, without one: what it sends, and the request's size."""

    def __init__(self, last_size: int) -> None:
        self.last_size = last_size
        self.sent: list[tuple[bytes, tuple]] = []

    def send(self, msg, addr) -> None:
        self.sent.append((discovery.encode(msg), addr))


def answer(size: int, busy_with: str | None = None) -> list[tuple[dict, tuple]]:
    """What the node sends (as JSON, to see the very bytes) to a request of ``size``."""
    info = {"name": "n", "version": "5", "port": 51348, "node_id": "id1", "ip_addr": None,
            "cpus": 2, "busy": 0, "busy_with": busy_with, "platform": "p" * 600,
            "avail_info": {}, "accepting": True}
    ann = Announcer(NodeOptions(), [], lambda peer, cid: {**info, "ip_addr": peer})
    ann.udp = FakeUdp(size)  # type: ignore[assignment]
    request = discovery.decode(discovery.encode(
        discovery.discover(40000, "client-1", announce_port=51347)))
    assert isinstance(request, Discover)
    ann.on_datagram(request, ("10.0.0.9", 1234))
    assert ann.listeners.current(0.0) == [("10.0.0.9", 51347)]
    return [(json.loads(data[len(discovery.MAGIC):]), addr) for data, addr in ann.udp.sent]


def test_node_answers_a_padded_request_in_full_a_small_one_lean_a_tiny_one_not():
    ((full, addr),) = answer(discovery.DISCOVER_SIZE)
    assert addr == ("10.0.0.9", 40000)
    assert full["platform"] == "p" * 600 and full["busy_with"] is None
    ((lean, _),) = answer(400, busy_with="b" * 500)
    assert lean == {"proto": PROTOCOL_VERSION, "op": "node", "version": "5", "port": 51348,
                    "node_id": "id1", "ip_addr": "10.0.0.9", "busy_with": "b" * 200}
    assert answer(40) == []


def test_node_ignores_other_messages():
    ann = Announcer(NodeOptions(), [], lambda peer, cid: {})
    ann.udp = FakeUdp(discovery.DISCOVER_SIZE)  # type: ignore[assignment]
    ann.on_datagram(RelayAnnouncement(port=5), ("10.0.0.9", 1))
    ann.on_datagram(NodeAnnouncement(port=5), ("10.0.0.9", 1))
    assert ann.udp.sent == []
