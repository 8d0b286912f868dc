"""UDP discovery datagrams: small JSON objects, never pickles.

A client broadcasts ``discover`` to the node port; nodes answer with ``node`` to the
client's port, and a starting (or newly free) node broadcasts ``node`` by itself.
Anything that does not parse is dropped with a log line. The messages are typed
records (wire/discoverymsg.py) and only records: ``encode`` takes one, ``decode`` and
``records`` give one, so no reader handles a field its record did not check. This module
frames them, signs requests and moves them.

UDP sources can be forged, so a node never answers with more bytes than it was sent:
clients pad ``discover`` to ``DISCOVER_SIZE``, and a reply that does not fit in the
request is sent lean (what a client needs to connect) or not at all. Discovery then
cannot amplify an attacker's traffic towards a victim.

A client with a secret signs its ``discover`` (``ts``, ``auth``): nodes do not need it
(the TCP handshake authenticates), but a dispynetrelay with ``--secret`` relays only
signed requests, so nobody without the secret can make it fan out.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import logging
import socket
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ..config import IPv4MulticastGroup, IPv6MulticastGroup
from .discoverymsg import (
    Discover,
    DiscoveryError,
    DiscoveryMessage,
    NodeAnnouncement,
    UnknownMessage,
    parse,
)
from .netif import Interface, is_ipv6, normalize, scoped

MAGIC = b"DISPY\x01"
MAX_DATAGRAM = 8192
#: bytes a ``discover`` request is padded to (one unfragmented datagram on Ethernet)
DISCOVER_SIZE = 1024

log = logging.getLogger("dispy.discovery")

M = TypeVar("M", bound=DiscoveryMessage)


def encode(msg: DiscoveryMessage) -> bytes:
    """Datagram for ``msg``; ValueError when it would exceed ``MAX_DATAGRAM``."""
    data = MAGIC + json.dumps(msg.as_json()).encode()
    if len(data) > MAX_DATAGRAM:
        raise ValueError("discovery message too large")
    return data


def _json_object(data: bytes) -> dict[str, Any]:
    """The framing: the JSON object of a datagram, checked only for being a dispy
    message (an ``op``); its fields are ``parse``'s to check."""
    if len(data) > MAX_DATAGRAM:
        raise DiscoveryError(f"datagram of {len(data)} bytes is too large")
    if not data.startswith(MAGIC):
        raise DiscoveryError("not a dispy datagram")
    try:
        msg = json.loads(data[len(MAGIC):])
    except (ValueError, RecursionError) as exc:
        raise DiscoveryError(f"datagram is not JSON: {str(exc)[:80]}") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("op"), str):
        raise DiscoveryError("datagram is not a dispy message")
    return msg


def decode(data: bytes) -> DiscoveryMessage:
    """The typed record of a datagram; DiscoveryError (a ValueError) with the reason for
    anything else (UnknownMessage for an op without a record)."""
    return parse(_json_object(data))


#: what an endpoint does with each datagram (``records`` makes one of a record handler)
Receiver = Callable[[bytes, tuple], None]


def records(handler: Callable[[DiscoveryMessage, tuple], None], name: str) -> Receiver:
    """The receiver for ``open_endpoint`` that hands ``handler`` the typed record of each
    datagram: a malformed one is dropped with a warning, one of an op without a record
    (nobody's business here) quietly, and an error of the handler is logged, not raised
    into the event loop."""

    def on_datagram(data: bytes, addr: tuple) -> None:
        try:
            obj = _json_object(data)
        except DiscoveryError as exc:
            log.warning("%s: dropped datagram from %s: %s", name, addr[0], exc)
            return
        try:
            msg = parse(obj)
        except UnknownMessage as exc:
            log.debug("%s: ignored datagram from %s: %s", name, addr[0], exc)
            return
        except DiscoveryError as exc:
            log.warning("%s: dropped %s from %s: %s", name, str(obj["op"])[:40], addr[0],
                        exc)
            return
        try:
            handler(msg, addr)
        except Exception:
            log.exception("%s: failed to handle %s from %s", name, msg.op, addr[0])

    return on_datagram


#: seconds a signed ``discover`` stays valid (clocks of client and relay may differ)
AUTH_WINDOW = 300.0


def _request_mac(key: bytes, msg: Discover) -> str:
    text = "|".join(str(v) for v in (msg.client_id, msg.reply_port, msg.ts,
                                     msg.announce_port, msg.ext_ip_addr))
    return hmac.new(key, b"discover|" + text.encode(), hashlib.sha256).hexdigest()


