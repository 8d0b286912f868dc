"""dispynetrelay's decisions (relay/forward.py), without sockets."""

from __future__ import annotations

import dataclasses
import json

import pytest

from dispy.config import PROTOCOL_VERSION
from dispy.relay import forward
from dispy.relay.forward import RelayState
from dispy.wire import auth, discovery
from dispy.wire.discoverymsg import Discover, NodeAnnouncement, RelayAnnouncement

pytestmark = pytest.mark.timeout(30)

KEY = auth.derive_key("s3cret")
LAN = "10.1.0."


def state(key: bytes | None = None) -> RelayState:
    return RelayState(key=key, local=lambda ip: ip.startswith(LAN), name="relay",
                      node_port=51348, relay_port=51348, reply_port=40000)


def request(key: bytes | None = None, now: float = 1000.0) -> Discover:
    msg = discovery.decode(discovery.encode(
        discovery.discover(5555, "client-1", key, now=now)))
    assert isinstance(msg, Discover)
    return msg


def node(ip: str | None = "10.1.0.7", proto: int | None = PROTOCOL_VERSION) -> NodeAnnouncement:
    """A node's answer as received; ``proto`` None: a datagram that names none."""
    data = discovery.MAGIC + json.dumps(
        {"proto": proto, "op": "node", "port": 51348, "node_id": "n", "ip_addr": ip}).encode()
    msg = discovery.decode(data)
    assert isinstance(msg, NodeAnnouncement)
    return msg


def test_request_is_answered_rebroadcast_and_remembered() -> None:
    st = state()
    sends, why = st.on_discover(request(), ("192.168.5.9", 1234), 1000.0,
                                discovery.DISCOVER_SIZE)
    assert why is None
    ack, out = sends
    assert (ack.ip, ack.port, ack.msg) == ("192.168.5.9", 5555,
                                           RelayAnnouncement(name="relay", port=51348))
    assert out.rebroadcast and out.ip is None and out.port == 51348
    assert isinstance(out.msg, Discover)
    assert out.msg.reply_port == 40000  # the nodes answer the relay, never the client
    assert out.msg.client_id == "client-1"
    assert len(discovery.encode(out.msg)) == discovery.DISCOVER_SIZE  # room for full replies
    fwd = st.on_node(node(), ("10.1.0.7", 51348), 1001.0)
    assert [(s.ip, s.port) for s in fwd] == [("192.168.5.9", 5555)]
    assert fwd[0].msg == node()


def test_node_without_address_is_forwarded_with_its_source_address() -> None:
    st = state()
    st.on_discover(request(), ("192.168.5.9", 1), 1000.0, discovery.DISCOVER_SIZE)
    (fwd,) = st.on_node(node(ip=None), ("10.1.0.8", 51348), 1000.5)
    assert isinstance(fwd.msg, NodeAnnouncement) and fwd.msg.ip_addr == "10.1.0.8"


def test_node_of_another_protocol_or_link_local_is_not_forwarded() -> None:
    st = state()
    st.on_discover(request(), ("192.168.5.9", 1), 1000.0, discovery.DISCOVER_SIZE)
    assert st.on_node(node(proto=PROTOCOL_VERSION + 1), ("10.1.0.7", 51348), 1001.0) == []
    assert st.on_node(node(proto=None), ("10.1.0.7", 51348), 1001.0) == []
    assert st.on_node(node(ip="fe80::1"), ("10.1.0.7", 51348), 1001.0) == []


def test_relay_never_sends_to_an_address_named_in_a_message() -> None:
    st = state()
    data = discovery.MAGIC + json.dumps(
        {**discovery.discover(5555, "client-1").as_json(), "reply_to": "203.0.113.5",
         "ext_ip_addr": "203.0.113.6"}).encode()
    msg = discovery.decode(data)
    assert isinstance(msg, Discover)
    sends, _ = st.on_discover(msg, ("192.168.5.9", 1), 1000.0, discovery.DISCOVER_SIZE)
    assert {s.ip for s in sends} == {"192.168.5.9", None}


