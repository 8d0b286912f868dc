"""Host names: resolved off a daemon's event loop, and to an IPv6 address when that is
all a name has.

A resolver that answers only once the event loop has run again proves that the loop
was not waiting for it: were the name resolved on the loop, it would never answer (the
fake resolver gives up after a few seconds and the test fails). No test here depends
on this machine's DNS.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import urllib.request

import pytest
from conftest import free_port

import dispy
import dispy.httpd
from dispy.node.announcer import Announcer
from dispy.node.options import NodeOptions
from dispy.wire import discovery, netif
from dispy.wire.discoverymsg import NodeAnnouncement

pytestmark = pytest.mark.timeout(30)

SLOW = "slow-dns.test"
V6ONLY = "v6-only.test"
LINK_LOCAL = "link-local.test"


class Resolver:
    """``socket.getaddrinfo`` for the test names: ``SLOW`` answers ``answer`` only after
    ``loop_ran`` is set (from the event loop), ``V6ONLY`` has only an IPv6 address."""

    def __init__(self, answer: str = "127.0.0.1") -> None:
        self.real = socket.getaddrinfo
        self.loop_ran = threading.Event()
        self.answer = answer
        self.asked: list[str] = []
        #: it waited in vain for the loop: whoever asked had stopped the loop
        self.gave_up = False

    def __call__(self, host, port, family=0, type=0, proto=0, flags=0):
        if host == SLOW:
            self.asked.append(host)
            if not self.loop_ran.wait(20):
                self.gave_up = True
                raise socket.gaierror(socket.EAI_AGAIN, "the event loop was blocked")
            return [(socket.AF_INET, socket.SOCK_DGRAM, 17, "", (self.answer, port or 0))]
        if host == V6ONLY:
            if family == socket.AF_INET:
                raise socket.gaierror(socket.EAI_NODATA, "No address associated")
            return [(socket.AF_INET6, socket.SOCK_DGRAM, 17, "", ("fd00::5", port or 0, 0, 0))]
        if host == LINK_LOCAL:  # the scope comes as a number of its own (1: lo)
            return [(socket.AF_INET6, socket.SOCK_DGRAM, 17, "", ("fe80::5", port or 0, 0, 1))]
        if host.endswith(".invalid"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.real(host, port, family, type, proto, flags)


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Resolver:
    fake = Resolver()
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return fake


def run(coro):
    # asyncio's own loop: its getaddrinfo calls socket.getaddrinfo (the fake) in a thread
    loop = asyncio.SelectorEventLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


def test_resolve_async_leaves_the_loop_free(resolver: Resolver) -> None:
    async def go() -> str:
        pending = asyncio.ensure_future(netif.resolve_async(SLOW))
        await asyncio.sleep(0)  # the loop runs on while the name is looked up
        resolver.loop_ran.set()
        return await pending

    assert run(go()) == "127.0.0.1"
    assert resolver.asked == [SLOW]


def test_resolve_takes_addresses_without_asking(resolver: Resolver) -> None:
    assert netif.resolve("10.1.2.3") == "10.1.2.3"
    assert netif.resolve("fd77:0::1") == "fd77::1"
    assert run(netif.resolve_async("fe80::1%lo")) == "fe80::1%lo"
    assert resolver.asked == []


def test_link_local_name_keeps_its_interface_and_bad_names_are_oserrors(
        resolver: Resolver) -> None:
    assert netif.resolve(LINK_LOCAL) == f"fe80::5%{socket.if_indextoname(1)}"
    for bad in ("a" * 64 + ".test", "x" * 300):  # the resolver cannot even encode them
        with pytest.raises(OSError, match="not a valid host name"):
            netif.resolve(bad)
        with pytest.raises(OSError, match="not a valid host name"):
            run(netif.resolve_async(bad))


def test_a_name_that_fails_is_an_oserror(resolver: Resolver) -> None:
    resolver.loop_ran.set()
    resolver.answer = "not an address"  # as a broken resolver might say
    assert run(netif.resolve_async(SLOW)) == "not an address"
    with pytest.raises(OSError):
        run(netif.resolve_async("no-such-host.invalid"))


def test_node_announces_to_a_scheduler_node_name_off_its_loop(resolver: Resolver) -> None:
    """dispynode --scheduler_node NAME: each announcement resolves NAME without stopping
    the node's loop (its jobs) while the resolver answers, and reaches the address."""
    port = free_port()
    opts = NodeOptions(node_port=0, scheduler_node=SLOW, scheduler_port=port)
    info = {"name": "n", "version": "5", "port": 51348, "node_id": "id1", "ip_addr": None,
            "cpus": 2, "busy": 0, "busy_with": None, "platform": "p", "avail_info": {},
            "accepting": True}

    async def go() -> bytes:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sched:
            sched.bind(("127.0.0.1", port))
            sched.setblocking(False)
            ann = Announcer(opts, [], lambda peer, cid: dict(info))
            await ann.start()
            try:
                ann.announce()  # returns at once: the name is being resolved
                await asyncio.sleep(0)
                resolver.loop_ran.set()
                loop = asyncio.get_running_loop()
                return await asyncio.wait_for(loop.sock_recv(sched, 65536), 10)
            finally:
                ann.close()

    msg = discovery.decode(run(go()))
    assert isinstance(msg, NodeAnnouncement) and msg.port == 51348


