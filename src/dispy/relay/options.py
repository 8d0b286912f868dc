"""dispynetrelay's command line: the options of 4.15's relay, and their checks."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field

from .. import config


@dataclass
class RelayOptions:
    ip_addrs: list[str] = field(default_factory=list)
    scheduler_nodes: list[str] = field(default_factory=list)
    #: where nodes listen (the relay re-broadcasts requests there)
    node_port: int = config.NodePort
    #: where clients' requests arrive (4.15 default: the node port)
    relay_port: int = config.NodePort
    #: where clients listen for node announcements (the relay listens there too)
    scheduler_port: int = config.ClientPort
    secret: str = ""
    ipv4_udp_multicast: bool = False
    debug: bool = False
    daemon: bool = False
    notes: list[str] = field(default_factory=list)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dispynetrelay",
        description="Relay dispy clients' discovery requests from other networks to the"
                    " nodes on this one, and the nodes' answers back.")
    p.add_argument("-i", "--ip_addr", "--host", dest="ip_addrs", action="append", default=[],
                   help="address of an interface whose network to relay to (repeatable;"
                        " default all)")
    p.add_argument("--scheduler_node", "--scheduler_host", dest="scheduler_nodes",
                   action="append", default=[],
                   help="client or dispyscheduler host that gets this network's node"
                        " announcements without asking (repeatable)")
    p.add_argument("-p", "--dispy_port", type=int, default=None,
                   help=f"base port: nodes on base + 1, clients on base"
                        f" (default {config.ClientPort})")
    p.add_argument("--node_port", type=int, default=None,
                   help="port of the nodes (default base + 1)")
    p.add_argument("--relay_port", type=int, default=None,
                   help="UDP port clients send their requests to (default: the node port;"
                        " give another one when a dispynode runs on this host)")
    p.add_argument("--scheduler_port", type=int, default=None,
                   help="port clients listen on for announcements (default: base)")
    p.add_argument("-s", "--secret", default="",
                   help="relay only requests signed with this secret (the nodes' secret)")
    p.add_argument("--certfile", default=None,
                   help="accepted for 4.15 compatibility (the relay carries only UDP)")
    p.add_argument("--keyfile", default=None,
                   help="accepted for 4.15 compatibility (the relay carries only UDP)")
    p.add_argument("--ipv4_udp_multicast", action="store_true",
                   help=f"re-send requests to the multicast group {config.IPv4MulticastGroup}"
                        " instead of the broadcast address")
    p.add_argument("--daemon", action="store_true", help="do not read commands from stdin")
    p.add_argument("-d", "--debug", action="store_true", help="log debug messages")
    return p


def parse(argv: list[str] | None = None) -> RelayOptions:
    p = parser()
    a = p.parse_args(argv)
    base = a.dispy_port if a.dispy_port else config.ClientPort
    node_port = a.node_port or (base + 1 if a.dispy_port else config.NodePort)
    for name, port in (("--dispy_port", base), ("--node_port", node_port),
                       ("--relay_port", a.relay_port), ("--scheduler_port", a.scheduler_port)):
        if port is not None and not 0 < port < 65536:
            p.error(f"{name} must be a port number (1-65535)")
    for f in (a.keyfile, a.certfile):
        if f and not os.path.isfile(f):
            p.error(f"TLS file {f} does not exist")
    notes = []
    if a.certfile or a.keyfile:
        notes.append("--certfile/--keyfile: not used; the relay carries only discovery"
                     " datagrams, and clients connect to nodes directly (with TLS if the"
                     " nodes use it)")
    return RelayOptions(
        ip_addrs=a.ip_addrs, scheduler_nodes=a.scheduler_nodes, node_port=node_port,
        relay_port=a.relay_port or node_port, scheduler_port=a.scheduler_port or base,
        secret=a.secret, ipv4_udp_multicast=a.ipv4_udp_multicast, debug=a.debug,
        daemon=a.daemon, notes=notes)
