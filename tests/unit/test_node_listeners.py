"""Where a node sends later announcements (node/listeners.py), without sockets."""

from __future__ import annotations

import dataclasses
import json

import pytest

from dispy.node import listeners
from dispy.node.listeners import Listeners
from dispy.wire import auth, discovery
from dispy.wire.discoverymsg import Discover, DiscoveryError

pytestmark = pytest.mark.timeout(30)

KEY = auth.derive_key("node-secret")


def req(key: bytes | None = None, ext: str | None = None, port: int | None = 51347,
        wall: float = 1000.0) -> Discover:
    """A ``discover`` as the node receives it (through the wire and its checks)."""
    msg = discovery.decode(discovery.encode(discovery.discover(
        40000, "c", key, now=wall, announce_port=port, ext_ip_addr=ext)))
    assert isinstance(msg, Discover)
    return msg


def test_unsigned_request_is_remembered_at_its_source_only() -> None:
    ls = Listeners(KEY)
    assert ls.heard(req(ext="203.0.113.9"), "198.51.100.7", 0.0, 1000.0) == (
        "198.51.100.7", 51347)


def test_signed_request_names_its_public_address() -> None:
    ls = Listeners(KEY)
    assert ls.heard(req(KEY, ext="203.0.113.9"), "10.0.0.1", 0.0, 1000.0) == (
        "203.0.113.9", 51347)
    other = auth.derive_key("not the node's")
    assert ls.heard(req(other, ext="203.0.113.9"), "10.0.0.1", 0.0, 1000.0) == (
        "10.0.0.1", 51347)


def test_node_without_secret_never_trusts_a_named_address() -> None:
    ls = Listeners(None)
    assert ls.heard(req(KEY, ext="203.0.113.9"), "10.0.0.1", 0.0, 1000.0) == (
        "10.0.0.1", 51347)


def test_signature_covers_the_named_address_and_port() -> None:
    ls = Listeners(KEY)
    msg = dataclasses.replace(req(KEY, ext="203.0.113.9"), ext_ip_addr="192.0.2.66")
    assert ls.heard(msg, "10.0.0.1", 0.0, 1000.0) == ("10.0.0.1", 51347)
    msg = dataclasses.replace(req(KEY, ext="203.0.113.9"), announce_port=9)
    assert ls.heard(msg, "10.0.0.1", 0.0, 1000.0) == ("10.0.0.1", 9)


@pytest.mark.parametrize("bad", ["not an address", "1.2.3.4.5", None, "x" * 100])
def test_bad_named_address_falls_back_to_the_source(bad: str | None) -> None:
    msg = dataclasses.replace(req(KEY), ext_ip_addr=bad)
    msg = dataclasses.replace(msg, auth=discovery._request_mac(KEY, msg))
    assert discovery.signed_by(msg, KEY, 1000.0)  # signed, yet not an address
    assert Listeners(KEY).heard(msg, "10.0.0.1", 0.0, 1000.0) == ("10.0.0.1", 51347)


def test_named_address_of_another_type_never_reaches_the_node() -> None:
    obj = {**req(KEY).as_json(), "ext_ip_addr": 12}
    with pytest.raises(DiscoveryError, match="not a string"):
        discovery.decode(discovery.MAGIC + json.dumps(obj).encode())


def test_announce_port_zero_names_no_port() -> None:
    assert Listeners(None).heard(req(port=0), "10.0.0.1", 0.0, 1000.0) is None


def test_request_without_announce_port_is_not_remembered() -> None:
    ls = Listeners(None)
    assert ls.heard(req(port=None), "10.0.0.1", 0.0, 1000.0) is None
    assert ls.current(0.0) == []


def test_targets_are_bounded_and_expire() -> None:
    ls = Listeners(None)
    for i in range(listeners.MAX_TARGETS + 5):
        ls.heard(req(), f"10.0.1.{i}", float(i), 1000.0)
    now = float(listeners.MAX_TARGETS + 5)
    current = ls.current(now)
    assert len(current) == listeners.MAX_TARGETS
    assert ("10.0.1.0", 51347) not in current  # the least recently heard went first
    assert ls.current(now + listeners.KEEP + 1) == []
