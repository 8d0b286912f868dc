"""dispynode's entry point: parse options, start the daemon, serve until told to stop."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import sys

from ..log import daemon_logging
from . import initfile, menu
from .daemon import NodeDaemon, install_signals
from .options import parse


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
    return await menu.serve_until_stopped(daemon, opts.daemon, menu.start)


def main(argv: list[str] | None = None) -> None:
    sys.exit(asyncio.run(_serve(argv)))
