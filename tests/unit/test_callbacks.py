"""The client's callback thread: in order, off the I/O loop, drain waits for what was
queued, a callback's exception is logged and the next one still runs."""

from __future__ import annotations

import threading

import pytest

from dispy.client.callbacks import CallbackRunner

pytestmark = pytest.mark.timeout(30)


def test_callbacks_run_in_order_and_drain_waits_for_them():
    runner = CallbackRunner()
    gate = threading.Event()
    seen: list[int] = []
    settled: list[str] = []
    runner.on_settled = settled.append
    runner.call(gate.wait)
    for i in range(100):
        runner.call(seen.append, i, settle=f"s{i}" if i % 10 == 0 else None)
    assert not runner.drain(0.05)  # the first callback still blocks the thread
    gate.set()
    assert runner.drain(10)
    assert seen == list(range(100))
    assert settled == [f"s{i}" for i in range(0, 100, 10)]


def test_a_failing_callback_is_logged_and_settled_and_the_next_runs(caplog):
    runner = CallbackRunner()
    settled: list[str] = []
    runner.on_settled = settled.append
    seen: list[str] = []

    def bad() -> None:
        raise RuntimeError("oops")

    runner.call(bad, settle="t1")
    runner.call(seen.append, "next")
    assert runner.drain(10)
    assert seen == ["next"] and settled == ["t1"]
    assert "callback bad raised an exception" in caplog.text


def test_drain_from_a_callback_does_not_wait_for_itself():
    runner = CallbackRunner()
    got: list[bool] = []
    runner.call(lambda: got.append(runner.drain(5)))
    assert runner.drain(10) and got == [True]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_drain_does_not_wait_for_a_thread_a_callback_ended():
    runner = CallbackRunner()

    def leave() -> None:
        raise SystemExit

    runner.call(leave)
    runner.thread.join(10)
    runner.call(print, "never")
    assert runner.drain() is False
