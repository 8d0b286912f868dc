"""dispynode's command line: the spec's options, the 4.15 aliases, and their checks."""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import dataclass, field

from .. import config
from ..daemon import config_file
from ..daemon.files import parse_size
from .service import ServiceWindow

#: Options that describe one machine, so a file shared by many nodes must not hold them.
NODE_SPECIFIC = ("ip_addrs", "ext_ip_addrs", "name", "metrics_host")
#: Written to a saved configuration only when given.
SECRETS = ("secret", "admin_secret")


@dataclass
class NodeOptions:
    cpus: int = 0
    ip_addrs: list[str] = field(default_factory=list)
    ext_ip_addrs: list[str] = field(default_factory=list)
    node_port: int = config.NodePort
    scheduler_port: int = config.ClientPort
    scheduler_node: str | None = None
    name: str = ""
    secret: str = ""
    dest_path_prefix: str = ""
    keyfile: str | None = None
    certfile: str | None = None
    max_file_size: int = 0
    msg_timeout: float = config.MsgTimeout
    zombie_interval: float = 60.0
    ping_interval: float = 0.0
    clean: bool = False
    client_shutdown: bool = False
    force_cleanup: bool = False
    serve: int = -1
    debug: bool = False
    daemon: bool = False
    service_window: ServiceWindow | None = None
    config_file: str | None = None
    #: dispyadmin's secret: the admin role of the handshake (node/admin.py); none: no admin
    admin_secret: str = ""
    #: 4.15's --init: a Python file whose init() runs in each computation's process
    init_file: str | None = None
    #: --metrics_port: Prometheus text on this port (0: none), bound to metrics_host
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    #: announce by the IPv4 multicast group instead of broadcast
    ipv4_udp_multicast: bool = False
    #: serve clients on this host over TCP too, not over the local path (wire/localpath.py)
    tcp_only: bool = False
    #: what 4.15 options given here mean in this version (logged at start)
    notes: list[str] = field(default_factory=list)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dispynode", description="Run jobs for dispy clients on this machine."
    )
    p.add_argument("-c", "--cpus", type=int, default=0,
                   help="CPUs to use: n > 0 uses n, n < 0 leaves -n unused (default all)")
    p.add_argument("-i", "--ip_addr", "--host", dest="ip_addrs", action="append", default=[],
                   help="address or host name of an interface to serve on (repeatable)")
    p.add_argument("--ext_ip_addr", "--ext_host", dest="ext_ip_addrs", action="append",
                   default=[], help="address announced to clients, for a node behind NAT")
    p.add_argument("-p", "--node_port", type=int, default=None,
                   help=f"TCP and UDP port of this node (default {config.NodePort})")
    p.add_argument("--dispy_port", type=int, default=None,
                   help="4.15 base port: the node uses base + 1, clients base")
    p.add_argument("--scheduler_node", "--scheduler_host", dest="scheduler_node", default=None,
                   help="client or scheduler to announce this node to at start")
    p.add_argument("--scheduler_port", type=int, default=None,
                   help=f"port clients listen on for announcements (default {config.ClientPort})")
    p.add_argument("--name", default="", help="name of this node (default: host name)")
    p.add_argument("-s", "--secret", default="", help="secret clients must know")
    p.add_argument("--admin_secret", default="",
                   help="secret dispyadmin must know to see details and control this node"
                        " (without it the node cannot be administered)")
    p.add_argument("--dest_path_prefix", default="",
                   help="directory for clients' files (default: the system temp directory)")
    p.add_argument("--keyfile", default=None, help="private key for TLS")
    p.add_argument("--certfile", default=None, help="certificate for TLS")
    p.add_argument("--max_file_size", default="0",
                   help="largest file accepted, with optional k/m/g/t suffix; 0 = no limit")
    p.add_argument("--msg_timeout", type=float, default=config.MsgTimeout,
                   help="seconds a network operation may take")
    p.add_argument("--zombie_interval", type=float, default=60.0,
                   help="minutes of silence after which a client is presumed gone")
    p.add_argument("--ping_interval", type=float, default=0.0,
                   help="seconds between announcements while idle (0 = only at start)")
    p.add_argument("--serve", type=int, default=-1,
                   help="quit after serving this many clients (-1 = forever)")
    p.add_argument("--clean", action="store_true",
                   help="remove files and saved results of earlier runs at start")
    p.add_argument("--client_shutdown", action="store_true",
                   help="let a client's cleanup call dispynode_shutdown()")
    p.add_argument("--force_cleanup", action="store_true",
                   help="always remove clients' files when their computations close")
    p.add_argument("--service_start", default=None, metavar="HH:MM",
                   help="accept jobs from this time of day (needs --service_stop or _end)")
    p.add_argument("--service_stop", default=None, metavar="HH:MM",
                   help="accept no new jobs from this time of day (running jobs finish)")
    p.add_argument("--service_end", default=None, metavar="HH:MM",
                   help="kill running jobs at this time of day")
    p.add_argument("--init", default=None, metavar="FILE",
                   help="Python file whose init() (returning 0) runs in each computation's"
                        " process before setup; names it makes global are seen by the"
                        " computations (str/int ones also as environment variables of"
                        " program computations); its close() runs when the computation ends")
    p.add_argument("--unsafe_setup", action="store_true",
                   help="accepted for 4.15 compatibility: setup always runs in the"
                        " computation's own process, whose globals jobs inherit")
    p.add_argument("--ipv4_udp_multicast", action="store_true",
                   help=f"announce this node to the IPv4 multicast group"
                        f" {config.IPv4MulticastGroup} instead of by broadcast (requests"
                        f" are answered either way)")
    p.add_argument("--tcp_only", action="store_true",
                   help="serve programs on this host over TCP as well (by default they"
                        " move to a faster local Unix socket after the handshake): to see"
                        " their traffic in tcpdump or pass it through a proxy")
    p.add_argument("--metrics_port", type=int, default=0,
                   help="serve Prometheus metrics on this TCP port (0 = none)")
    p.add_argument("--metrics_host", default="127.0.0.1",
                   help="address the metrics page binds to (default localhost only)")
    p.add_argument("-d", "--debug", action="store_true", help="log debug messages")
    p.add_argument("--daemon", action="store_true", help="do not read commands on stdin")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="read options from FILE (options on the command line win)")
    p.add_argument("--save_config", nargs="?", const="-", default=None, metavar="FILE",
                   help="write the options to FILE (stdout without FILE) and exit;"
                        " address, external address and name are not written")
    return p


