"""Typed request records: what a daemon accepts, and what it refuses before acting."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispy.wire.hostmsg import RunJob
from dispy.wire.messages import ID, Ack, Done, File, Job, MessageError, parse_request
from dispy.wire.records import Record

pytestmark = pytest.mark.timeout(30)


def test_a_well_formed_job_is_its_record():
    rec = parse_request({"op": "job", "cid": "1f.2", "uid": "3a", "oob": 1}, [b"a", b"b"])
    assert isinstance(rec, Job) and (rec.cid, rec.uid, rec.oob) == ("1f.2", "3a", 1)


@pytest.mark.parametrize("header", [
    {"op": "job", "cid": "1"},                          # no uid: once wedged a node
    {"op": "job", "cid": "1", "uid": 5},
    {"op": "job", "cid": "1", "uid": "a", "oob": -1},
    {"op": "job", "cid": "1", "uid": "a", "oob": 3},    # more than the buffers sent
    {"op": "job", "cid": "/tmp/x", "uid": "a"},
    {"op": "job", "cid": "..", "uid": "a"},
    {"op": "compute", "cid": "../../etc"},
    {"op": "compute", "cid": "a", "cleanup": "yes"},
    {"op": "ack", "uids": "abc"},
    {"op": "ack", "uids": [1, 2]},
    {"op": "file", "cid": "a", "path": "x", "size": -1},
    {"op": "file", "cid": "a", "path": "x", "size": 1, "offset": 5},
    {"op": "file", "cid": "a", "path": "x", "size": True},
    {"op": "close", "cid": "a", "terminate": "no"},
    {"op": "nonsense"},
    {"op": None},
])
def test_malformed_requests_are_refused_with_a_reason(header):
    with pytest.raises(MessageError) as err:
        parse_request(header, [b"x"])
    assert str(err.value)


def test_ack_and_file_defaults():
    assert parse_request({"op": "ack"}) == Ack()
    rec = parse_request({"op": "file", "cid": "a", "path": "d/x", "size": 3, "mtime": 1})
    assert isinstance(rec, File) and rec.final and rec.mtime == 1.0 and rec.job is None


@given(st.text(max_size=200))
def test_ids_are_single_safe_path_components(text):
    if ID.fullmatch(text):
        assert "/" not in text and not text.startswith(".") and "\x00" not in text


_values = st.one_of(st.none(), st.booleans(), st.integers(-3, 1 << 70), st.floats(),
                    st.text(max_size=8), st.sampled_from(["c1", "u-1", "../x", "a" * 200]),
                    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(), st.none()))


@given(st.dictionaries(st.sampled_from(["op", "reply", "cid", "uid", "oob", "pin", "timeout",
                                        "priority", "other"]), _values))
def test_the_hand_written_job_parse_agrees_with_the_generic_one(header):
    """Job.parse is written out by hand for speed: it must accept and refuse exactly
    what Record.parse would, and give the same record."""
    def verdict(parse):
        try:
            return parse(header)
        except MessageError:
            return "refused"

    assert verdict(Job.parse) == verdict(lambda h: Record.parse.__func__(Job, h))


_ids = st.from_regex(r"[A-Za-z0-9_-][A-Za-z0-9._:-]{0,20}", fullmatch=True)


@given(st.builds(Done, uid=_ids, cid=st.none() | _ids, status=st.integers(0, 12),
                 start_time=st.floats(0, 1e10), end_time=st.floats(0, 1e10),
                 exception=st.none() | st.text(max_size=10), oob=st.integers(0, 3),
                 text=st.booleans(), reply=st.none() | _ids))
def test_the_written_out_headers_are_the_generic_ones(done):
    """Done and RunJob write their headers out by hand for speed: the same dict as
    Record.header, and they parse back to themselves."""
    assert done.header() == Record.header(done)
    assert Done.parse(done.header()) == dataclasses.replace(done, reply=None)
    job = RunJob(uid=done.uid, oob=done.oob)
    assert job.header() == Record.header(job) and RunJob.parse(job.header()) == job


@given(st.builds(Job, cid=_ids, uid=_ids, oob=st.integers(0, 3),
                 pin=st.none() | st.lists(st.integers(0, 9), max_size=2),
                 timeout=st.none() | st.floats(0, 1e6), priority=st.integers(-5, 5),
                 reply=st.none() | _ids))
def test_a_jobs_written_out_header_is_the_generic_one(job):
    """Job writes its header out by hand for speed (one per job): the same dict as
    Record.header, and it parses back to itself."""
    assert job.header() == Record.header(job)
    assert Job.parse(job.header()) == job
