"""A named node is connected to at once and asked by datagram (which a dispynetrelay
there answers) a moment later, so a node there does not answer the datagram in the loop
turn that accepts the connection (client/finder.py). The engine and the UDP socket are
stand-ins; what is tested is what the finder sends and connects."""

from __future__ import annotations

import asyncio
import types

import pytest

from dispy.client import finder as finder_mod
from dispy.client.finder import NodeFinder
from dispy.client.links import Profile
from dispy.wire.discoverymsg import NodeAnnouncement

pytestmark = pytest.mark.timeout(30)

ADDR = ("10.9.8.7", 51348)
PROFILE = Profile("", None, None)


class Host:
    client_id = "c" * 32

    def __init__(self, reach: str) -> None:
        self.reach = reach  # the state a connection attempt ends in
        self.links: dict = {}
        self.clusters: dict = {}
        self.connected: list = []

    def link_for(self, ip, port, profile):
        return self.links.setdefault((ip, port, profile), types.SimpleNamespace(
            ip=ip, port=port, state="new", node=None, key=(ip, port, profile)))

    def wants(self, cs, ip, port):
        return True

    def connect(self, link):
        self.connected.append((link.ip, link.port))
        link.state = self.reach
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class Udp:
    def __init__(self) -> None:
        self.sent: list = []

    def send(self, msg, addr) -> None:
        self.sent.append(addr)

    def local_port(self) -> int:
        return 40000


def _cluster(*allocs) -> types.SimpleNamespace:
    return types.SimpleNamespace(allocs=list(allocs), profile=PROFILE)


def _named() -> types.SimpleNamespace:
    return types.SimpleNamespace(wildcard=False, host=ADDR[0], port=ADDR[1])


def _finder(host: Host, udp: Udp) -> NodeFinder:
    finder = NodeFinder(host, 0, [])  # type: ignore[arg-type]
    finder.udp = udp  # type: ignore[assignment]
    return finder


@pytest.fixture(autouse=True)
def soon(monkeypatch):
    monkeypatch.setattr(finder_mod, "RELAY_ASK_AFTER", 0.01)


@pytest.mark.parametrize("reach", ["connected", "down", "busy"])
def test_the_connection_goes_first_and_the_datagram_after(reach):
    host, udp = Host(reach), Udp()

    async def go() -> None:
        _finder(host, udp).ask(_cluster(_named()))  # type: ignore[arg-type]
        assert host.connected == [ADDR] and udp.sent == []
        await asyncio.sleep(0.1)

    asyncio.run(go())
    assert udp.sent == [ADDR]  # a relay there answers it; a node notes us


def test_a_node_that_refused_our_handshake_gets_no_datagram():
    """Its answer would start another attempt at once, before the link's retry time."""
    host, udp = Host("refused"), Udp()

    async def go() -> None:
        _finder(host, udp).ask(_cluster(_named()))  # type: ignore[arg-type]
        await asyncio.sleep(0.1)

    asyncio.run(go())
    assert host.connected == [ADDR] and udp.sent == []


def test_with_a_wildcard_the_named_host_is_asked_at_once():
    """The broadcast makes the node answer now anyway; the named address is heard first."""
    host, udp = Host("connected"), Udp()
    wildcard = types.SimpleNamespace(wildcard=True, host="*", port=51348)

    async def go() -> None:
        _finder(host, udp).ask(_cluster(_named(), wildcard))  # type: ignore[arg-type]
        assert ADDR in udp.sent
        await asyncio.sleep(0.1)

    asyncio.run(go())
    assert udp.sent.count(ADDR) == 1


def test_a_program_behind_nat_asks_at_once():
    """With ``ext_ip_addr`` the node learns at once where to announce to the program (a
    program done within the delay would otherwise never be told of)."""
    host, udp = Host("connected"), Udp()

    async def go() -> None:
        finder = _finder(host, udp)
        finder.ext_ip_addr = "192.0.2.9"
        finder.ask(_cluster(_named()))  # type: ignore[arg-type]
        assert udp.sent == [ADDR]
        await asyncio.sleep(0.1)

    asyncio.run(go())
    assert udp.sent == [ADDR]


def test_a_known_relay_is_asked_at_once_and_never_connected_to():
    host, udp = Host("down"), Udp()

    async def go() -> None:
        finder = _finder(host, udp)
        finder.relays = {ADDR: "relay"}
        finder.ask(_cluster(_named()))  # type: ignore[arg-type]
        assert udp.sent == [ADDR]
        await asyncio.sleep(0.1)

    asyncio.run(go())
    assert host.connected == [] and udp.sent == [ADDR]


@pytest.mark.parametrize("met", [True, False])
def test_a_node_met_by_connection_is_not_met_again_at_another_address(met):
    """Its answer from another address (IPv6 beside IPv4, another network) is for a node
    met already; without ``met`` that answer would start a second connection."""
    host = Host("connected")
    host.clusters = {"cid": _cluster(_named())}
    link = host.link_for(*ADDR, PROFILE)
    link.state, link.node = "connected", object()

    async def go() -> None:
        finder = _finder(host, Udp())
        if met:
            finder.met("n" * 32, *ADDR)
        finder.on_datagram(NodeAnnouncement(port=ADDR[1], node_id="n" * 32), ("fd00::7", 0))

    asyncio.run(go())
    assert host.connected == ([] if met else [("fd00::7", ADDR[1])])


def test_the_engine_tells_the_finder_of_each_node_it_connects_to():
    """client/engine.py: the handshake's node id, with the address connected to, is what
    ``met`` (above) keeps; without it a dual-stack node would be met twice."""
    from dispy.client.engine import Engine

    told: list[tuple] = []
    engine = Engine.__new__(Engine)  # only _connected's bookkeeping, no loop or sockets
    engine.finder = types.SimpleNamespace(met=lambda *a: told.append(a))
    engine.core = types.SimpleNamespace(set_node=lambda key, cpus: None)
    engine.clusters = {}
    engine.dispatch = lambda: False

    async def read(link, conn) -> None:
        return None

    engine._read = read
    link = types.SimpleNamespace(node_id=None, ip=ADDR[0], port=ADDR[1], node=None,
                                 running={}, key=ADDR, describe=lambda: "n")

    async def go() -> None:
        engine._connected(link, {"node_id": "n" * 32, "cpus": 2, "name": "n"}, object())
        await asyncio.sleep(0)

    asyncio.run(go())
    assert told == [("n" * 32, *ADDR)] and link.state == "connected"