def config_schema(p: argparse.ArgumentParser | None = None) -> dict[str, type]:
    """Option name -> type of its value in a configuration file."""
    return config_file.schema_of(p or parser())


def parse(argv: list[str] | None = None) -> NodeOptions:
    """Parse and validate; exits with a clear message on a bad option."""
    p = parser()
    a = p.parse_args(argv)
    if a.config:
        config_file.merge_file(parser, a, argv)
    ncpu = os.cpu_count() or 1
    if a.cpus > ncpu:
        p.error(f"--cpus {a.cpus}: this machine has only {ncpu} CPUs")
    if a.cpus < 0 and ncpu + a.cpus < 1:
        p.error(f"--cpus {a.cpus}: this machine has {ncpu} CPUs, none would be left")
    try:
        max_file_size = parse_size(a.max_file_size)
    except ValueError as exc:
        p.error(f"--max_file_size: {exc}")
    node_port = a.node_port
    if node_port is None:
        node_port = a.dispy_port + 1 if a.dispy_port else config.NodePort
    sched_port = a.scheduler_port
    if sched_port is None:
        sched_port = a.dispy_port if a.dispy_port else config.ClientPort
    if a.msg_timeout <= 0:
        p.error("--msg_timeout must be > 0")
    if a.zombie_interval <= 0:
        p.error("--zombie_interval must be > 0 (minutes)")
    if a.ping_interval < 0:
        p.error("--ping_interval must be >= 0 (seconds; 0 = announce only at start)")
    try:
        window = ServiceWindow.from_options(a.service_start, a.service_stop, a.service_end)
    except ValueError as exc:
        p.error(str(exc))
    if (a.keyfile or a.certfile) and not a.certfile:
        p.error("--keyfile needs --certfile")
    for f in (a.keyfile, a.certfile):
        if f and not os.path.isfile(f):
            p.error(f"TLS file {f} does not exist")
    if a.init and not os.path.isfile(a.init):
        p.error(f"--init {a.init}: no such file")
    if not 0 <= a.metrics_port <= 65535:
        p.error("--metrics_port must be a TCP port (1-65535), or 0 for none")
    if a.save_config:
        config_file.save_options(
            a, parser(), lambda k: k in NODE_SPECIFIC or (k in SECRETS and not getattr(a, k)),
            "dispynode")
    cpus = a.cpus if a.cpus > 0 else ncpu + a.cpus
    notes = []
    if a.unsafe_setup:
        notes.append("--unsafe_setup: setup runs in the computation's own process anyway"
                     " (never in dispynode's); jobs inherit its globals")
    return NodeOptions(
        cpus=cpus, ip_addrs=a.ip_addrs, ext_ip_addrs=a.ext_ip_addrs, node_port=node_port,
        scheduler_port=sched_port, scheduler_node=a.scheduler_node, name=a.name,
        secret=a.secret,
        dest_path_prefix=os.path.abspath(a.dest_path_prefix or tempfile.gettempdir()),
        keyfile=a.keyfile, certfile=a.certfile, max_file_size=max_file_size,
        msg_timeout=float(a.msg_timeout), zombie_interval=a.zombie_interval,
        ping_interval=a.ping_interval, clean=a.clean, client_shutdown=a.client_shutdown,
        force_cleanup=a.force_cleanup, serve=a.serve, debug=a.debug, daemon=a.daemon,
        service_window=window, config_file=a.config, admin_secret=a.admin_secret,
        init_file=os.path.abspath(a.init) if a.init else None, notes=notes,
        metrics_port=a.metrics_port, metrics_host=a.metrics_host,
        ipv4_udp_multicast=a.ipv4_udp_multicast, tcp_only=a.tcp_only,
    )
