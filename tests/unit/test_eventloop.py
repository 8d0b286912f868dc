"""Which event loop dispy's threads and daemons run: uvloop's unless told otherwise."""

from __future__ import annotations

import asyncio

import pytest

from dispy import eventloop

pytestmark = pytest.mark.timeout(30)


async def _answer() -> int:
    await asyncio.sleep(0)
    return 42


def test_uvloop_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    uvloop = pytest.importorskip("uvloop")
    monkeypatch.delenv("DISPY_EVENT_LOOP", raising=False)
    assert eventloop.using_uvloop()
    loop = eventloop.new_loop()
    try:
        assert isinstance(loop, uvloop.Loop)
        assert loop.run_until_complete(_answer()) == 42
    finally:
        loop.close()


def test_standard_loop_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPY_EVENT_LOOP", "asyncio")
    assert not eventloop.using_uvloop()
    loop = eventloop.new_loop()
    try:
        assert type(loop).__module__.startswith("asyncio")
        assert loop.run_until_complete(_answer()) == 42
    finally:
        loop.close()


def test_run_returns_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    for choice in ("asyncio", ""):
        monkeypatch.setenv("DISPY_EVENT_LOOP", choice)
        assert eventloop.run(_answer()) == 42
