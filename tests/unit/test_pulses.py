"""PulseWatch: when a connected peer counts as silent (no sockets: a stand-in link)."""

from __future__ import annotations

import pytest

from dispy.wire.pulses import PulseWatch, zombie_after

pytestmark = pytest.mark.timeout(10)


class Transport:
    def __init__(self) -> None:
        self.waiting = 0

    def get_write_buffer_size(self) -> int:
        return self.waiting


class Link:
    def __init__(self) -> None:
        self.transport = Transport()
        self.bytes_out = 0


def test_silence_counts_from_the_first_unanswered_pulse_and_an_answer_ends_it():
    watch, link = PulseWatch(), Link()
    assert watch.silent_for(link, 100.0) == 0.0  # no pulse yet
    watch.pulsed(10.0)
    watch.pulsed(20.0)  # the first one still waits: the clock runs from it
    link.bytes_out += 50  # small pulses land in the kernel: no backlog, no proof of life
    assert watch.silent_for(link, 30.0) == 20.0
    assert watch.heard() is True and watch.silent_for(link, 40.0) == 0.0
    assert watch.heard() is False


def test_a_peer_reading_a_big_backlog_is_alive_and_a_stalled_one_is_not():
    watch, link = PulseWatch(), Link()
    watch.pulsed(0.0)
    link.bytes_out, link.transport.waiting = 10_000_000, 8_000_000  # a big result queued
    assert watch.silent_for(link, 5.0) == 0.0  # it took 2 MB: alive, clock restarts
    link.transport.waiting = 6_000_000  # it took 2 MB more
    assert watch.silent_for(link, 9.0) == 0.0
    assert watch.silent_for(link, 12.0) == 3.0  # stalled: nothing taken since 9 s
    link.transport.waiting = 0  # it took the rest
    assert watch.silent_for(link, 13.0) == 0.0


def test_a_connected_peer_gets_at_least_twice_the_message_timeout():
    assert zombie_after(60, 10) == 3600 and zombie_after(0.02, 3) == 6
