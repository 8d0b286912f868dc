"""The stdin menu of an interactive dispynode: status, CPUs, stop/start, quit."""

from __future__ import annotations

import asyncio
import sys
import threading

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


def start(daemon: NodeDaemon) -> None:
    """Read commands on a thread; each is handled on the daemon's loop."""
    loop = asyncio.get_running_loop()
    saved = [daemon.cpus]

    def reader() -> None:
        while True:
            print(PROMPT, end="", flush=True)
            line = sys.stdin.readline()
            if not line:
                return  # stdin closed: keep serving, just stop reading
            loop.call_soon_threadsafe(_handle, daemon, line, saved)

    threading.Thread(target=reader, name="dispynode-menu", daemon=True).start()
