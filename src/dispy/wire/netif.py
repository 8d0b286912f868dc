"""The host's own IPv4 interfaces, read from the interfaces themselves.

Host-name resolution is not used: on many Debian machines the host name resolves to
127.0.1.1, which broke the original's discovery.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class Interface:
    name: str
    address: str
    netmask: str
    broadcast: str | None

    def contains(self, addr: str) -> bool:
        """True when ``addr`` is on this interface's network."""
        try:
            net = ipaddress.IPv4Network(f"{self.address}/{self.netmask}", strict=False)
            return ipaddress.IPv4Address(addr) in net
        except ValueError:
            return False


def interfaces(include_loopback: bool = True) -> list[Interface]:
    """IPv4 interfaces that are up, loopback last."""
    stats = psutil.net_if_stats()
    found = []
    for name, addrs in psutil.net_if_addrs().items():
        if name in stats and not stats[name].isup:
            continue
        for a in addrs:
            if a.family != socket.AF_INET or not a.netmask:
                continue
            is_lo = ipaddress.IPv4Address(a.address).is_loopback
            if is_lo and not include_loopback:
                continue
            bcast = a.broadcast
            if not bcast and not is_lo:
                net = ipaddress.IPv4Network(f"{a.address}/{a.netmask}", strict=False)
                bcast = str(net.broadcast_address)
            found.append(Interface(name, a.address, a.netmask, None if is_lo else bcast))
    found.sort(key=lambda i: ipaddress.IPv4Address(i.address).is_loopback)
    return found


def resolve(host: str) -> str:
    """IPv4 address of a host name or address string."""
    return str(socket.getaddrinfo(host, None, socket.AF_INET)[0][4][0])


def select(ip_addrs: list[str] | None) -> list[Interface]:
    """Interfaces to use: all of them, or those holding the given addresses/host names."""
    ifs = interfaces()
    if not ip_addrs:
        return ifs
    wanted = {resolve(h) for h in ip_addrs}
    chosen = [i for i in ifs if i.address in wanted]
    missing = wanted - {i.address for i in chosen}
    if missing:
        raise ValueError(f"no local interface has address {', '.join(sorted(missing))}")
    return chosen


def address_towards(peer: str, ifs: list[Interface]) -> str | None:
    """Our address on the network that ``peer`` is on (None if no interface is)."""
    for i in ifs:
        if i.contains(peer):
            return i.address
    return None
