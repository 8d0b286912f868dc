"""Typed records of what a node sends a program: checked before the engine acts, a bad
frame dropped with a reason (the connection, and the node's other jobs, kept)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispy.client.stall import stall_message
from dispy.wire.messages import (
    Cpus,
    Done,
    JobRefused,
    MessageError,
    SetupDone,
    parse_node_message,
)

pytestmark = pytest.mark.timeout(30)


def test_a_result_frame_is_its_record():
    rec = parse_node_message({"op": "done", "uid": "3a", "cid": "c1", "status": 5,
                              "start_time": 1, "end_time": 2.5, "oob": 2})
    assert isinstance(rec, Done)
    assert (rec.uid, rec.status, rec.start_time, rec.end_time, rec.oob) == ("3a", 5, 1.0,
                                                                           2.5, 2)


def test_other_frames_are_their_records():
    assert parse_node_message({"op": "setup_done", "cid": "c", "ok": True}) == \
        SetupDone(cid="c", ok=True)
    refused = parse_node_message({"op": "job_refused", "uid": "u", "reason": "busy",
                                  "status": 9})
    assert isinstance(refused, JobRefused) and refused.status == 9
    assert parse_node_message({"op": "cpus", "cpus": 3}) == Cpus(cpus=3)


@pytest.mark.parametrize("header", [
    {"op": "done"},                                           # no uid
    {"op": "done", "uid": 7},
    {"op": "done", "uid": "../x"},
    {"op": "done", "uid": "a", "status": "5"},
    {"op": "done", "uid": "a", "status": True},
    {"op": "done", "uid": "a", "oob": -1},
    {"op": "done", "uid": "a", "end_time": "now"},
    {"op": "done", "uid": "a", "exception": ["x"]},
    {"op": "setup_done"},
    {"op": "setup_done", "cid": "c", "ok": "yes"},
    {"op": "job_refused", "cid": "c"},
    {"op": "cpus", "cpus": -1},
    {"op": "cpus"},
    {"op": "pulse", "avail_info": [1]},
    {"op": "send_file", "cid": "c"},
    {"op": "no_such_op"},
    {"uid": "a"},
])
def test_malformed_frames_are_refused_with_a_reason(header):
    with pytest.raises(MessageError) as err:
        parse_node_message(header)
    assert str(err.value)


@given(st.dictionaries(st.sampled_from(["op", "uid", "cid", "status", "start_time",
                                        "end_time", "oob", "exception", "ok", "cpus",
                                        "reason", "path", "avail_info"]),
                       st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                                 st.text(max_size=8), st.lists(st.integers(), max_size=2),
                                 st.sampled_from(["done", "setup_done", "cpus", "pulse",
                                                  "job_refused", "closed"]))))
def test_any_header_is_a_record_or_a_message_error(header):
    try:
        parse_node_message(header)
    except MessageError:
        pass


class _Alloc:
    host = "10.0.0.*"


class _Cluster:
    name, cid, jobs, allocs = "c", "c1", {"j": 1}, [_Alloc()]


def test_stall_message_says_why_jobs_wait():
    assert "no node answered at all (looked for: 10.0.0.*)" in stall_message(
        _Cluster(), [], [])
    assert "1 node(s) answered but match none of nodes=[10.0.0.*]: 10.9.9.9:51348" in \
        stall_message(_Cluster(), [], [("10.9.9.9", 51348)])
    text = stall_message(_Cluster(), [("10.0.0.2:51348", "running setup"),
                                       ("10.0.0.3:51348", "down")], [])
    assert "no node is usable" in text and "running setup" in text and ": down" in text


def test_records_build_the_headers_their_parsers_accept():
    from dispy.wire.messages import (
        Ack,
        Cancel,
        Close,
        Closed,
        ComputationLost,
        Compute,
        File,
        Job,
        Pulse,
        Reply,
        Setup,
        parse_request,
    )
    sent = [Compute(cid="c", name="n", pulse_interval=2.0), Setup(cid="c"),
            Job(cid="c", uid="u", oob=0, timeout=1.5, priority=3), Cancel(cid="c", uid="u"),
            Close(cid="c", terminate=True, keep=True), Ack(uids=["a", "b"]),
            File(cid="c", path="x/y", size=3, offset=0, final=True, mtime=1.0, mode=0o600)]
    for rec in sent:
        header = rec.header()
        assert header["op"] == rec.op and None not in header.values()
        assert parse_request(header, [b""]) == rec
    for msg in [SetupDone(cid="c", ok=True, cpus=2), Cpus(cpus=1), Closed(cid="c"),
                ComputationLost(cid="c", reason="r"), Pulse(busy=1, avail_info={"cpu": 1.0}),
                JobRefused(cid="c", uid="u", reason="r", status=9)]:
        assert parse_node_message(msg.header()) == msg
    assert Reply(reply="t1", ok=False, reason="no").header() == {
        "op": "reply", "reply": "t1", "ok": False, "reason": "no"}
