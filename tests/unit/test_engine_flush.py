"""Engine._flush_sent: the links dispatch queued jobs on are written once per turn; a
link that fails to write is logged and the others are still written."""

from __future__ import annotations

import logging

import pytest

from dispy.client.engine import Engine

pytestmark = pytest.mark.timeout(30)


class _Link:
    def __init__(self, name: str, fail: bool = False) -> None:
        self.name, self.fail, self.flushed = name, fail, 0

    def flush(self) -> None:
        if self.fail:
            raise MemoryError("cannot write")
        self.flushed += 1

    def describe(self) -> str:
        return self.name


def test_a_failing_link_does_not_keep_the_others_frames_back(caplog):
    engine = Engine.__new__(Engine)  # only the flush bookkeeping, no loop or sockets
    links = [_Link("a"), _Link("b", fail=True), _Link("c")]
    engine._sent_to = {link.name: link for link in links}
    engine._flush_planned = True
    with caplog.at_level(logging.ERROR, logger="dispy"):
        engine._flush_sent()
    assert [link.flushed for link in links] == [1, 0, 1]
    assert engine._sent_to == {} and not engine._flush_planned
    assert "writing to b failed" in caplog.text