def discover(reply_port: int, client_id: str, key: bytes | None = None,
             now: float | None = None, announce_port: int | None = None,
             ext_ip_addr: str | None = None) -> Discover:
    """A ``discover`` padded to ``DISCOVER_SIZE`` bytes, room for a full reply; signed
    with ``key`` (``auth.derive_key`` of the secret) when given. Nodes answer to
    ``reply_port``; ``announce_port`` (and behind NAT ``ext_ip_addr``) say where the
    sender hears their later announcements (node/listeners.py)."""
    msg = Discover(reply_port=reply_port, client_id=client_id, announce_port=announce_port,
                   ext_ip_addr=ext_ip_addr)
    if key:
        msg = dataclasses.replace(msg, ts=int(time.time() if now is None else now))
        msg = dataclasses.replace(msg, auth=_request_mac(key, msg))
    msg = dataclasses.replace(msg, pad="")
    return dataclasses.replace(msg, pad="-" * max(0, DISCOVER_SIZE - len(encode(msg))))


def signed_by(msg: Discover, key: bytes, now: float | None = None) -> bool:
    """True when ``msg`` is signed with ``key`` within ``AUTH_WINDOW``."""
    ts, mac = msg.ts, msg.auth
    if not isinstance(ts, int) or not isinstance(mac, str):
        return False
    if abs((time.time() if now is None else now) - ts) > AUTH_WINDOW:
        return False
    return hmac.compare_digest(_request_mac(key, msg), mac)


def reply_within(candidates: Sequence[M], limit: int) -> M | None:
    """The first of ``candidates`` (fullest first) whose datagram takes at most ``limit``
    bytes, or None: the reply to a request of ``limit`` bytes amplifies nothing."""
    for msg in candidates:
        try:
            if len(encode(msg)) <= limit:
                return msg
        except ValueError:
            continue
    return None


