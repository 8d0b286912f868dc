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
