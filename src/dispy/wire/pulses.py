"""Is a connected peer alive? A daemon pulses it and it answers with any frame.

dispynode watches its client programs this way, dispyscheduler its programs: a peer
still connected but stopped (SIGSTOP) or hung answers nothing, and one that answers
no pulse for the daemon's ``--zombie_interval`` is a zombie, as one that went away.
"""

from __future__ import annotations

from .connection import Connection


class PulseWatch:
    """One connected peer's answers to our pulses (pure bookkeeping, fed by the daemon)."""

    def __init__(self) -> None:
        #: when the oldest pulse it has not answered was sent (None: it answered)
        self.unanswered: float | None = None
        #: bytes its connection had handed to the kernel at the last look, and whether
        #: some were still waiting for the kernel then
        self._delivered = 0
        self._backlog = False

    def pulsed(self, now: float) -> None:
        """A pulse was queued for it."""
        if self.unanswered is None:
            self.unanswered = now

    def heard(self) -> bool:
        """A frame came from it (an answer, or anything else); True if a pulse was
        waiting for one."""
        waiting, self.unanswered = self.unanswered is not None, None
        return waiting

    def silent_for(self, conn: Connection, now: float) -> float:
        """Seconds it has left a pulse unanswered (0: none waits). A peer reading a big
        result, behind which the pulse waits, is alive: the clock starts again."""
        if self.unanswered is None:
            return 0.0
        if self._taking(conn):
            self.unanswered = now
        return now - self.unanswered

    def _taking(self, conn: Connection) -> bool:
        """Whether the peer took more of a backlog since the last look. Only a backlog
        the kernel could not take at once counts: small frames land in the kernel's
        buffers also when the peer is stopped."""
        transport = conn.transport
        waiting = transport.get_write_buffer_size() if transport is not None else 0
        delivered = conn.bytes_out - waiting
        before, backlog = self._delivered, self._backlog
        self._delivered, self._backlog = delivered, waiting > 0
        return (backlog or waiting > 0) and delivered != before


def zombie_after(zombie_interval_min: float, msg_timeout: float) -> float:
    """Seconds a connected peer may leave pulses unanswered (an answer may take up to
    the message timeout on a busy machine)."""
    return max(zombie_interval_min * 60, 2 * msg_timeout)
