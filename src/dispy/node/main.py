"""dispynode's entry point: parse options, start the daemon, serve until told to stop, and
its stdin menu (status, CPUs, stop/start, quit)."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys

from .. import eventloop
from ..daemon.menu import read_commands, serve_until_stopped
from ..log import daemon_logging
from . import initfile
from .daemon import NodeDaemon, install_signals
from .options import parse

PROMPT = (
    'Enter "quit" or "exit" to terminate dispynode, "stop" to stop service, "start" to'
    ' restart service, "cpus" to change CPUs used, anything else to get status: '
)


def _handle(daemon: NodeDaemon, line: str, saved: list[int]) -> None:
    words = line.split()
    cmd = words[0].lower() if words else ""
    if cmd in ("quit", "exit"):
        daemon.request_quit()
    elif cmd == "stop":
        if daemon.cpus:
            saved[0] = daemon.cpus
        daemon.set_cpus(0)
    elif cmd == "start":
        daemon.set_cpus(saved[0] or daemon.opts.cpus)
    elif cmd == "cpus":
        try:
            daemon.set_cpus(int(words[1]))
        except (IndexError, ValueError):
            print("usage: cpus N   (N > 0 uses N CPUs, N < 0 leaves -N unused)")
    else:
        print(daemon.status_text())


def _menu(daemon: NodeDaemon) -> None:
    saved = [daemon.cpus]
    read_commands(PROMPT, lambda line: _handle(daemon, line, saved), "dispynode-menu")


async def _serve(argv: list[str] | None) -> int:
    opts = parse(argv)
    daemon_logging(opts.debug)
    shown = dataclasses.asdict(opts)
    shown["secret"] = "(given)" if opts.secret else ""
    shown["admin_secret"] = "(given)" if opts.admin_secret else ""
    log = logging.getLogger("dispy.node")
    log.debug("options: %s", ", ".join(f"{k}={v!r}" for k, v in sorted(shown.items())))
    for note in opts.notes:
        log.info("%s", note)
    if opts.init_file:  # computation hosts (our children) run it; see node.initfile
        os.environ[initfile.ENV] = opts.init_file
    try:
        daemon = NodeDaemon(opts)
    except ValueError as exc:
        print(f"dispynode: {exc}", file=sys.stderr)
        return 2
    install_signals(daemon)
    return await serve_until_stopped(daemon, opts.daemon, _menu)


def main(argv: list[str] | None = None) -> None:
    sys.exit(eventloop.run(_serve(argv)))
