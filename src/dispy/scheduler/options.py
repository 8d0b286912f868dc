"""dispyscheduler's command line: the spec's options, the 4.15 aliases, and their checks."""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import dataclass, field

from .. import config
from ..daemon import config_file
from ..daemon.files import parse_size

SECTION = "dispyscheduler"
#: Options that describe one machine, so a shared file must not hold them.
HOST_SPECIFIC = ("ip_addrs", "ext_ip_addrs", "metrics_host")
SECRETS = ("node_secret", "cluster_secret")


@dataclass
class SchedulerOptions:
    nodes: list[str] = field(default_factory=list)
    ip_addrs: list[str] = field(default_factory=list)
    ext_ip_addrs: list[str] = field(default_factory=list)
    port: int = config.ClientPort
    scheduler_port: int = config.SharedSchedulerPort
    node_port: int = config.NodePort
    node_secret: str = ""
    cluster_secret: str = ""
    node_keyfile: str | None = None
    node_certfile: str | None = None
    cluster_keyfile: str | None = None
    cluster_certfile: str | None = None
    pulse_interval: float | None = None
    ping_interval: float | None = None
    zombie_interval: float = 60.0
    msg_timeout: float = config.MsgTimeout
    dest_path_prefix: str = ""
    max_file_size: int = 0
    policy: str = "fifo"
    #: 4.15 --cooperative: programs may change node CPUs (set_node_cpus)
    cooperative: bool = False
    #: 4.15 --cleanup_nodes: remove programs' files on nodes even with cleanup=False
    cleanup_nodes: bool = False
    #: 4.15 --httpd: the monitor web page (dispy.httpd) for every program's computation
    httpd: bool = False
    httpd_host: str = ""
    httpd_port: int = config.HTTPServerPort
    #: --metrics_port: Prometheus text on this port (0: none), bound to metrics_host
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    #: discovery by the IPv4 multicast group instead of broadcast
    ipv4_udp_multicast: bool = False
    #: serve programs on this host over TCP too, not over the local path (wire/localpath.py)
    tcp_only: bool = False
    clean: bool = False
    debug: bool = False
    daemon: bool = False
    config_file: str | None = None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dispyscheduler",
        description="Share dispynode servers between several dispy client programs"
                    " (they use SharedJobCluster).")
    p.add_argument("-n", "--nodes", action="append", default=[],
                   help="node to contact at start (repeatable); not needed on the same network")
    p.add_argument("-i", "--ip_addr", "--host", dest="ip_addrs", action="append", default=[],
                   help="address or host name of an interface to use (repeatable)")
    p.add_argument("--ext_ip_addr", "--ext_host", dest="ext_ip_addrs", action="append",
                   default=[], help="address announced to nodes, for a scheduler behind NAT")
    p.add_argument("-p", "--port", type=int, default=None,
                   help=f"UDP port where nodes announce themselves (default {config.ClientPort})")
    p.add_argument("--scheduler_port", type=int, default=None,
                   help="TCP port clients connect to (default "
                        f"{config.SharedSchedulerPort})")
    p.add_argument("--node_port", type=int, default=None,
                   help=f"port the nodes serve on (default {config.NodePort})")
    p.add_argument("--dispy_port", type=int, default=None,
                   help="4.15 base port: nodes announce to base, nodes serve on base + 1,"
                        " clients connect to base + 2")
    p.add_argument("--ipv4_udp_multicast", action="store_true",
                   help=f"look for nodes by the IPv4 multicast group {config.IPv4MulticastGroup}"
                        " instead of broadcast")
    p.add_argument("--tcp_only", action="store_true",
                   help="serve programs on this host over TCP as well (by default they"
                        " move to a faster local Unix socket after the handshake): to see"
                        " their traffic in tcpdump or pass it through a proxy")
    p.add_argument("--node_secret", default="", help="secret the nodes were given")
    p.add_argument("--cluster_secret", default="",
                   help="secret clients must know (SharedJobCluster's secret)")
    p.add_argument("--node_keyfile", default=None, help="private key for TLS with nodes")
    p.add_argument("--node_certfile", default=None, help="certificate for TLS with nodes")
    p.add_argument("--cluster_keyfile", default=None, help="private key for TLS with clients")
    p.add_argument("--cluster_certfile", default=None,
                   help="certificate for TLS with clients")
    p.add_argument("--pulse_interval", type=float, default=None,
                   help="seconds between nodes' pulses; a node silent for 5 pulses is"
                        " presumed dead (1..600)")
    p.add_argument("--ping_interval", type=float, default=None,
                   help="seconds between repeated discovery of nodes")
    p.add_argument("--zombie_interval", type=float, default=60.0,
                   help="minutes a disconnected client's computations are kept (default 60)")
    p.add_argument("--msg_timeout", type=float, default=config.MsgTimeout,
                   help="seconds a network operation may take")
    p.add_argument("--dest_path_prefix", default="",
                   help="directory for clients' files (default: the system temp directory)")
    p.add_argument("--max_file_size", default="0",
                   help="largest file accepted from a client, with optional k/m/g/t suffix;"
                        " 0 = no limit")
    p.add_argument("--policy", choices=("fifo", "fair", "early"), default=None,
                   help="between computations: fifo (first submitted, first served;"
                        " default), fair (each busy computation gets an equal share of the"
                        " CPUs) or early (the computation created first is served first)")
    p.add_argument("--fair_cluster_scheduler", action="store_true",
                   help="4.15 name of --policy fair")
    p.add_argument("--early_cluster_scheduler", action="store_true",
                   help="4.15 name of --policy early")
    p.add_argument("--cooperative", action="store_true",
                   help="let programs change the CPUs of nodes (SharedJobCluster.set_node_cpus)")
    p.add_argument("--cleanup_nodes", action="store_true",
                   help="remove programs' files on the nodes when their computations close,"
                        " even with cleanup=False")
    p.add_argument("--httpd", action="store_true",
                   help="serve the monitor web page (dispy.httpd) of every program's"
                        " computation")
    p.add_argument("--httpd_host", default="",
                   help="address of the monitor page (default localhost; elsewhere it asks"
                        " for the login token printed at start)")
    p.add_argument("--httpd_port", type=int, default=config.HTTPServerPort,
                   help="port of the monitor page (default %(default)s)")
    p.add_argument("--metrics_port", type=int, default=0,
                   help="serve Prometheus metrics on this TCP port (0 = none)")
    p.add_argument("--metrics_host", default="127.0.0.1",
                   help="address the metrics page binds to (default localhost only)")
    p.add_argument("--clean", action="store_true",
                   help="remove files of earlier runs at start")
    p.add_argument("-d", "--debug", action="store_true", help="log debug messages")
    p.add_argument("--daemon", action="store_true", help="do not read commands on stdin")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="read options from FILE (options on the command line win)")
    p.add_argument("--save_config", nargs="?", const="-", default=None, metavar="FILE",
                   help="write the options to FILE (stdout without FILE) and exit;"
                        " addresses are not written")
    return p


