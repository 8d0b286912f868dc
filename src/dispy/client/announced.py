"""Bounds on what node announcements can make a client do.

Anyone on the network can send ``node`` datagrams naming any address. A client tries
the nodes it has never met a few at a time, keeps a bounded queue of the rest (the
oldest give way), and forgets the oldest of those it never reached, so a burst of
forged announcements costs a bounded number of connection attempts and links. The
newest announcement is tried first: a real node answering the client's periodic
``discover`` after a burst does not wait behind the whole burst.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

#: connection attempts to announced, not yet met nodes at the same time
MAX_CONNECTING = 16
#: announced nodes waiting for an attempt
MAX_PENDING = 256
#: announced nodes never reached that are remembered (to report why, to retry)
MAX_UNREACHED = 64


class AnnouncedNodes:
    """Announced nodes the client has not met: which to try now, which to forget."""

    def __init__(self, max_connecting: int = MAX_CONNECTING, max_pending: int = MAX_PENDING,
                 max_unreached: int = MAX_UNREACHED) -> None:
        if min(max_connecting, max_pending, max_unreached) < 1:
            raise ValueError("announcement bounds must be at least 1")
        self.max_connecting = max_connecting
        self.max_pending = max_pending
        self.max_unreached = max_unreached
        #: key -> what the announcement said (kept for the attempt)
        self.pending: OrderedDict[Hashable, Any] = OrderedDict()
        self.connecting: set[Hashable] = set()
        self.unreached: OrderedDict[Hashable, None] = OrderedDict()
        self.dropped = 0

    def offer(self, key: Hashable, info: Any = None) -> None:
        """An announcement of a node not met yet; a newer one replaces an older."""
        if key in self.connecting:
            return
        self.pending.pop(key, None)
        self.pending[key] = info
        if len(self.pending) > self.max_pending:
            self.pending.popitem(last=False)
            self.dropped += 1

    def take(self) -> list[tuple[Hashable, Any]]:
        """The announced nodes to try now, newest first (they count as connecting until
        ``done``)."""
        batch = []
        while self.pending and len(self.connecting) < self.max_connecting:
            key, info = self.pending.popitem(last=True)
            self.connecting.add(key)
            batch.append((key, info))
        return batch

    def done(self, key: Hashable, met: bool) -> list[Hashable]:
        """An attempt ended; returns the keys of never-reached nodes to forget now."""
        self.connecting.discard(key)
        self.unreached.pop(key, None)
        if met:
            return []
        self.unreached[key] = None
        forget = []
        while len(self.unreached) > self.max_unreached:
            old, _ = self.unreached.popitem(last=False)
            forget.append(old)
        return forget
