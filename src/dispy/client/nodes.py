"""What the client knows about nodes, and how a program chooses which to use."""

from __future__ import annotations

import logging
import re
from collections import namedtuple
from typing import Any

from .. import config
from ..wire import netif

log = logging.getLogger("dispy")

DispyNodeAvailInfo = namedtuple("DispyNodeAvailInfo", ["cpu", "memory", "disk", "swap"])
DispyNodeAvailInfo.__doc__ = (
    "Availability of a node: cpu and swap in percent available, memory and disk in bytes."
)

ClusterStatus = namedtuple("ClusterStatus", ["nodes", "jobs_pending"])


def avail_from(data: Any) -> DispyNodeAvailInfo | None:
    if not isinstance(data, dict):
        return None
    try:
        return DispyNodeAvailInfo(data["cpu"], data["memory"], data["disk"], data["swap"])
    except KeyError:
        return None


class DispyNode:
    """A node as the client sees it (passed to ``cluster_status``; accepted by methods)."""

    Initialized = 4
    Closed = 16
    AvailInfo = 17

    def __init__(self, ip_addr: str, name: str, cpus: int, port: int) -> None:
        self.ip_addr = ip_addr
        self.name = name
        self.port = port
        self.cpus = cpus
        self.avail_cpus = cpus
        self.busy = 0
        self.jobs_done = 0
        self.cpu_time = 0.0
        self.tx = 0
        self.rx = 0
        self.update_time = 0.0
        self.avail_info: DispyNodeAvailInfo | None = None
        self.platform = ""

    def __repr__(self) -> str:
        return f"<DispyNode {self.name} {self.ip_addr}:{self.port} cpus={self.cpus}>"


def unescape_pattern(host: str) -> str:
    """``'10.0.0.\\*'`` -> ``'10.0.0.*'``: published programs escape the wildcard (docs
    written in reStructuredText); the original, matching a prefix with ``re.match``,
    took them for every 10.0.0.x node. A backslash only quotes the character after it."""
    return re.sub(r"\\(.)", r"\1", host).replace("\\", "") if "\\" in host else host


def _resolve(host: str) -> str:
    """The node's address (IPv4 if the name has one, else IPv6): nodes are matched and
    reached by address. A name that does not resolve is warned about and kept."""
    try:
        return netif.resolve(host)
    except OSError as exc:
        log.warning("node host %r: its name does not resolve (%s); dispy tries to reach it"
                    " as it is", host, getattr(exc, "strerror", None) or exc)
    return host


class NodeAllocate:
    """Which nodes to use and how many of their CPUs; subclass and override ``allocate``."""

    def __init__(
        self,
        host: str,
        port: int | None = None,
        cpus: int = 0,
        depends: list | None = None,
        setup_args: tuple = (),
    ) -> None:
        if not isinstance(host, str) or not host:
            raise ValueError(f"NodeAllocate host must be a non-empty string, not {host!r}")
        if not isinstance(setup_args, tuple):
            raise ValueError("NodeAllocate setup_args must be a tuple")
        host = unescape_pattern(host)
        self.host = host if "*" in host else self._address(host)
        self.port = int(port) if port else None
        self.cpus = int(cpus)
        self.depends = list(depends or [])
        self.setup_args = setup_args
        pattern = re.escape(self.host).replace(r"\*", ".*")
        self._re = re.compile(f"^{pattern}$")

    #: a host name -> its address (a subclass made on a daemon's loop looks none up)
    _address = staticmethod(_resolve)

    @property
    def wildcard(self) -> bool:
        return "*" in self.host

    def matches(self, ip_addr: str, port: int | None = None) -> bool:
        """True when the whole address matches (``10.0.0.1`` never matches ``10.0.0.12``)."""
        if self.port and port and self.port != port:
            return False
        return bool(self._re.match(ip_addr))

    def allocate(
        self,
        cluster: Any,
        ip_addr: str,
        name: str,
        cpus: int,
        avail_info: DispyNodeAvailInfo | None = None,
        platform: str = "",
    ) -> int:
        """CPUs of node ``ip_addr`` to use (0 = do not use it)."""
        if not self.matches(ip_addr):
            return 0
        if self.cpus > 0:
            return min(cpus, self.cpus)
        if self.cpus < 0:
            return max(0, cpus + self.cpus)
        return cpus

    def __repr__(self) -> str:
        return f"NodeAllocate({self.host!r}, port={self.port}, cpus={self.cpus})"


def node_address(node: Any) -> tuple[str | None, int | None]:
    """(ip, port or None) of a node given as DispyNode, IP or host name; (None, None)
    for anything else (a wildcard is not one node)."""
    if isinstance(node, DispyNode):
        return node.ip_addr, node.port
    if isinstance(node, str) and node and "*" not in node:
        return NodeAllocate(node).host, None
    return None, None


def to_allocations(nodes: Any, node_port: int | None = config.NodePort) -> list[NodeAllocate]:
    """Normalise the ``nodes`` parameter (str, tuple, dict, NodeAllocate, DispyNode)."""
    if nodes is None:
        nodes = ["*"]
    if isinstance(nodes, (str, NodeAllocate, DispyNode, dict, tuple)):
        nodes = [nodes]
    if not isinstance(nodes, (list, set, frozenset)):
        raise ValueError(f"invalid nodes {nodes!r}: use a list of hosts or NodeAllocate")
    allocs = []
    for item in nodes:
        if isinstance(item, NodeAllocate):
            alloc = item
        elif isinstance(item, DispyNode):
            alloc = NodeAllocate(item.ip_addr, item.port)
        elif isinstance(item, str):
            alloc = NodeAllocate(item)
        elif isinstance(item, (tuple, list, dict)):
            try:
                alloc = NodeAllocate(**item) if isinstance(item, dict) else NodeAllocate(*item)
            except TypeError as exc:
                raise ValueError(f"invalid node {item!r}: {exc}") from None
        else:
            raise ValueError(f"invalid node {item!r}: use a host, a tuple or a NodeAllocate")
        if alloc.port is None:
            alloc.port = node_port
        allocs.append(alloc)
    allocs.sort(key=lambda a: (a.wildcard, -len(a.host)))
    return allocs
