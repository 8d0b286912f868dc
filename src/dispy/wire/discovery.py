"""UDP discovery datagrams: small JSON objects, never pickles.

A client broadcasts ``discover`` to the node port; nodes answer with ``node`` to the
client's port, and a starting (or newly free) node broadcasts ``node`` by itself.
Anything that does not parse is dropped with a log line.

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
import hashlib
import hmac
import json
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from ..config import PROTOCOL_VERSION, IPv4MulticastGroup
from .netif import Interface

MAGIC = b"DISPY\x01"
MAX_DATAGRAM = 8192
#: bytes a ``discover`` request is padded to (one unfragmented datagram on Ethernet)
DISCOVER_SIZE = 1024

log = logging.getLogger("dispy.discovery")


def encode(msg: dict[str, Any]) -> bytes:
    """Datagram for ``msg`` (with the protocol version added)."""
    data = MAGIC + json.dumps({"proto": PROTOCOL_VERSION, **msg}).encode()
    if len(data) > MAX_DATAGRAM:
        raise ValueError("discovery message too large")
    return data


def decode(data: bytes) -> dict[str, Any]:
    """Parse a datagram; raises ValueError with the reason for anything malformed."""
    if len(data) > MAX_DATAGRAM:
        raise ValueError(f"datagram of {len(data)} bytes is too large")
    if not data.startswith(MAGIC):
        raise ValueError("not a dispy datagram")
    try:
        msg = json.loads(data[len(MAGIC):])
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"datagram is not JSON: {str(exc)[:80]}") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("op"), str):
        raise ValueError("datagram is not a dispy message")
    return msg


#: seconds a signed ``discover`` stays valid (clocks of client and relay may differ)
AUTH_WINDOW = 300.0


def _request_mac(key: bytes, msg: dict[str, Any]) -> str:
    text = f"discover|{msg.get('client_id')}|{msg.get('reply_port')}|{msg.get('ts')}"
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def discover_request(reply_port: int, client_id: str, key: bytes | None = None,
                     now: float | None = None) -> dict[str, Any]:
    """A ``discover`` message padded to ``DISCOVER_SIZE`` bytes, room for a full reply;
    signed with ``key`` (``auth.derive_key`` of the secret) when given."""
    msg: dict[str, Any] = {"op": "discover", "reply_port": reply_port,
                           "client_id": client_id}
    if key:
        msg["ts"] = int(time.time() if now is None else now)
        msg["auth"] = _request_mac(key, msg)
    msg["pad"] = ""
    msg["pad"] = "-" * max(0, DISCOVER_SIZE - len(encode(msg)))
    return msg


def signed_by(msg: dict[str, Any], key: bytes, now: float | None = None) -> bool:
    """True when ``msg`` is a ``discover`` signed with ``key`` within ``AUTH_WINDOW``."""
    ts, mac = msg.get("ts"), msg.get("auth")
    if not isinstance(ts, int) or not isinstance(mac, str):
        return False
    if abs((time.time() if now is None else now) - ts) > AUTH_WINDOW:
        return False
    return hmac.compare_digest(_request_mac(key, msg), mac)


def reply_within(candidates: list[dict[str, Any]], limit: int) -> dict[str, Any] | None:
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
    """Hands every well-formed datagram to ``on_message(msg, addr)``; drops the rest."""

    def __init__(self, on_message: Callable[[dict, tuple], None], name: str) -> None:
        self.on_message = on_message
        self.name = name
        self.transport: asyncio.DatagramTransport | None = None
        #: size of the datagram being handled: ``on_message`` bounds its reply by it
        self.last_size = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        try:
            msg = decode(data)
        except ValueError as exc:
            log.warning("%s: dropped datagram from %s: %s", self.name, addr[0], exc)
            return
        self.last_size = len(data)
        try:
            self.on_message(msg, addr)
        except Exception:
            log.exception("%s: failed to handle %s from %s", self.name, msg.get("op"), addr[0])

    def error_received(self, exc: Exception) -> None:
        log.debug("%s: UDP error: %s", self.name, exc)

    def local_port(self) -> int:
        """The UDP port this socket is bound to (nodes answer a discover request there)."""
        if self.transport is None:
            raise RuntimeError(f"{self.name}: the discovery socket is not open")
        return int(self.transport.get_extra_info("sockname")[1])

    def send(self, msg: dict, addr: tuple) -> None:
        if self.transport is not None:
            try:
                self.transport.sendto(encode(msg), addr)
            except OSError as exc:
                log.debug("%s: could not send to %s: %s", self.name, addr, exc)


def udp_socket(port: int, reuse: bool = True) -> socket.socket:
    """A broadcast-capable UDP socket bound to all interfaces on ``port``.

    With ``reuse`` several processes on one host (clients, or nodes on other ports)
    can each receive the broadcasts sent to that port.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    if reuse:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("", port))
    sock.setblocking(False)
    return sock


def join_group(sock: socket.socket, group: str, if_addrs: list[str]) -> list[str]:
    """Join the IPv4 multicast ``group`` on each interface address; those it could join
    (an interface without multicast, such as loopback, is skipped)."""
    joined = []
    for addr in if_addrs:
        mreq = socket.inet_aton(group) + socket.inet_aton(addr)
        try:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        except OSError as exc:
            log.debug("cannot join %s on %s: %s", group, addr, exc)
            continue
        joined.append(addr)
    return joined


def send_multicast(msg: dict[str, Any], group: str, port: int, if_addr: str) -> None:
    """Send ``msg`` to the multicast ``group`` out of the interface with ``if_addr``.

    A socket of its own per send: the outgoing interface is a socket option, and the
    answer goes to the port named in the message, not to this socket."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(if_addr))
            sock.sendto(encode(msg), (group, port))
    except OSError as exc:
        log.debug("could not send to %s:%d via %s: %s", group, port, if_addr, exc)


def send_to_lan(proto: DiscoveryProtocol, msg: dict[str, Any], port: int,
                ifs: list[Interface], multicast: bool = False) -> list[str]:
    """Send ``msg`` to ``port`` on every network of ``ifs``: to its broadcast address,
    or with ``multicast`` to the IPv4 group (loopback: to the address itself); the
    targets, for the log."""
    targets = []
    for i in ifs:
        if multicast and i.broadcast:
            send_multicast(msg, IPv4MulticastGroup, port, i.address)
            targets.append(f"{IPv4MulticastGroup} via {i.address}")
        else:
            proto.send(msg, (i.broadcast or i.address, port))
            targets.append(i.broadcast or i.address)
    return targets


def announced_node(msg: dict[str, Any], addr: tuple) -> tuple[str, int] | None:
    """(address, port) of the node a ``node`` datagram announces, or None for anything
    else; the address is the one the node names (``--ext_ip_addr``), else the sender's."""
    if msg.get("op") != "node":
        return None
    ip = msg.get("ip_addr") or addr[0]
    port = msg.get("port")
    if not isinstance(ip, str) or not isinstance(port, int):
        return None
    return ip, port
