"""The slot a computation host shares with a job process: the running job it interrupts
(entry 0) and the jobs sent ahead that are to be skipped (the other entries, in turn).
A uid matches only an entry that is exactly it, never a prefix, suffix or straddle."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispy.node import jobproc

pytestmark = pytest.mark.timeout(30)

uids = st.text(alphabet="0123456789abcdef", min_size=1, max_size=jobproc.SLOT_SIZE)


def test_entries_name_jobs_exactly():
    slot = jobproc.new_slot()
    assert not jobproc.named_in_slot(slot, "1")
    jobproc.write_slot(slot, "1a")
    jobproc.write_slot(slot, "b2", 3)
    assert jobproc.named_in_slot(slot, "1a") and jobproc.named_in_slot(slot, "b2")
    for other in ("1", "a", "b", "2", "1a2", "ab2"):
        assert not jobproc.named_in_slot(slot, other)
    jobproc.write_slot(slot, "7", 3)  # an entry written again names only its new job
    assert not jobproc.named_in_slot(slot, "b2") and jobproc.named_in_slot(slot, "7")


@given(st.lists(uids, min_size=1, max_size=jobproc.SLOT_ENTRIES), uids)
def test_a_uid_is_named_only_if_written(written, probe):
    slot = jobproc.new_slot()
    for entry, uid in enumerate(written):
        jobproc.write_slot(slot, uid, entry)
    assert jobproc.named_in_slot(slot, probe) == (probe in written)


def test_the_running_entry_is_apart_from_the_cancels():
    """The job process names the job it runs (so the host escalates a cancel only while
    the cancelled job runs); that entry never reads as a cancel of it."""
    slot = jobproc.new_slot()
    assert jobproc.running_in_slot(slot) == ""
    jobproc.set_running(slot, "a1")
    assert jobproc.running_in_slot(slot) == "a1"
    assert not jobproc.named_in_slot(slot, "a1")
    jobproc.write_slot(slot, "a1")
    assert jobproc.named_in_slot(slot, "a1") and jobproc.running_in_slot(slot) == "a1"
    jobproc.set_running(slot, None)
    assert jobproc.running_in_slot(slot) == ""


def test_a_skip_lands_only_before_the_process_takes_the_job():
    """The host's side of SkipJob (node/host.py) against the process's ``take``: with
    the lock, a job is either skipped (named before it is taken) or found taken."""
    import multiprocessing

    slot, lock = jobproc.new_slot(), multiprocessing.Lock()

    def host_skip(uid: str, seq: int) -> bool:
        with lock:
            reached = jobproc.taken(slot) >= seq
            if not reached:
                jobproc.write_slot(slot, uid, 1)
        return reached

    with lock:
        jobproc.take(slot, "a")  # the first job sent runs
    assert jobproc.running_in_slot(slot) == "a" and jobproc.taken(slot) == 1
    assert host_skip("b", 2) is False  # not taken yet: named
    assert host_skip("a", 1) is True  # taken: cancelled as a running job instead
    with lock:
        jobproc.take(slot, "b")
    assert jobproc.named_in_slot(slot, "b")  # the process finds it and skips it
