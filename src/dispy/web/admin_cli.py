"""dispyadmin's command line: options of the spec, configuration files, stdin commands."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from .. import config
from ..daemon import config_file
from ..daemon.menu import read_commands
from ..log import daemon_logging
from .admin import AdminOptions, AdminServer

SECTION = "dispyadmin"
PROMPT = 'Enter "quit" or "exit" to terminate dispyadmin, "secret" to set an admin secret,' \
         ' "scan" to look for nodes: '


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dispyadmin", description="Web pages to watch and control dispy nodes.")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="read options from FILE (options on the command line win)")
    p.add_argument("--save_config", nargs="?", const="-", default=None, metavar="FILE",
                   help="write the options to FILE (stdout without FILE) and exit")
    p.add_argument("-d", "--debug", action="store_true", help="log debug messages")
    p.add_argument("--secret", default="",
                   help="admin secret of the nodes (their --admin_secret); safer set in the"
                        " browser or a --config file: others can see a process's arguments")
    p.add_argument("-i", "--host", "--ip_addr", dest="hosts", action="append", default=[],
                   help="address or host name of the interface used to reach nodes"
                        " (repeatable; default all interfaces)")
    p.add_argument("--http_host", default="localhost",
                   help="address the web server listens on (default localhost; any other"
                        " needs the login token printed at start)")
    p.add_argument("--http_port", type=int, default=config.HTTPServerPort,
                   help=f"port of the web server (default {config.HTTPServerPort})")
    p.add_argument("--info_port", type=int, default=config.ClientPort,
                   help=f"UDP port where nodes announce themselves (default {config.ClientPort})")
    p.add_argument("--node_port", type=int, default=config.NodePort,
                   help=f"port of the nodes (default {config.NodePort})")
    p.add_argument("--poll_interval", type=float, default=60.0,
                   help="seconds between polls of the nodes' details (default 60)")
    p.add_argument("--ping_interval", type=float, default=600.0,
                   help="seconds between broadcasts looking for new nodes (default 600)")
    p.add_argument("--ipv4_udp_multicast", action="store_true",
                   help="look for nodes by the IPv4 multicast group instead of broadcast")
    p.add_argument("--keyfile", default=None, help="private key for TLS (nodes and web)")
    p.add_argument("--certfile", default=None,
                   help="certificate for TLS: the nodes' --certfile; also used for https")
    p.add_argument("--daemon", action="store_true", help="do not read commands on stdin")
    return p


def parse(argv: list[str] | None = None) -> AdminOptions:
    p = parser()
    a = p.parse_args(argv)
    if a.config:
        config_file.merge_file(parser, a, argv, SECTION)
    for port, what in ((a.http_port, "--http_port"), (a.info_port, "--info_port"),
                       (a.node_port, "--node_port")):
        if not 0 <= port < 65536:
            p.error(f"{what} {port} is not a port number")
    if not 1 <= a.poll_interval <= 86400:
        p.error("--poll_interval must be between 1 and 86400 seconds")
    if not 1 <= a.ping_interval <= 86400:
        p.error("--ping_interval must be between 1 and 86400 seconds")
    if a.keyfile and not a.certfile:
        p.error("--keyfile needs --certfile")
    for f in (a.keyfile, a.certfile):
        if f and not os.path.isfile(f):
            p.error(f"TLS file {f} does not exist")
    if a.save_config:
        config_file.save_options(a, parser(), lambda k: k == "secret" and not a.secret,
                                 "dispyadmin", SECTION)
    return AdminOptions(
        secret=a.secret, hosts=a.hosts, http_host=a.http_host, http_port=a.http_port,
        info_port=a.info_port, node_port=a.node_port, poll_interval=a.poll_interval,
        ping_interval=a.ping_interval, ipv4_udp_multicast=a.ipv4_udp_multicast,
        keyfile=a.keyfile, certfile=a.certfile, debug=a.debug, daemon=a.daemon)


def _menu(server: AdminServer) -> None:
    waiting_secret = [False]

    def handle(line: str) -> None:
        text = line.strip()
        if waiting_secret[0]:
            waiting_secret[0] = False
            server.add_secret(text)
            return
        cmd = text.lower()
        if cmd in ("quit", "exit"):
            server.request_stop()
        elif cmd == "secret":
            waiting_secret[0] = True
            print("Admin secret: ", end="", flush=True)
        elif cmd == "scan":
            server.scan()
        elif cmd:
            print(f"Ignoring invalid command {text!r}")

    read_commands(PROMPT, handle, "dispyadmin-menu")


async def _serve(argv: list[str] | None) -> int:
    opts = parse(argv)
    daemon_logging(opts.debug)
    server = AdminServer(opts)
    try:
        await server.start()
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 1
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, server.request_stop)
    loop.add_signal_handler(signal.SIGTERM, server.request_stop)
    if not opts.daemon and sys.stdin is not None and sys.stdin.isatty():
        _menu(server)
    await server.stop_event.wait()
    await server.stop()
    logging.getLogger("dispy.admin").info("dispyadmin: stopped")
    return 0


def main(argv: list[str] | None = None) -> None:
    sys.exit(asyncio.run(_serve(argv)))
