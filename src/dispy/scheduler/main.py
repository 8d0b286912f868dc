"""dispyscheduler's entry point: parse options, serve, and a stdin status menu."""

from __future__ import annotations

import dataclasses
import logging
import sys

from .. import eventloop
from ..daemon.menu import serve_until_stopped, status_menu
from ..log import daemon_logging
from .daemon import SchedulerDaemon, install_signals
from .options import parse

PROMPT = 'Enter "quit" or "exit" to terminate dispyscheduler, anything else to get status: '


async def _serve(argv: list[str] | None) -> int:
    opts = parse(argv)
    daemon_logging(opts.debug)
    shown = dataclasses.asdict(opts)
    for key in ("node_secret", "cluster_secret"):
        shown[key] = "(given)" if shown[key] else ""
    logging.getLogger("dispy.scheduler").debug(
        "options: %s", ", ".join(f"{k}={v!r}" for k, v in sorted(shown.items())))
    daemon = SchedulerDaemon(opts)
    install_signals(daemon)
    return await serve_until_stopped(daemon, opts.daemon,
                                     status_menu(PROMPT, "dispyscheduler-menu"))


def main(argv: list[str] | None = None) -> None:
    sys.exit(eventloop.run(_serve(argv)))
