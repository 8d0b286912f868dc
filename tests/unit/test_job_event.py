"""DispyJob creates its finish Event only when someone waits, without losing a wake-up."""

import threading

from dispy.client.job import DispyJob


def _job() -> DispyJob:
    return DispyJob(None, b"", "1", 0.0)


def test_no_event_until_asked_for():
    job = _job()
    assert job._event is None
    job._set_finished()
    assert job._event is None
    assert job.finish.is_set()  # created after the end: already set


def test_waiter_before_the_end_is_woken():
    job = _job()
    event = job.finish
    assert not event.is_set()
    t = threading.Timer(0.05, job._set_finished)
    t.start()
    assert job.finish.wait(10)
    assert job.finish is event
    t.join()


def test_call_returns_result_when_already_ended():
    job = _job()
    job.result = 42
    job._set_finished()
    assert job() == 42
