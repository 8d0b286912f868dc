"""LoopThread.stop: how the program's engine ends at exit (client/loopthread.py)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from dispy.client.loopthread import LoopThread

pytestmark = pytest.mark.timeout(30)


def test_stop_ends_the_thread_and_fails_what_waits():
    bridge = LoopThread(None, lambda: None)

    async def forever() -> None:
        await asyncio.Event().wait()

    async def answer() -> int:
        return 42

    assert bridge.call(answer()).result(timeout=5) == 42
    waiting = bridge.call(forever())
    bridge.stop()
    assert not bridge.alive() and bridge.stopped
    # a thread that waited on the loop is told, not left hanging
    with pytest.raises(RuntimeError, match="engine has stopped"):
        waiting.result(timeout=5)
    coro = answer()
    with pytest.raises(RuntimeError, match="engine has stopped"):
        bridge.call(coro)
    assert coro.cr_frame is None  # closed: no "never awaited" warning
    ran = []
    bridge.post(ran.append, 1)  # dropped: nothing would run it
    bridge.settle()  # returns at once
    assert ran == [] and not bridge._inbox
    bridge.stop()  # twice: a no-op


def test_stop_from_the_loop_thread_is_a_no_op():
    bridge = LoopThread(None, lambda: None)
    done = threading.Event()

    async def inside() -> None:
        bridge.stop()  # (would join itself)
        done.set()

    bridge.call(inside()).result(timeout=5)
    assert done.is_set() and bridge.alive() and not bridge.stopped
    bridge.stop()
    assert not bridge.alive()


def test_calls_racing_with_stop_never_hang():
    bridge = LoopThread(None, lambda: None)
    outcomes: list[str] = []

    async def nothing() -> None:
        await asyncio.sleep(0)

    def caller() -> None:
        while True:
            try:
                bridge.call(nothing()).result(timeout=10)
            except RuntimeError:
                outcomes.append("stopped")
                return

    threads = [threading.Thread(target=caller) for _ in range(4)]
    for t in threads:
        t.start()
    bridge.stop()
    for t in threads:
        t.join(15)
    assert not any(t.is_alive() for t in threads)
    assert outcomes == ["stopped"] * 4
