"""``dispy status``: the nodes that answer, as their discovery announcements describe
them (name, address, CPUs, busy, with whom, what is free). Read-only: it asks nodes to
announce themselves (UDP, the same request a client sends) and waits ``--timeout``."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from typing import Any

from .. import config
from ..client.nodes import node_address
from ..wire import discovery, netif
from ..wire.discoverymsg import DiscoveryMessage, NodeAnnouncement


def add_parser(sub: Any) -> None:
    p = sub.add_parser("status", help="list the nodes that answer on the LAN",
                       description=__doc__)
    p.add_argument("-n", "--nodes", dest="nodes", action="append", default=[],
                   metavar="NODE", help="also ask this node directly (repeatable: nodes on"
                                        " other networks)")
    p.add_argument("--node_port", type=int, default=config.NodePort,
                   help=f"the nodes' port (default {config.NodePort})")
    p.add_argument("-i", "--ip_addr", dest="ip_addrs", action="append", default=[],
                   help="broadcast only from the interface with this address (repeatable)")
    p.add_argument("--timeout", type=float, default=2.0,
                   help="seconds to wait for answers (default 2)")
    p.add_argument("--json", action="store_true", help="print the nodes as JSON")
    p.set_defaults(handler=status)


async def collect(targets: list[tuple[str, int]], broadcast: bool, port: int,
                  ip_addrs: list[str], timeout: float) -> dict[str, NodeAnnouncement]:
    """Announcements received within ``timeout``, by ``ip:port``; each with the address
    and port the node is reached at."""
    found: dict[str, NodeAnnouncement] = {}
    seen: set[str] = set()  # node ids: a node answering by IPv4 and IPv6 is listed once

    def heard(msg: DiscoveryMessage, addr: tuple) -> None:
        node = discovery.announced_node(msg, addr)
        if node is None or not isinstance(msg, NodeAnnouncement) or msg.node_id in seen:
            return
        if msg.node_id is not None:
            seen.add(msg.node_id)
        found[netif.host_port(*node)] = dataclasses.replace(msg, ip_addr=node[0],
                                                            port=node[1])

    ifs = netif.select(ip_addrs or None)
    proto = await discovery.open_endpoint(0, False, discovery.records(heard, "dispy status"),
                                          "dispy status", ifs)
    try:
        request = discovery.discover(proto.local_port(), "dispy-status")
        if broadcast:
            discovery.send_to_lan(proto, request, port, ifs)
        for target in targets:
            proto.send(request, target)
        await asyncio.sleep(timeout)
    finally:
        proto.close()
    return found


def table(nodes: list[NodeAnnouncement]) -> str:
    lines = [f"{'node':24} {'address':22} {'cpus':>4} {'busy':>4}  {'cpu free':>8}"
             f" {'mem free':>9} {'disk free':>9}  with"]
    for n in nodes:
        # avail_info is the node's free-form measurement (node/daemon.py): read with care
        avail = n.avail_info or {}
        serving = n.accepting is not False
        with_whom = n.busy_with or ("-" if serving else "not serving")
        name = "?" if n.name is None else n.name
        lines.append(
            f"{name[:24]:24} {netif.host_port(n.ip_addr or '?', n.port):22}"
            f" {n.cpus or 0:>4} {n.busy or 0:>4}  {_pct(avail.get('cpu')):>8}"
            f" {_size(avail.get('memory')):>9} {_size(avail.get('disk')):>9}  {with_whom}")
    return "\n".join(lines)


def _pct(value: Any) -> str:
    return f"{value:.0f}%" if isinstance(value, (int, float)) else "-"


def _size(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return "-"


def status(args: argparse.Namespace) -> int:
    """Exit status 0 when some node answered, 1 when none did."""
    targets = []
    for name in args.nodes:
        host, port = node_address(name)
        if host is None:
            print(f"dispy status: -n {name}: not a node address or name", file=sys.stderr)
            return 2
        targets.append((host, port or args.node_port))
    try:
        found = asyncio.run(collect(targets, not args.nodes, args.node_port,
                                    args.ip_addrs, args.timeout))
    except (OSError, ValueError) as exc:
        print(f"dispy status: {exc}", file=sys.stderr)
        return 2
    nodes = [found[k] for k in sorted(found)]
    if args.json:
        keep = ("name", "ip_addr", "port", "cpus", "busy", "busy_with", "accepting",
                "avail_info", "platform", "version")
        print(json.dumps([{k: getattr(n, k) for k in keep} for n in nodes], indent=1))
    elif nodes:
        print(table(nodes))
    else:
        print(f"no node answered within {args.timeout} s", file=sys.stderr)
    return 0 if nodes else 1
