"""How an engine finds nodes: it asks (broadcast, multicast, named hosts, relays), hears
answers and announcements, and tells the engine which nodes to meet.

The engine owns the links; the finder decides when one is worth a connection attempt:
a node it has never met waits in a bounded queue (client/announced.py), a node already
known by another address (IPv4 and IPv6, two networks) is met once, an address that
answers as a dispynetrelay is never connected to, and a node no cluster wants is
reported once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable
from typing import Any, Protocol

from .. import config
from ..wire import auth, discovery, netif
from ..wire.discoverymsg import Discover, DiscoveryMessage, NodeAnnouncement, RelayAnnouncement
from .announced import AnnouncedNodes
from .clusterstate import ClusterState
from .links import NodeLink, Profile

log = logging.getLogger("dispy")

#: seconds before a busy (or unreachable) node is tried again
RETRY_INTERVAL = 5.0
#: seconds after connecting to a named host before it is also asked by datagram (which
#: a dispynetrelay there answers; see ``NodeFinder.ask``)
RELAY_ASK_AFTER = 0.1


class FinderHost(Protocol):
    """What the finder needs of its engine."""

    client_id: str
    clusters: dict[str, Any]
    links: dict[Hashable, NodeLink]

    def link_for(self, ip: str, port: int, profile: Profile) -> NodeLink: ...

    def wants(self, cs: ClusterState, ip: str, port: int) -> Any: ...

    def connect(self, link: NodeLink) -> asyncio.Task: ...

    def unreachable(self, link: NodeLink, reason: str) -> None: ...


class NodeFinder:
    def __init__(self, host: FinderHost, port: int, ifs: list[netif.Interface]) -> None:
        self.host = host
        #: where we hear nodes' announcements (the client port)
        self.port = port
        self.ifs = ifs
        #: discovery by the IPv4 multicast group instead of broadcast (ipv4_udp_multicast)
        self.multicast = False
        #: our public address behind NAT (ext_host; dispyscheduler's --ext_ip_addr): nodes
        #: that asked with our secret send their later announcements there
        self.ext_ip_addr: str | None = None
        #: hosts asked with every broadcast (dispyscheduler's -n: other networks)
        self.extra_nodes: list[str] = []
        #: lookups of extra nodes' names under way, and the names that did not resolve
        self._resolving: dict[str, asyncio.Task] = {}
        self._unresolved: set[str] = set()
        #: node id -> the (ip, port) it is used at: a node answering by IPv4 and IPv6 (or
        #: on two networks) is one node, met at the address first heard
        self.node_addrs: dict[str, tuple[str, int]] = {}
        #: (ip, port) of the dispynetrelays that answered: asked by datagram, never connected
        self.relays: dict[tuple[str, int], str] = {}
        #: announced nodes not met yet: bounded attempts and queue (client/announced.py)
        self.announced: AnnouncedNodes[tuple[str, int, Profile]] = AnnouncedNodes()
        #: (ip, port) of nodes that answered but match no cluster's ``nodes``
        self.unmatched: dict[tuple[str, int], float] = {}
        self.udp: discovery.DiscoveryProtocol | None = None

    async def start(self) -> None:
        on_message = discovery.records(self.on_datagram, "dispy")
        try:  # nodes announce by broadcast, or by multicast (either way; IPv6 always)
            await discovery.open_endpoint(self.port, True, on_message, "dispy", self.ifs)
        except OSError as exc:
            log.warning("cannot listen for node announcements on UDP port %d (%s);"
                        " nodes are found by discovery only", self.port, exc.strerror)
        self.udp = await discovery.open_endpoint(0, False, on_message, "dispy", self.ifs)

    # ---- asking -----------------------------------------------------------------------

    def ask(self, cs: ClusterState, allocs: list | None = None) -> None:
        """Ask ``allocs`` (all of the cluster's) for nodes: a wildcard by broadcast, a
        named host by connecting, and also by a datagram, which a dispynetrelay there
        answers and relays to the nodes of its network (and a node there answers,
        noting us for its announcements). The datagram goes ``RELAY_ASK_AFTER`` after
        the connection, as a node there would answer it in the loop turn that accepts
        the connection, 1 ms into every start; at once with a wildcard too, whose
        broadcast the node answers then anyway (so the named address is heard first:
        a node answering at two addresses is met at the one heard first), and when we
        name our public address (``ext_ip_addr``, behind NAT: the node learns at once
        where to announce to us)."""
        assert self.udp is not None
        secret = cs.profile.secret
        key = auth.key_of(secret) if secret else None
        allocs = allocs or cs.allocs
        at_once = self.ext_ip_addr is not None or any(alloc.wildcard for alloc in allocs)
        for alloc in allocs:
            if alloc.wildcard:
                self.broadcast(alloc.port, key)
                continue
            if (alloc.host, alloc.port) not in self.relays:  # a relay: never connected
                link = self.host.link_for(alloc.host, alloc.port, cs.profile)
                if link.state in ("new", "down", "busy", "refused"):
                    self.host.connect(link)
                if not at_once:
                    asyncio.get_running_loop().call_later(RELAY_ASK_AFTER, self._ask_later,
                                                          link, key)
                    continue
            self.udp.send(self.request(key), (alloc.host, alloc.port))

    def _ask_later(self, link: NodeLink, key: bytes | None) -> None:
        """``ask``'s datagram to a named host, unless its node refused our handshake (its
        answer would start another attempt at once, before the link's retry time)."""
        if link.state not in ("refused", "relay") and self.udp is not None:
            self.udp.send(self.request(key), (link.ip, link.port))

    def met(self, node_id: Any, ip: str, port: int) -> None:
        """A node was connected to at (ip, port): its answers from other addresses are
        for a node met already (``_other_address``)."""
        if isinstance(node_id, str):
            self.node_addrs.setdefault(node_id, (ip, port))

    def ask_again(self, cs: ClusterState) -> None:
        """Periodic discovery: the cluster's wildcards and relays."""
        self.ask(cs, [a for a in cs.allocs if a.wildcard or (a.host, a.port) in self.relays])

    def broadcast(self, port: int, key: bytes | None = None) -> None:
        """Ask every node of our networks (and the extra nodes) on ``port``."""
        assert self.udp is not None
        msg = self.request(key)
        sent = discovery.send_to_lan(self.udp, msg, port, self.ifs, self.multicast)
        for host in self.extra_nodes:
            ip = netif.literal(host)
            if ip is not None:
                self.udp.send(msg, (ip, port))
            elif host not in self._resolving:  # a name, looked up each time (DNS may
                # change), off the loop, and once at a time (a slow DNS server)
                self._resolving[host] = asyncio.get_running_loop().create_task(
                    self._ask_name(host, port, msg))
        log.debug("discovery: asked %s (port %d)", ", ".join([*sent, *self.extra_nodes]), port)

    async def _ask_name(self, name: str, port: int, msg: Discover) -> None:
        try:
            ip = await netif.resolve_async(name)
        except OSError as exc:
            if name not in self._unresolved:  # once: broadcasts repeat
                self._unresolved.add(name)
                log.warning("node host %r: its name does not resolve (%s); it is not asked",
                            name, getattr(exc, "strerror", None) or exc)
            return
        finally:
            self._resolving.pop(name, None)
        self._unresolved.discard(name)
        if self.udp is not None:
            self.udp.send(msg, (ip, port))

    def request(self, key: bytes | None) -> Discover:
        """A ``discover``: answers to our UDP socket, later announcements to our port."""
        assert self.udp is not None
        return discovery.discover(self.udp.local_port(), self.host.client_id, key,
                                  announce_port=self.port, ext_ip_addr=self.ext_ip_addr)

    # ---- hearing ----------------------------------------------------------------------

    def on_datagram(self, msg: DiscoveryMessage, addr: tuple) -> None:
        if isinstance(msg, RelayAnnouncement):
            self._on_relay(msg, addr)
            return
        if not isinstance(msg, NodeAnnouncement):
            return
        node = discovery.announced_node(msg, addr)
        if node is None:
            return
        ip, port = node
        log.debug("discovery: node %s answered (%s)", netif.host_port(ip, port),
                  f"busy with {msg.busy_with}" if msg.busy_with else "free")
        if msg.proto != config.PROTOCOL_VERSION:
            log.warning("node %s speaks dispy protocol %s (dispy %s); this client speaks %s",
                        netif.host_port(ip, port), msg.proto, msg.version,
                        config.PROTOCOL_VERSION)
            return
        if self._other_address(msg.node_id, ip, port):
            return
        wanted = False
        for cs in list(self.host.clusters.values()):
            if self.host.wants(cs, ip, port) is None:
                continue
            wanted = True
            self.unmatched.pop((ip, port), None)
            link = self.host.links.get((ip, port, cs.profile))
            if link is None or link.node is None:  # never met: a bounded queue decides
                self.announced.offer((ip, port, cs.profile), msg.busy_with)
                continue
            if link.state in ("connecting", "connected"):
                continue
            if msg.busy_with:
                link.state, link.reason = "busy", f"busy with client {msg.busy_with}"
                link.retry_at = time.monotonic() + RETRY_INTERVAL
            else:
                self.host.connect(link)
        if not wanted and self.host.clusters:
            self._unmatched_node(ip, port)
        self.try_announced()

    def _on_relay(self, msg: RelayAnnouncement, addr: tuple) -> None:
        """A dispynetrelay answered our request: it relays, it runs no jobs."""
        key = (addr[0], msg.port)
        if not any(not a.wildcard and (a.host, a.port) == key
                   for cs in self.host.clusters.values() for a in cs.allocs):
            return  # nobody asked this address: not our relay
        if key not in self.relays:
            name = str(msg.name)[:100]
            log.info("discovery: %s is a dispynetrelay (%s); its network's nodes answer"
                     " through it", netif.host_port(addr[0], msg.port), name)
            self.relays[key] = name
        for link in list(self.host.links.values()):
            if (link.ip, link.port) == key and link.state not in ("connecting", "connected"):
                self.host.unreachable(link, "")

    def _other_address(self, node_id: Any, ip: str, port: int) -> bool:
        """True when node ``node_id`` is already known at another address that still
        works (it answered there too, by another address family or network)."""
        if not isinstance(node_id, str):
            return False
        known = self.node_addrs.get(node_id)
        if known is not None and known != (ip, port):
            if any((lk.ip, lk.port) == known and lk.state not in ("down", "refused")
                   for lk in self.host.links.values()):
                return True
            if any(key[:2] == known for key in (*self.announced.pending,
                                                *self.announced.connecting)):
                return True
        self.node_addrs[node_id] = (ip, port)
        return False

    def _unmatched_node(self, ip: str, port: int) -> None:
        """A node answered that no cluster's ``nodes`` matches: say so once per node (and
        in the stall report), so a pattern that matches nothing is not a silent wait."""
        if (ip, port) in self.unmatched:
            return
        self.unmatched[(ip, port)] = time.monotonic()
        patterns = sorted({a.host for cs in self.host.clusters.values() for a in cs.allocs})
        log.info("node %s answered but matches none of nodes=%s", netif.host_port(ip, port),
                 patterns)

    # ---- nodes heard of, not met yet ----------------------------------------------------

    def try_announced(self) -> None:
        """Try announced nodes not met yet, a few at a time (client/announced.py)."""
        for key, busy_with in self.announced.take():
            link = self.host.link_for(*key)
            if link.state in ("connecting", "connected"):
                self.announced.done(key, met=True)
            elif busy_with:
                link.state, link.reason = "busy", f"busy with client {busy_with}"
                link.retry_at = time.monotonic() + RETRY_INTERVAL
                self._announced_done(link)
            else:
                self.host.connect(link).add_done_callback(self._announced_callback(link))

    def _announced_callback(self, link: NodeLink) -> Callable[[object], None]:
        return lambda _: self._announced_done(link)

    def _announced_done(self, link: NodeLink) -> None:
        """An attempt on an announced node ended: forget the oldest never reached (unless
        a cluster names them), and try the next ones waiting."""
        links = self.host.links
        for key in self.announced.done(link.key, met=link.node is not None):
            old = links.get(key)
            if (old is not None and old.node is None
                    and old.state not in ("connecting", "connected")
                    and not any(not a.wildcard and a.matches(old.ip, old.port)
                                for cs in self.host.clusters.values() for a in cs.allocs)):
                del links[key]
        self.try_announced()