def parse(argv: list[str] | None = None) -> SchedulerOptions:
    """Parse and validate; exits with a clear message on a bad option."""
    p = parser()
    a = p.parse_args(argv)
    if a.config:
        config_file.merge_file(parser, a, argv, SECTION)
    base = a.dispy_port
    port = a.port if a.port is not None else (base or config.ClientPort)
    node_port = a.node_port if a.node_port is not None else (
        base + 1 if base else config.NodePort)
    sched_port = a.scheduler_port if a.scheduler_port is not None else (
        base + 2 if base else config.SharedSchedulerPort)
    if a.pulse_interval is not None and not 1 <= a.pulse_interval <= 600:
        p.error("--pulse_interval must be between 1 and 600 seconds")
    if a.ping_interval is not None and not 1 <= a.ping_interval <= 1000:
        p.error("--ping_interval must be between 1 and 1000 seconds")
    if a.zombie_interval <= 0:
        p.error("--zombie_interval must be > 0 (minutes)")
    if a.msg_timeout <= 0:
        p.error("--msg_timeout must be > 0")
    try:
        max_file_size = parse_size(a.max_file_size)
    except ValueError as exc:
        p.error(f"--max_file_size: {exc}")
    for leg in ("node", "cluster"):
        key, cert = getattr(a, f"{leg}_keyfile"), getattr(a, f"{leg}_certfile")
        if key and not cert:
            p.error(f"--{leg}_keyfile needs --{leg}_certfile")
        for f in (key, cert):
            if f and not os.path.isfile(f):
                p.error(f"TLS file {f} does not exist")
    policies = [name for name, given in (("fair", a.fair_cluster_scheduler),
                                         ("early", a.early_cluster_scheduler)) if given]
    if len(policies) > 1 or (policies and a.policy not in (None, policies[0])):
        p.error("choose one policy: --policy, --fair_cluster_scheduler or"
                " --early_cluster_scheduler")
    policy = a.policy or (policies[0] if policies else "fifo")
    if not 0 <= a.metrics_port <= 65535:
        p.error("--metrics_port must be a TCP port (1-65535), or 0 for none")
    if a.save_config:
        config_file.save_options(
            a, parser(), lambda k: k in HOST_SPECIFIC or (k in SECRETS and not getattr(a, k)),
            "dispyscheduler", SECTION)
    return SchedulerOptions(
        nodes=a.nodes, ip_addrs=a.ip_addrs, ext_ip_addrs=a.ext_ip_addrs, port=port,
        scheduler_port=sched_port, node_port=node_port, node_secret=a.node_secret,
        cluster_secret=a.cluster_secret, node_keyfile=a.node_keyfile,
        node_certfile=a.node_certfile, cluster_keyfile=a.cluster_keyfile,
        cluster_certfile=a.cluster_certfile, pulse_interval=a.pulse_interval,
        ping_interval=a.ping_interval, zombie_interval=a.zombie_interval,
        msg_timeout=float(a.msg_timeout),
        dest_path_prefix=os.path.abspath(a.dest_path_prefix or tempfile.gettempdir()),
        max_file_size=max_file_size, policy=policy, clean=a.clean, debug=a.debug,
        ipv4_udp_multicast=a.ipv4_udp_multicast, tcp_only=a.tcp_only,
        cooperative=a.cooperative, cleanup_nodes=a.cleanup_nodes, httpd=a.httpd,
        httpd_host=a.httpd_host, httpd_port=a.httpd_port,
        metrics_port=a.metrics_port, metrics_host=a.metrics_host,
        daemon=a.daemon, config_file=a.config,
    )
