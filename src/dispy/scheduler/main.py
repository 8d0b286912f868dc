"""dispyscheduler's entry point: parse options, serve, and a stdin status menu."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys
import threading

from .daemon import SchedulerDaemon, install_signals
from .options import parse

PROMPT = 'Enter "quit" or "exit" to terminate dispyscheduler, anything else to get status: '


def _menu(daemon: SchedulerDaemon) -> None:
    """Read commands on a thread; each is handled on the daemon's loop."""
    loop = asyncio.get_running_loop()

    def handle(line: str) -> None:
        if line.strip().lower() in ("quit", "exit"):
            daemon.request_stop()
        else:
            print(daemon.status_text(), flush=True)

    def reader() -> None:
        while True:
            print(PROMPT, end="", flush=True)
            line = sys.stdin.readline()
            if not line:
                return  # stdin closed: keep serving, just stop reading
            loop.call_soon_threadsafe(handle, line)

    threading.Thread(target=reader, name="dispyscheduler-menu", daemon=True).start()


async def _serve(argv: list[str] | None) -> int:
    opts = parse(argv)
    level = logging.DEBUG if opts.debug else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(name)s - %(message)s")
    dispy_log = logging.getLogger("dispy")
    dispy_log.handlers.clear()  # the root handler prints; no second copy
    dispy_log.setLevel(level)
    shown = dataclasses.asdict(opts)
    for key in ("node_secret", "cluster_secret"):
        shown[key] = "(given)" if shown[key] else ""
    logging.getLogger("dispy.scheduler").debug(
        "options: %s", ", ".join(f"{k}={v!r}" for k, v in sorted(shown.items())))
    daemon = SchedulerDaemon(opts)
    install_signals(daemon)
    try:
        await daemon.start()
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 1
    if not opts.daemon and sys.stdin is not None and sys.stdin.isatty():
        _menu(daemon)
    await daemon.stop_event.wait()
    await daemon.stop()
    return 0


def main(argv: list[str] | None = None) -> None:
    sys.exit(asyncio.run(_serve(argv)))
