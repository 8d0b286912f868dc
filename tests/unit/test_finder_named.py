"""A named node is connected to at once and asked by datagram (which a dispynetrelay
there answers) only if the connection has not reached a node soon after: a node
answering a datagram first would hold up the accept of the connection (client/finder.py).
The engine and the UDP socket are stand-ins; what is tested is what the finder sends."""

from __future__ import annotations

import asyncio
import types

import pytest

from dispy.client import finder as finder_mod
from dispy.client.finder import NodeFinder

pytestmark = pytest.mark.timeout(30)


class Host:
    client_id = "c" * 32

    def __init__(self, reach: str) -> None:
        self.reach = reach  # the state a connection attempt ends in
        self.links: dict = {}
        self.clusters: dict = {}
        self.connected: list = []

    def link_for(self, ip, port, profile):
        return self.links.setdefault((ip, port), types.SimpleNamespace(
            ip=ip, port=port, state="new", node=None))

    def connect(self, link):
        self.connected.append((link.ip, link.port))
        link.state = self.reach


class Udp:
    def __init__(self) -> None:
        self.sent: list = []

    def send(self, msg, addr) -> None:
        self.sent.append(addr)

    def local_port(self) -> int:
        return 40000


def _ask(reach: str) -> tuple[Host, Udp]:
    host, udp = Host(reach), Udp()

    async def go() -> None:
        finder = NodeFinder(host, 0, [])  # type: ignore[arg-type]
        finder.udp = udp  # type: ignore[assignment]
        alloc = types.SimpleNamespace(wildcard=False, host="10.9.8.7", port=51348)
        cs = types.SimpleNamespace(allocs=[alloc], profile=types.SimpleNamespace(secret=""))
        finder.ask(cs)  # type: ignore[arg-type]
        assert udp.sent == []  # nothing by datagram yet
        await asyncio.sleep(0.1)

    asyncio.run(go())
    return host, udp


@pytest.fixture(autouse=True)
def soon(monkeypatch):
    monkeypatch.setattr(finder_mod, "RELAY_ASK_AFTER", 0.01)


def test_a_node_reached_by_its_connection_gets_no_datagram():
    host, udp = _ask("connected")
    assert host.connected == [("10.9.8.7", 51348)] and udp.sent == []


def test_an_address_the_connection_did_not_reach_is_asked_by_datagram():
    host, udp = _ask("down")  # no node there: perhaps a dispynetrelay
    assert host.connected == [("10.9.8.7", 51348)] and udp.sent == [("10.9.8.7", 51348)]


def test_a_known_relay_is_asked_at_once_and_never_connected_to():
    host, udp = Host("down"), Udp()

    async def go() -> None:
        finder = NodeFinder(host, 0, [])  # type: ignore[arg-type]
        finder.udp = udp  # type: ignore[assignment]
        finder.relays = {("10.9.8.7", 51348): "relay"}
        alloc = types.SimpleNamespace(wildcard=False, host="10.9.8.7", port=51348)
        cs = types.SimpleNamespace(allocs=[alloc], profile=types.SimpleNamespace(secret=""))
        finder.ask(cs)  # type: ignore[arg-type]
        assert udp.sent == [("10.9.8.7", 51348)]
        await asyncio.sleep(0.05)

    asyncio.run(go())
    assert host.connected == [] and udp.sent == [("10.9.8.7", 51348)]


def test_a_node_met_by_connection_is_not_met_again_at_another_address():
    finder = NodeFinder(Host("connected"), 0, [])  # type: ignore[arg-type]
    finder.met("n" * 32, "10.9.8.7", 51348)
    finder.met("n" * 32, "fd00::7", 51348)  # the first address stays the one it is met at
    assert finder.node_addrs == {"n" * 32: ("10.9.8.7", 51348)}
