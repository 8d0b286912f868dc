"""Admission of connections that have not authenticated yet.

Anyone who can reach a daemon's port can open connections that never say hello. Each
holds a descriptor until the handshake times out, so without a bound one host can
exhaust the daemon's descriptors (EMFILE) and lock out legitimate clients. A daemon
admits a new connection only while its source and the whole daemon are under their
caps and enough descriptors stay free for authenticated peers (their files, job
processes, results database); the rest are closed at once.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
from collections.abc import Callable
from typing import Any

#: Connections from one address that may be in their handshake at the same time.
PER_SOURCE = 16
#: Connections in their handshake at the same time, from all sources together.
TOTAL = 128
#: Descriptors kept free for authenticated peers: at least this many ...
RESERVE_MIN = 16
#: ... or this share of the descriptor limit, whichever is larger.
RESERVE_SHARE = 0.1
#: Looks at the free descriptors before refusing for lack of them, and the wait between.
SETTLE_CHECKS = 5
SETTLE_DELAY = 0.05


def _fd_dir() -> str | None:
    for path in ("/proc/self/fd", "/dev/fd"):
        if os.path.isdir(path):
            return path
    return None


_FD_DIR = _fd_dir()


def descriptor_limit() -> int | None:
    """The soft RLIMIT_NOFILE, or None when unlimited."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def free_descriptors() -> int | None:
    """Descriptors this process may still open, or None when unknown or unlimited."""
    limit = descriptor_limit()
    if limit is None or _FD_DIR is None:
        return None
    try:
        used = len(os.listdir(_FD_DIR)) - 1  # listdir's own descriptor
    except OSError:
        return None
    return limit - used


def default_reserve() -> int:
    """Descriptors to keep free under the current limit (it may change while we run)."""
    limit = descriptor_limit()
    return RESERVE_MIN if limit is None else max(RESERVE_MIN, int(limit * RESERVE_SHARE))


class Admission:
    """Counts unauthenticated connections per source and in all.

    ``admit(ip)`` before the handshake (False: close the connection now), ``release(ip)``
    once the handshake ended, however it ended. ``free_fds`` returns the descriptors still
    free (None: unknown, not checked)."""

    def __init__(
        self,
        name: str,
        per_source: int = PER_SOURCE,
        total: int = TOTAL,
        reserve: int | None = None,
        free_fds: Callable[[], int | None] = free_descriptors,
        logger: logging.Logger | None = None,
    ) -> None:
        if per_source < 1 or total < 1:
            raise ValueError("admission limits must be at least 1")
        self.name = name
        self.per_source = per_source
        self.total = total
        #: descriptors kept free; None: follow the current limit (default_reserve)
        self.reserve = reserve
        self.free_fds = free_fds
        self.log = logger or logging.getLogger("dispy.admission")
        self.pending: dict[str, int] = {}
        self.in_handshake = 0
        self.refused = 0

    async def admit(self, peer_ip: str, conn: Any = None) -> bool:
        """May a new connection from ``peer_ip`` start its handshake? When not, its
        ``conn`` (if given; anything with a ``transport``) is closed at once, freeing
        the descriptor."""
        reason = self._over_caps(peer_ip)
        if reason is None:
            self.pending[peer_ip] = self.pending.get(peer_ip, 0) + 1
            self.in_handshake += 1
            reason = await self._short_of_descriptors()
            if reason is not None:
                self.release(peer_ip)
        if reason is None:
            return True
        self.refused += 1
        self.log.warning("%s: refused connection from %s: %s", self.name, peer_ip, reason)
        if conn is not None and conn.transport is not None:
            conn.transport.abort()
        return False

    def _over_caps(self, peer_ip: str) -> str | None:
        if self.pending.get(peer_ip, 0) >= self.per_source:
            return f"{self.per_source} connections from it are already in their handshake"
        if self.in_handshake >= self.total:
            return f"{self.total} connections are already in their handshake"
        return None

    async def _short_of_descriptors(self) -> str | None:
        """Why there are too few descriptors left, or None. asyncio accepts a burst of
        connections before any is refused, and refused ones close an iteration later:
        a connection that meets such a moment waits a little and looks again."""
        for attempt in range(SETTLE_CHECKS):
            free = self.free_fds()
            reserve = default_reserve() if self.reserve is None else self.reserve
            if free is None or free >= reserve:
                return None
            if attempt < SETTLE_CHECKS - 1:
                await asyncio.sleep(SETTLE_DELAY)
        return (f"only {free} file descriptors are free and {reserve} are kept for"
                " authenticated peers")

    def release(self, peer_ip: str) -> None:
        """The handshake of a connection ``admit`` let in has ended."""
        count = self.pending.get(peer_ip, 0)
        if count <= 0:
            return
        if count == 1:
            del self.pending[peer_ip]
        else:
            self.pending[peer_ip] = count - 1
        self.in_handshake -= 1


_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


def quiet_accept_errors(loop: asyncio.AbstractEventLoop, logger: logging.Logger) -> None:
    """asyncio reports a failed accept() (no descriptor left) with a traceback each time,
    and pauses accepting for a second; make that one rate-limited line naming the cause.
    Other exceptions reach the previous handler unchanged."""
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        exc = context.get("exception")
        if (isinstance(exc, OSError) and exc.errno in _OUT_OF_RESOURCES
                and "accept" in str(context.get("message", ""))):
            limit = descriptor_limit()
            logger.warning("cannot accept connections for a second: %s (descriptor limit"
                           " %s); new connections wait", exc.strerror, limit or "none")
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