def test_node_name_with_only_ipv6_addresses_is_its_address(resolver: Resolver) -> None:
    """``nodes=["name"]`` where the name has IPv6 addresses only: the node is asked (by
    datagram, too) and matched at that address, as a name with an IPv4 address is."""
    alloc = dispy.NodeAllocate(V6ONLY)
    assert alloc.host == "fd00::5" and not alloc.wildcard


def ident(x):
    return x


def _call(port: int, method: str, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=data, method=method,
        headers={"Content-Type": "application/json", "Origin": f"http://127.0.0.1:{port}"})
    with urllib.request.urlopen(req, timeout=10) as answer:
        return json.loads(answer.read())


def test_add_node_by_name_leaves_the_pages_free(resolver: Resolver) -> None:
    """dispy.httpd's "add node" with a name: the name is resolved in a thread, so the
    pages (here: another request) are answered while the resolver has not answered."""
    cluster = dispy.JobCluster(ident, nodes=["127.0.0.1"], port=0)
    server = dispy.httpd.DispyHTTPServer(cluster, port=0, poll_sec=5)
    added: list[dict] = []
    try:
        adding = threading.Thread(target=lambda: added.append(_call(
            server.port, "POST", "/api/add_node", {"host": SLOW, "port": free_port()})))
        adding.start()
        while not resolver.asked:  # the add is waiting for the resolver now
            resolver.loop_ran.wait(0.01)
        assert "clusters" in _call(server.port, "GET", "/api/state")["state"]
        assert not resolver.gave_up  # answered while the name was being resolved
        resolver.loop_ran.set()
        adding.join(10)
        assert added and list(added[0]["allocate_node"].values()) == [0]
    finally:
        resolver.loop_ran.set()
        server.shutdown(wait=False)
        cluster.close(timeout=5, terminate=True)


def test_scheduler_extra_nodes_are_looked_up_each_broadcast(resolver: Resolver,
                                                            caplog) -> None:
    """dispyscheduler -n NAME: each broadcast asks the name's address (looked up off the
    loop); a name that does not resolve is warned about once, not at every broadcast."""
    from dispy.client.finder import NodeFinder

    sent: list[tuple] = []

    class Udp:
        def send(self, msg, addr) -> None:
            sent.append(addr)

        def local_port(self) -> int:
            return 40000

    async def go() -> None:
        host = type("Host", (), {"client_id": "test"})()
        finder = NodeFinder(host, 0, [])  # type: ignore[arg-type]
        finder.udp = Udp()  # type: ignore[assignment]
        finder.extra_nodes = ["10.1.2.3", SLOW, "no-such-host.invalid"]
        for _ in range(2):
            finder.broadcast(51348)
            await asyncio.sleep(0)
            resolver.loop_ran.set()
            while finder._resolving:
                await asyncio.wait(list(finder._resolving.values()))

    run(go())
    assert sent == [("10.1.2.3", 51348), ("127.0.0.1", 51348)] * 2
    assert caplog.text.count("'no-such-host.invalid': its name does not resolve") == 1


def test_scheduler_takes_a_programs_node_names_as_given(resolver: Resolver) -> None:
    """dispyscheduler makes the program's NodeAllocates on its loop: it looks no name up
    (the program resolved them; one it could not stays a name that matches no node)."""
    from dispy.scheduler.programs import SharedAlloc

    for host, kept in ((SLOW, SLOW), ("10.0.0.7", "10.0.0.7"), ("fd77:0::1", "fd77::1"),
                       ("10.0.0.*", "10.0.0.*")):
        assert SharedAlloc({"host": host, "setup_args": 0}, b"", 51348).host == kept
    assert resolver.asked == []