class DiscoveryProtocol(asyncio.DatagramProtocol):
    """Hands every datagram to ``receiver(data, addr)`` (``records``: typed records).

    One endpoint has an IPv4 socket and, where the host has IPv6, an IPv6 socket on the
    same port (``v6``, whose datagrams arrive here too); ``send`` picks by address."""

    def __init__(self, receiver: Receiver, name: str) -> None:
        self.receiver = receiver
        self.name = name
        self.transport: asyncio.DatagramTransport | None = None
        #: size of the datagram being handled: ``on_message`` bounds its reply by it
        self.last_size = 0
        self.v6: DiscoveryProtocol | None = None
        self.primary: DiscoveryProtocol = self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.primary.last_size = len(data)
        if len(addr) >= 4 and addr[3] and "%" not in addr[0]:  # IPv6 with a scope
            addr = (scoped(addr[0], addr[3]), addr[1])
        self.receiver(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("%s: UDP error: %s", self.name, exc)

    def local_port(self) -> int:
        """The UDP port this socket is bound to (nodes answer a discover request there)."""
        if self.transport is None:
            raise RuntimeError(f"{self.name}: the discovery socket is not open")
        return int(self.transport.get_extra_info("sockname")[1])

    def send(self, msg: DiscoveryMessage, addr: tuple) -> None:
        proto = self.v6 if is_ipv6(addr[0]) else self
        if proto is None or proto.transport is None:
            log.debug("%s: no IPv6 socket to send to %s", self.name, addr[0])
            return
        data = encode(msg)
        try:
            proto.transport.sendto(data, addr)
        except (OSError, ValueError) as exc:  # ValueError: a host name that did not resolve
            log.debug("%s: could not send to %s: %s", self.name, addr, exc)

    def close(self) -> None:
        for proto in (self, self.v6):
            if proto is not None and proto.transport is not None:
                proto.transport.close()


def udp_socket(port: int, reuse: bool = True,
               family: socket.AddressFamily = socket.AF_INET) -> socket.socket:
    """A broadcast-capable UDP socket bound to all interfaces on ``port`` (IPv6: all
    IPv6 interfaces, IPv6 only).

    With ``reuse`` several processes on one host (clients, or nodes on other ports)
    can each receive the broadcasts sent to that port.
    """
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        if reuse:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("::" if family == socket.AF_INET6 else "", port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def join_group(sock: socket.socket, ifs: list[Interface]) -> list[str]:
    """Join dispy's multicast group of the socket's family on each of ``ifs`` (of that
    family, loopback skipped); the addresses of the interfaces joined."""
    joined = []
    indexes = set()
    for i in ifs:
        if i.loopback or i.family != sock.family:
            continue
        try:
            if i.ipv6:
                if i.index in indexes:
                    continue
                mreq = socket.inet_pton(socket.AF_INET6, IPv6MulticastGroup) + \
                    struct.pack("@I", i.index)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
                indexes.add(i.index)
            else:
                mreq = socket.inet_aton(IPv4MulticastGroup) + socket.inet_aton(i.address)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        except OSError as exc:
            log.debug("cannot join the multicast group on %s: %s", i.address, exc)
            continue
        joined.append(i.address)
    return joined


async def open_endpoint(port: int, reuse: bool, receiver: Receiver, name: str,
                        ifs: list[Interface]) -> DiscoveryProtocol:
    """A discovery endpoint on ``port`` (0: any free one), IPv4 and, when ``ifs`` has
    IPv6 interfaces, IPv6 on the same port; both joined to dispy's multicast groups and
    feeding ``receiver`` (``records(handler, name)``). OSError when the IPv4 port cannot
    be had (an IPv6 one that cannot is logged)."""
    loop = asyncio.get_running_loop()
    sock = udp_socket(port, reuse)
    join_group(sock, ifs)
    _, proto = await loop.create_datagram_endpoint(
        lambda: DiscoveryProtocol(receiver, name), sock=sock)
    if any(i.ipv6 for i in ifs):
        port = proto.local_port()
        try:
            sock6 = udp_socket(port, reuse, socket.AF_INET6)
        except OSError as exc:
            log.warning("%s: no IPv6 discovery on UDP port %d: %s", name, port, exc.strerror)
            return proto
        join_group(sock6, ifs)
        _, proto.v6 = await loop.create_datagram_endpoint(
            lambda: DiscoveryProtocol(receiver, name), sock=sock6)
        proto.v6.primary = proto
    return proto


def send_multicast(msg: DiscoveryMessage, port: int, iface: Interface) -> None:
    """Send ``msg`` to dispy's multicast group out of ``iface``.

    A socket of its own per send: the outgoing interface is a socket option, and the
    answer goes to the port named in the message, not to this socket."""
    try:
        with socket.socket(iface.family, socket.SOCK_DGRAM) as sock:
            if iface.ipv6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, iface.index)
                sock.sendto(encode(msg), (IPv6MulticastGroup, port, 0, iface.index))
            else:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                                socket.inet_aton(iface.address))
                sock.sendto(encode(msg), (IPv4MulticastGroup, port))
    except OSError as exc:
        log.debug("could not send to the multicast group via %s: %s", iface.address, exc)


def send_to_lan(proto: DiscoveryProtocol, msg: DiscoveryMessage, port: int,
                ifs: list[Interface], multicast: bool = False) -> list[str]:
    """Send ``msg`` to ``port`` on every network of ``ifs``: IPv4 to its broadcast
    address, or with ``multicast`` to the IPv4 group; IPv6 always to the IPv6 group
    (once per interface); loopback to the address itself. The targets, for the log."""
    targets = []
    indexes = set()
    v4_loopback = any(i.loopback and not i.ipv6 for i in ifs)
    for i in ifs:
        if i.loopback and i.ipv6 and v4_loopback:
            continue  # the same host, asked once
        if i.loopback:
            proto.send(msg, (i.address, port))
            targets.append(i.address)
        elif i.ipv6 or multicast:
            if i.ipv6 and i.index in indexes:
                continue
            indexes.add(i.index)
            send_multicast(msg, port, i)
            targets.append(f"{IPv6MulticastGroup if i.ipv6 else IPv4MulticastGroup}"
                           f" via {i.name}")
        else:
            proto.send(msg, (i.broadcast or i.address, port))
            targets.append(i.broadcast or i.address)
    return targets


def announced_node(msg: DiscoveryMessage, addr: tuple) -> tuple[str, int] | None:
    """(address, port) of the node a ``node`` record announces, None for another record;
    the address is the one the node names (``--ext_ip_addr``), else the sender's, and the
    sender's for an IPv6 link-local one (only ours names the right interface)."""
    if not isinstance(msg, NodeAnnouncement):
        return None
    ip = msg.ip_addr or addr[0]
    if ip.lower().startswith("fe80:"):
        ip = addr[0]
    return normalize(ip), msg.port
