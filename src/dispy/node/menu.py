"""The stdin menu of an interactive dispynode: status, CPUs, stop/start, quit."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

from ..wire.admission import quiet_accept_errors
from .daemon import NodeDaemon

PROMPT = (
    'Enter "quit" or "exit" to terminate dispynode, "stop" to stop service, "start" to'
    ' restart service, "cpus" to change CPUs used, anything else to get status: '
)


def _handle(daemon: NodeDaemon, line: str, saved: list[int]) -> None:
    words = line.split()
    cmd = words[0].lower() if words else ""
    if cmd in ("quit", "exit"):
        daemon.request_stop(terminate=False)
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


def read_commands(prompt: str, handle: Callable[[str], None], name: str) -> None:
    """Read lines on stdin in a thread; each is handled on the running loop."""
    loop = asyncio.get_running_loop()

    def reader() -> None:
        while True:
            # a line of its own: log lines printed while we wait must not run into it
            print(prompt.rstrip(), flush=True)
            line = sys.stdin.readline()
            if not line:
                return  # stdin closed: keep serving, just stop reading
            loop.call_soon_threadsafe(handle, line)

    threading.Thread(target=reader, name=name, daemon=True).start()


def start(daemon: NodeDaemon) -> None:
    saved = [daemon.cpus]
    read_commands(PROMPT, lambda line: _handle(daemon, line, saved), "dispynode-menu")


async def serve_until_stopped(daemon: Any, background: bool,
                              show_menu: Callable[[Any], None]) -> int:
    """Start a daemon (dispynode or dispyscheduler), give it its stdin menu when run
    interactively, and serve until it is told to stop; the process exit code."""
    quiet_accept_errors(asyncio.get_running_loop(), logging.getLogger("dispy.admission"))
    try:
        await daemon.start()
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 1
    if not background and sys.stdin is not None and sys.stdin.isatty():
        show_menu(daemon)
    await daemon.stop_event.wait()
    await daemon.stop()
    return 0