def test_node_datagrams_from_outside_the_lan_are_not_forwarded() -> None:
    st = state()
    st.on_discover(request(), ("192.168.5.9", 1), 1000.0, discovery.DISCOVER_SIZE)
    assert st.on_node(node(ip="203.0.113.5"), ("203.0.113.5", 51348), 1001.0) == []


def test_requests_from_the_lan_itself_are_left_to_the_nodes() -> None:
    sends, why = state().on_discover(request(), ("10.1.0.3", 1), 1000.0, 1024)
    assert sends == [] and why is None


def test_secret_requires_a_fresh_signature() -> None:
    st = state(KEY)
    src = ("192.168.5.9", 1)
    assert st.on_discover(request(), src, 1000.0, 1024)[1] == "not signed with the relay's secret"
    assert st.on_discover(request(auth.derive_key("other")), src, 1000.0, 1024)[0] == []
    stale = request(KEY, now=1000.0 - discovery.AUTH_WINDOW - 1)
    assert st.on_discover(stale, src, 1000.0, 1024)[0] == []
    forged = dataclasses.replace(request(KEY, now=1000.0), reply_port=6666)
    # the signature covers the reply port
    assert st.on_discover(forged, src, 1000.0, 1024)[0] == []
    sends, why = st.on_discover(request(KEY, now=1000.0), src, 1000.0, 1024)
    assert why is None and len(sends) == 2


def test_rebroadcast_is_rate_limited_per_requester() -> None:
    st = state()
    src = ("192.168.5.9", 1)
    first, _ = st.on_discover(request(), src, 1000.0, 1024)
    again, _ = st.on_discover(request(), src, 1000.2, 1024)
    assert any(s.rebroadcast for s in first) and not any(s.rebroadcast for s in again)


def test_forwarding_to_a_requester_is_bounded() -> None:
    """A spoofed request cannot make the relay flood its 'source' with node datagrams."""
    st = state()
    st.on_discover(request(), ("192.168.5.9", 1), 1000.0, 1024)
    sent = sum(len(st.on_node(node(), ("10.1.0.7", 51348), 1000.0))
               for _ in range(forward.BURST * 2))
    assert sent == forward.BURST - 1  # one token went to the 'relay' answer


def test_requesters_are_forgotten_and_bounded() -> None:
    st = state()
    st.on_discover(request(), ("192.168.5.9", 1), 1000.0, 1024)
    assert st.on_node(node(), ("10.1.0.7", 51348), 1000.0 + forward.KEEP + 1) == []
    for i in range(forward.MAX_REQUESTERS + 10):
        st.on_discover(request(), (f"172.16.{i // 250}.{i % 250}", 1), 2000.0 + i, 1024)
    assert len(st.requesters) == forward.MAX_REQUESTERS


def test_fixed_targets_get_announcements_without_asking() -> None:
    st = state()
    st.fixed.append(("192.168.9.9", 51347))
    assert [(s.ip, s.port) for s in st.on_node(node(), ("10.1.0.7", 51348), 1.0)] == [
        ("192.168.9.9", 51347)]


def test_small_request_gets_no_answer_bigger_than_itself() -> None:
    sends, _ = state().on_discover(request(), ("192.168.5.9", 1), 1000.0, 20)
    assert [s.msg.op for s in sends] == ["discover"]  # rebroadcast only, no 'relay'


def test_every_recent_requester_hears_every_node() -> None:
    """Not only the last one (4.15's relay tracked one scheduler at a time)."""
    st = state()
    st.on_discover(request(), ("192.168.5.9", 1), 1000.0, 1024)
    st.on_discover(request(), ("172.16.0.4", 1), 1001.0, 1024)
    sends = st.on_node(node(), ("10.1.0.7", 51348), 1002.0)
    assert sorted(s.ip for s in sends) == ["172.16.0.4", "192.168.5.9"]
