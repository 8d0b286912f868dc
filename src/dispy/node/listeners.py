"""Who hears this node's later announcements besides its own networks: the clients and
schedulers that asked for it lately, also from other networks.

A node announces itself when it starts, when a client leaves, when its CPUs or service
window change and every ``--ping_interval``. A program on another network (through a
router, a relay or NAT) hears those only if the node knows where it listens. Each
``discover`` names the port its sender listens on (``announce_port``); a sender behind
NAT also names its public address (``ext_ip_addr``: the client's ``ext_host``,
dispyscheduler's ``--ext_ip_addr``), where its gateway forwards that port.

An address named in a datagram is trusted only when the request is signed with the
node's secret: otherwise anyone could aim the node's announcements at a victim. Unsigned
requests are remembered at their source address only, the targets are bounded and
forgotten after ``KEEP`` seconds, and each gets one small datagram per announcement.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from ..wire import discovery, netif
from ..wire.discoverymsg import Discover

#: seconds a requester is remembered after its last request
KEEP = 3600.0
#: requesters remembered at once
MAX_TARGETS = 32


def _port(value: int | None) -> int | None:
    """``value`` when it names a port (0, an unbound program's, names none)."""
    return value if value is not None and 0 < value < 65536 else None


def _address(value: str | None) -> str | None:
    """``value`` normalized when it is an IP address (a record checks only its type)."""
    if value is None or len(value) > 64:
        return None
    try:
        ipaddress.ip_address(netif.split_scope(value)[0])
    except ValueError:
        return None
    return netif.normalize(value)


@dataclass
class Listeners:
    """``key``: the node's ``auth.derive_key(secret)``, None for a node without one."""

    key: bytes | None
    targets: dict[tuple[str, int], float] = field(default_factory=dict)

    def heard(self, msg: Discover, src: str, now: float, wall: float) -> \
            tuple[str, int] | None:
        """A ``discover`` from ``src``: remember where its sender listens (returned)."""
        port = _port(msg.announce_port)
        if port is None:
            return None
        ip = src
        named = _address(msg.ext_ip_addr)
        if named is not None and self.key is not None and discovery.signed_by(
                msg, self.key, wall):
            ip = named
        target = (ip, port)
        self.targets.pop(target, None)
        self.targets[target] = now
        while len(self.targets) > MAX_TARGETS:
            del self.targets[next(iter(self.targets))]  # the least recently heard
        return target

    def current(self, now: float) -> list[tuple[str, int]]:
        """Targets heard from within ``KEEP`` seconds (older ones are forgotten)."""
        for target, seen in list(self.targets.items()):
            if now - seen > KEEP:
                del self.targets[target]
        return list(self.targets)
