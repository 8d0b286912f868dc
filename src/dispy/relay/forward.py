"""What dispynetrelay does with each datagram, decided without sockets.

A client on another network sends its ``discover`` to the relay. The relay answers it
with a small ``relay`` datagram (so the client knows this address is a relay, not a
node), re-broadcasts the request on its own networks with the relay's own reply port,
and forwards every ``node`` answer (and every node's own announcement) to the clients
that asked recently: the client then connects to the node directly.

What keeps it from being a tool for attackers:

- it sends only to its own networks' broadcast (or multicast) address and to the
  source address of a request, never to an address named inside a message;
- it forwards ``node`` datagrams only from senders on its own networks;
- each requester has a token bucket of forwarded datagrams, so a spoofed request
  cannot turn the relay into an amplifier; with ``--secret`` only signed requests
  count at all;
- it parses JSON and nothing else (discovery datagrams are never pickles), and acts
  only on messages that passed their record's checks (wire/discoverymsg.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from ..config import PROTOCOL_VERSION
from ..wire import discovery
from ..wire.discoverymsg import Discover, DiscoveryMessage, NodeAnnouncement, RelayAnnouncement

#: seconds a requester keeps receiving node announcements after its last request
KEEP = 900.0
#: requesters remembered at once (the oldest is forgotten first)
MAX_REQUESTERS = 256
#: datagrams forwarded to one requester at once, and refilled per second
BURST, REFILL = 512, 8.0
#: seconds between re-broadcasts on behalf of one requester
MIN_INTERVAL = 1.0


@dataclass
class Requester:
    """A client (or scheduler) that asked through this relay."""

    ip: str
    port: int
    client_id: str
    last: float
    tokens: float = BURST
    refilled: float = 0.0
    rebroadcast_at: float = float("-inf")

    def take(self, now: float) -> bool:
        """One forwarded datagram, if the bucket allows."""
        self.tokens = min(BURST, self.tokens + (now - self.refilled) * REFILL)
        self.refilled = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@dataclass
class Send:
    """A datagram to send: ``msg`` to ``(ip, port)``; ``rebroadcast`` targets the
    relay's own networks (the shell picks broadcast or multicast addresses)."""

    msg: DiscoveryMessage
    ip: str | None
    port: int
    rebroadcast: bool = False


@dataclass
class RelayState:
    """The requesters and the rules; the daemon feeds it datagrams and sends what it says.

    ``key`` is ``auth.derive_key(--secret)`` or None (any request is relayed);
    ``local`` says whether a sender is on one of the relay's networks; ``name`` and
    ``relay_port`` (where requests arrive) describe this relay in its ``relay``
    answers; requests go on to ``node_port``; ``fixed`` are the ``--scheduler_node``
    targets, which get announcements without asking.
    """

    key: bytes | None
    local: Callable[[str], bool]
    name: str
    node_port: int
    relay_port: int
    reply_port: int = 0
    fixed: list[tuple[str, int]] = field(default_factory=list)
    requesters: dict[tuple[str, int], Requester] = field(default_factory=dict)

    def on_discover(self, msg: Discover, src: tuple, now: float,
                    size: int) -> tuple[list[Send], str | None]:
        """A client's ``discover`` arrived from ``src`` (``size`` bytes): what to send,
        and why nothing was if so (for the log)."""
        if self.local(src[0]):
            return [], None  # our own LAN (or our own re-broadcast): nodes answer it directly
        if self.key is not None and not discovery.signed_by(msg, self.key, now):
            return [], "not signed with the relay's secret"
        client_id = msg.client_id[:100]
        key = (src[0], msg.reply_port)
        req = self.requesters.get(key)
        if req is None:
            self._forget_old(now)
            req = self.requesters[key] = Requester(src[0], msg.reply_port, client_id, now,
                                                   refilled=now)
        req.last, req.client_id = now, client_id
        sends = []
        answer = discovery.reply_within(
            [RelayAnnouncement(name=self.name, port=self.relay_port)], size)
        if answer is not None and req.take(now):
            sends.append(Send(answer, src[0], msg.reply_port))
        if now - req.rebroadcast_at >= MIN_INTERVAL:
            req.rebroadcast_at = now
            out = discovery.discover(self.reply_port, client_id)
            sends.append(Send(out, None, self.node_port, rebroadcast=True))
        return sends, None

    def on_node(self, msg: NodeAnnouncement, src: tuple, now: float) -> list[Send]:
        """A node answered or announced itself: to every requester still interested."""
        if not self.local(src[0]):
            return []  # only nodes on our own networks are relayed
        if msg.proto != PROTOCOL_VERSION:
            return []
        # the client must connect to the node, not to us
        ip = msg.ip_addr if msg.ip_addr is not None else src[0]
        if ip.lower().startswith("fe80:"):
            return []  # a link-local address means nothing on the requester's network
        out = dataclasses.replace(msg, ip_addr=ip)
        sends = [Send(out, host, port) for host, port in self.fixed]
        for key, req in list(self.requesters.items()):
            if now - req.last > KEEP:
                del self.requesters[key]
            elif req.take(now):
                sends.append(Send(out, req.ip, req.port))
        return sends

    def _forget_old(self, now: float) -> None:
        for key, req in list(self.requesters.items()):
            if now - req.last > KEEP:
                del self.requesters[key]
        while len(self.requesters) >= MAX_REQUESTERS:
            oldest = min(self.requesters, key=lambda k: self.requesters[k].last)
            del self.requesters[oldest]
