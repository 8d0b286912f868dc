"""The append-only log both journals use (daemon/recordlog.py): records read back as
written, and a record cut short (a crash mid-write) or not a tuple ends the log."""

from __future__ import annotations

import os
import stat

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispy.daemon import recordlog

pytestmark = pytest.mark.timeout(30)

plain = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1), st.text(),
                  st.binary())
recs = st.lists(st.tuples(st.text(min_size=1), plain, plain), max_size=20)


@given(recs, st.integers(0, 40))
def test_records_read_back_up_to_a_cut(written, cut):
    data = b"".join(recordlog.record(r) for r in written)
    assert [r for r, _ in recordlog.records(data)] == written
    short = data[:max(0, len(data) - cut)]
    got = [r for r, _ in recordlog.records(short)]
    assert got == written[:len(got)]
    ends = [end for _, end in recordlog.records(short)]
    assert all(end <= len(short) for end in ends)


def test_a_record_that_is_not_a_tuple_ends_the_log():
    import marshal
    bad = marshal.dumps([1, 2])
    data = recordlog.record(("a",)) + len(bad).to_bytes(4, "big") + bad \
        + recordlog.record(("b",))
    assert [r for r, _ in recordlog.records(data)] == [("a",)]


def test_rewrite_is_private_and_locked(tmp_path):
    path = str(tmp_path / "log")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    assert recordlog.append(fd, b"old", 0) == 3
    new = recordlog.rewrite(path, b"new data")
    os.close(fd)
    with open(path, "rb") as fh:
        assert fh.read() == b"new data"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert not os.path.exists(path + ".new")
    import fcntl
    other = os.open(path, os.O_RDONLY)
    with pytest.raises(OSError):
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.close(other)
    os.close(new)
