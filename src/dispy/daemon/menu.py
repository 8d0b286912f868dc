"""A daemon's stdin menu (lines read in a thread, handled on the loop) and the start,
serve, stop sequence that dispynode and dispyscheduler share."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Callable
from typing import Protocol, TypeVar

from ..wire.admission import quiet_accept_errors


class Serving(Protocol):
    """What serve_until_stopped needs of a daemon."""

    stop_event: asyncio.Event

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


D = TypeVar("D", bound=Serving)


def read_commands(prompt: str, handle: Callable[[str], None], name: str) -> None:
    """Read lines on stdin in a thread; each is handled on the running loop."""
    loop = asyncio.get_running_loop()

    def reader() -> None:
        while True:
            # a line of its own, in one write: log lines printed meanwhile (by the loop's
            # thread) must not run into it, nor come between it and its newline
            sys.stdout.write(prompt.rstrip() + "\n")
            sys.stdout.flush()
            line = sys.stdin.readline()
            if not line:
                return  # stdin closed: keep serving, just stop reading
            loop.call_soon_threadsafe(handle, line)

    threading.Thread(target=reader, name=name, daemon=True).start()


class StatusDaemon(Serving, Protocol):
    """A daemon whose menu is: quit/exit, or anything else to print its status."""

    def request_stop(self) -> None: ...

    def status_text(self) -> str: ...


def status_menu(prompt: str, name: str) -> Callable[[StatusDaemon], None]:
    """The stdin menu of dispyscheduler and dispynetrelay: "quit"/"exit" stops the
    daemon, any other line prints its status."""
    def show(daemon: StatusDaemon) -> None:
        def handle(line: str) -> None:
            if line.strip().lower() in ("quit", "exit"):
                daemon.request_stop()
            else:
                print(daemon.status_text(), flush=True)

        read_commands(prompt, handle, name)

    return show


async def serve_until_stopped(daemon: D, background: bool,
                              show_menu: Callable[[D], None]) -> int:
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
