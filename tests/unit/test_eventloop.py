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


# ---- within(): a wait with a timeout that never swallows a cancellation ----------------

LOOPS = ["asyncio", "uvloop"]


def _run_on(kind: str, monkeypatch: pytest.MonkeyPatch, main):  # type: ignore[no-untyped-def]
    if kind == "uvloop":
        pytest.importorskip("uvloop")
        monkeypatch.delenv("DISPY_EVENT_LOOP", raising=False)
    else:
        monkeypatch.setenv("DISPY_EVENT_LOOP", "asyncio")
    return eventloop.run(main())


@pytest.mark.parametrize("kind", LOOPS)
def test_cancel_in_the_turn_the_event_is_set_ends_the_loop(
        kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The web sampler's shape: woken by an event as it is cancelled, it must end (with
    3.11's wait_for it ran on, and dispy.httpd's thread never stopped)."""
    async def main() -> bool:
        ev = asyncio.Event()

        async def sampler() -> None:
            while True:
                try:
                    await eventloop.within(ev.wait(), 5)
                except asyncio.TimeoutError:
                    pass
                ev.clear()
                await asyncio.sleep(0)

        task = asyncio.ensure_future(sampler())
        await asyncio.sleep(0.01)
        ev.set()
        await asyncio.sleep(0)  # the event's waiter is done; the sampler not yet resumed
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=2)
        return bool(done) and task.cancelled()

    assert _run_on(kind, monkeypatch, main)


@pytest.mark.parametrize("kind", LOOPS)
def test_within_gives_the_result_or_a_timeout(kind: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> tuple[int, bool, bool]:
        answer = await eventloop.within(_answer(), 1)
        ev = asyncio.Event()
        inner = asyncio.ensure_future(ev.wait())
        try:
            await eventloop.within(inner, 0.01)
            timed_out = False
        except asyncio.TimeoutError:
            timed_out = True
        return answer, timed_out, inner.cancelled()

    assert _run_on(kind, monkeypatch, main) == (42, True, True)


@pytest.mark.parametrize("kind", LOOPS)
def test_cancelled_within_cancels_what_it_waits_for(
        kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """As wait_for: the awaited thing is cancelled and has ended (its cleanup ran, e.g.
    a half-open connection closed) before the cancellation reaches the caller."""
    async def main() -> tuple[bool, bool, list[str]]:
        steps: list[str] = []

        async def inner_work() -> None:
            try:
                await asyncio.Event().wait()
            finally:
                await asyncio.sleep(0.01)  # cleanup that takes a turn or two
                steps.append("inner cleaned up")

        async def caller() -> None:
            try:
                await eventloop.within(inner, 10)
            except asyncio.CancelledError:
                steps.append("caller cancelled")
                raise

        inner = asyncio.ensure_future(inner_work())
        outer = asyncio.ensure_future(caller())
        await asyncio.sleep(0.01)
        outer.cancel()
        await asyncio.wait({outer, inner}, timeout=2)
        return outer.cancelled(), inner.cancelled(), steps

    assert _run_on(kind, monkeypatch, main) == (
        True, True, ["inner cleaned up", "caller cancelled"])


def test_dispy_never_calls_asyncio_wait_for_directly() -> None:
    """Every wait with a timeout goes through ``eventloop.within`` (see its docstring)."""
    from pathlib import Path

    src = Path(eventloop.__file__).resolve().parent
    users = [str(p.relative_to(src)) for p in sorted(src.rglob("*.py"))
             if "asyncio.wait_for(" in p.read_text() and p.name != "eventloop.py"]
    assert users == []
