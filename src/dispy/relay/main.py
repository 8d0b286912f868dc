"""dispynetrelay's entry point: parse options, relay until told to stop."""

from __future__ import annotations

import asyncio
import signal
import sys

from .. import eventloop
from ..daemon.menu import serve_until_stopped, status_menu
from ..log import daemon_logging
from .daemon import RelayDaemon, log
from .options import parse

PROMPT = 'Enter "quit" or "exit" to terminate dispynetrelay, anything else to get status: '


async def _serve(argv: list[str] | None) -> int:
    opts = parse(argv)
    daemon_logging(opts.debug)
    for note in opts.notes:
        log.info("%s", note)
    try:
        daemon = RelayDaemon(opts)
    except ValueError as exc:
        print(f"dispynetrelay: {exc}", file=sys.stderr)
        return 2
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, daemon.request_stop)
    return await serve_until_stopped(daemon, opts.daemon,
                                     status_menu(PROMPT, "dispynetrelay-menu"))


def main(argv: list[str] | None = None) -> None:
    sys.exit(eventloop.run(_serve(argv)))
