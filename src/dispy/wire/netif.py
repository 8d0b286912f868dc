"""The host's own IPv4 and IPv6 interfaces, read from the interfaces themselves.

Host-name resolution is not used: on many Debian machines the host name resolves to
127.0.1.1, which broke the original's discovery. An IPv6 link-local address carries
its interface (``fe80::1%eth0``): without it the address means nothing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

import psutil


def split_scope(addr: str) -> tuple[str, str]:
    """``'fe80::1%eth0'`` -> ``('fe80::1', 'eth0')``; no scope: ``(addr, '')``."""
    host, _, scope = addr.partition("%")
    return host, scope


def is_ipv6(addr: str) -> bool:
    return ":" in addr


def scoped(host: str, scope_id: int) -> str:
    """``'fe80::1'`` and the scope id a socket gave -> ``'fe80::1%eth0'``."""
    try:
        return f"{host}%{socket.if_indextoname(scope_id)}"
    except OSError:
        return f"{host}%{scope_id}"


def host_port(host: str, port: int) -> str:
    """``'10.0.0.1:51348'``, ``'[fd00::1]:51348'``."""
    return f"[{host}]:{port}" if is_ipv6(host) else f"{host}:{port}"


def normalize(addr: str) -> str:
    """One spelling per address (``fd77:0::1`` -> ``fd77::1``), the scope kept."""
    host, scope = split_scope(addr)
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        return addr
    return f"{host}%{scope}" if scope else host


@dataclass(frozen=True)
class Interface:
    name: str
    address: str
    netmask: str
    #: IPv4 broadcast address; None on loopback and on IPv6 (which has none: multicast)
    broadcast: str | None
    family: int = socket.AF_INET
    #: interface index (IPv6 multicast is sent and joined by index)
    index: int = 0

    @property
    def ipv6(self) -> bool:
        return self.family == socket.AF_INET6

    @property
    def loopback(self) -> bool:
        return ipaddress.ip_address(split_scope(self.address)[0]).is_loopback

    @property
    def link_local(self) -> bool:
        return ipaddress.ip_address(split_scope(self.address)[0]).is_link_local

    def contains(self, addr: str) -> bool:
        """True when ``addr`` is on this interface's network."""
        host, scope = split_scope(addr)
        try:
            mask = self.netmask
            if self.ipv6:  # ipaddress takes IPv6 masks only as prefix lengths
                mask = str(bin(int(ipaddress.IPv6Address(mask))).count("1"))
            net = ipaddress.ip_network(f"{split_scope(self.address)[0]}/{mask}", strict=False)
            if ipaddress.ip_address(host) not in net:
                return False
        except ValueError:
            return False
        return not (self.link_local and scope and scope != self.name)


def interfaces(include_loopback: bool = True) -> list[Interface]:
    """Interfaces that are up: IPv4 first, then IPv6, loopback last."""
    stats = psutil.net_if_stats()
    found = []
    for name, addrs in psutil.net_if_addrs().items():
        if name in stats and not stats[name].isup:
            continue
        for a in addrs:
            if a.family not in (socket.AF_INET, socket.AF_INET6) or not a.netmask:
                continue
            if a.family == socket.AF_INET6:
                host = split_scope(a.address)[0]
                addr = f"{host}%{name}" if ipaddress.ip_address(host).is_link_local else host
                iface = Interface(name, addr, a.netmask, None, socket.AF_INET6,
                                  _index(name))
            else:
                bcast = a.broadcast
                if not bcast:
                    net = ipaddress.IPv4Network(f"{a.address}/{a.netmask}", strict=False)
                    bcast = str(net.broadcast_address)
                iface = Interface(name, a.address, a.netmask, bcast, socket.AF_INET,
                                  _index(name))
                if iface.loopback:
                    iface = Interface(name, a.address, a.netmask, None, socket.AF_INET,
                                      iface.index)
            if iface.loopback and not include_loopback:
                continue
            found.append(iface)
    found.sort(key=lambda i: (i.loopback, i.ipv6, i.link_local))
    return found


def _index(name: str) -> int:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return 0


def literal(host: str) -> str | None:
    """``host`` normalized if it is an IP address already (no resolver call), else None."""
    try:
        ipaddress.ip_address(split_scope(host)[0])
    except ValueError:
        return None
    return normalize(host)


def _first(infos: list) -> str:
    """IPv4 if the name has one, else IPv6 (a link-local one with its ``%interface``:
    getaddrinfo gives the scope as a number of its own)."""
    if not infos:
        raise OSError("no address")
    infos = sorted(infos, key=lambda info: info[0] != socket.AF_INET)
    sockaddr = infos[0][4]
    addr = str(sockaddr[0])
    if len(sockaddr) >= 4 and sockaddr[3] and "%" not in addr:
        addr = scoped(addr, int(sockaddr[3]))
    return normalize(addr)


def _lookup_error(host: str) -> OSError:
    """A name the resolver cannot even encode (a label over 63 characters) is one that
    does not resolve, as any other."""
    return socket.gaierror(socket.EAI_NONAME, f"not a valid host name: {host[:80]!r}")


def resolve(host: str) -> str:
    """Address of a host name or address string: IPv4 if it has one, else IPv6 (a
    link-local IPv6 address keeps its ``%interface``). OSError if there is none."""
    found = literal(host)
    if found is not None:
        return found
    try:
        return _first(socket.getaddrinfo(host, None, socket.AF_UNSPEC, socket.SOCK_DGRAM))
    except UnicodeError:
        raise _lookup_error(host) from None


async def resolve_async(host: str) -> str:
    """``resolve`` for a daemon's event loop: a slow or unreachable DNS server must not
    stop the loop (its jobs, its pages) while it answers."""
    found = literal(host)
    if found is not None:
        return found
    loop = asyncio.get_running_loop()
    try:
        return _first(await loop.getaddrinfo(host, None, family=socket.AF_UNSPEC,
                                             type=socket.SOCK_DGRAM))
    except UnicodeError:
        raise _lookup_error(host) from None


def select(ip_addrs: list[str] | None) -> list[Interface]:
    """Interfaces to use: all of them, or those holding the given addresses/host names.
    ValueError (with a message for the user) for one that is not ours or not known."""
    ifs = interfaces()
    if not ip_addrs:
        return ifs
    wanted = set()
    for h in ip_addrs:
        try:
            wanted.add(resolve(h))
        except OSError as exc:
            raise ValueError(f"cannot use address {h!r}: {exc.strerror or exc}") from None
    chosen = [i for i in ifs if i.address in wanted or
              (i.link_local and split_scope(i.address)[0] in wanted)]
    missing = wanted - {i.address for i in chosen} - {split_scope(i.address)[0] for i in chosen}
    if missing:
        raise ValueError(f"no local interface has address {', '.join(sorted(missing))}")
    return chosen


def address_towards(peer: str, ifs: list[Interface]) -> str | None:
    """Our address on the network that ``peer`` is on (None if no interface is)."""
    for i in ifs:
        if i.contains(peer):
            return i.address
    return None
