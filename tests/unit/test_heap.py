"""Freed memory is kept while big buffers move and given back after a quiet spell."""

from __future__ import annotations

import asyncio

import pytest

from dispy.wire import heap

pytestmark = pytest.mark.timeout(30)


class FakeLibc:
    def __init__(self) -> None:
        self.trims = 0

    def malloc_trim(self, pad: int) -> int:
        self.trims += 1
        return 1


@pytest.fixture
def fake(monkeypatch) -> FakeLibc:
    """An active heap module whose trims are counted, with a short quiet spell."""
    libc = FakeLibc()
    monkeypatch.setattr(heap, "_libc", libc)
    monkeypatch.setattr(heap, "_state", {"active": True, "last": 0.0, "due": 0.0})
    monkeypatch.setattr(heap, "QUIET", 0.2)
    return libc


def test_trims_once_after_the_last_big_buffer(fake):

    async def burst() -> None:
        for _ in range(5):  # a burst keeps pushing the trim back
            heap.note_big()
            await asyncio.sleep(0.05)
        assert fake.trims == 0
        while fake.trims == 0:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        assert fake.trims == 1
        heap.note_big()  # a new burst arms it again
        while fake.trims == 1:
            await asyncio.sleep(0.02)

    asyncio.run(burst())


def test_inactive_does_nothing(monkeypatch):
    monkeypatch.setattr(heap, "_state", {"active": False, "last": 0.0, "due": 0.0})
    heap.note_big()  # no loop needed: returns at once
    assert heap._state["due"] == 0.0


def test_can_be_turned_off(monkeypatch):
    monkeypatch.setattr(heap, "_state", {"active": False, "last": 0.0, "due": 0.0})
    monkeypatch.setenv("DISPY_KEEP_FREED_MEMORY", "0")
    assert heap.keep_freed() is False


def test_rearms_when_its_loop_stopped(fake):

    async def arm_only() -> None:
        heap.note_big()

    asyncio.run(arm_only())  # that loop ends before its trim is due

    async def later() -> None:
        await asyncio.sleep(0.45)
        heap.note_big()
        while fake.trims == 0:
            await asyncio.sleep(0.02)

    asyncio.run(later())
