"""Typed records of the node's own protocol (daemon, computation host, job processes):
every record survives header() -> parse, and a frame that does not fit its record is a
MessageError (which the daemon logs and drops), never another exception."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispy.wire import hostmsg
from dispy.wire.hostmsg import (
    CancelJob,
    CloseHost,
    FileReply,
    Fork,
    Forked,
    ForkFailed,
    Hello,
    HostClosed,
    HostInit,
    HostLost,
    JobSendFile,
    KillJob,
    Provisional,
    Ready,
    Reap,
    Reaped,
    RunJob,
    Settle,
    Settled,
    SetupFailed,
    ShutdownRequest,
    SkipJob,
    Skipped,
    parse_host_message,
    parse_host_request,
    parse_job_message,
    parse_job_request,
)
from dispy.wire.messages import Done, MessageError

pytestmark = pytest.mark.timeout(60)

LINK = "0123456789abcdef0123456789abcdef"

#: (parser, record) for every op of every direction
RECORDS = [
    (parse_host_request, HostInit(cid="c1", dir="/tmp/n/c1", jobs_path="/tmp/n/jobs",
                                  token=LINK, node_name="n", node_ip_addr="10.0.0.1",
                                  client_shutdown=True)),
    (parse_host_request, Fork()),
    (parse_host_request, Fork(count=4)),
    (parse_host_request, CancelJob(pid=12, uid="u1")),
    (parse_host_request, SkipJob(pid=12, uid="u2", seq=3)),
    (parse_host_request, KillJob(pid=12)),
    (parse_host_request, Settle(pid=12)),
    (parse_host_request, Reap(pid=-1)),  # the host refuses it; the record does not care
    (parse_host_request, CloseHost(status=9, reason="computation closed")),
    (parse_host_request, CloseHost()),
    (parse_host_message, Ready(pid=99)),
    (parse_host_message, SetupFailed(reason="Traceback ...")),
    (parse_host_message, ShutdownRequest()),
    (parse_host_message, ForkFailed(reason="job process cannot reach the node")),
    (parse_host_message, Forked(pid=100, link=LINK)),
    (parse_host_message, Skipped(pid=100, uid="u2", reached=False)),
    (parse_host_message, Settled(pid=100)),
    (parse_host_message, Reaped(pid=100, reason="job process exited with code 3")),
    (parse_host_message, HostClosed()),
    (parse_host_message, HostLost(reason="computation host exited with code -9")),
    (parse_job_message, Hello(token=LINK, link=LINK)),
    (parse_job_message, Done(uid="u1", status=11, start_time=1.5, end_time=2.0, oob=2)),
    (parse_job_message, Done(uid="u1", status=8, exception="Cancelled", text=False)),
    (parse_job_message, hostmsg.DoneInFile(uid="u1", status=11, file="12-3",
                                           lens=[4, 0, 0])),
    (parse_job_message, Provisional(uid="u1")),
    (parse_job_message, hostmsg.LaneStarted(uid="u1")),
    (parse_job_message, hostmsg.LaneDone(uid="u1", cid="c1", status=11, end_time=2.0)),
    (parse_job_message, hostmsg.LaneDone(uid="u1", status=10, exception="x",
                                         delivered=False)),
    (parse_job_message, hostmsg.LaneDoneInFile(uid="u1", status=11, file="12-3",
                                               lens=[4, 0, 0, 8], oob=1)),
    (parse_job_message, hostmsg.LaneDoneInFile(uid="u1", status=11, file="12-3",
                                               lens=[4, 0, 0], delivered=False)),
    (parse_job_message, hostmsg.LaneEnded(reason="the program closed it")),
    (parse_job_message, JobSendFile(uid="u1", path="out/r.txt", size=10, mtime=3.5,
                                    mode=0o600)),
    (parse_job_message, JobSendFile(uid="u1", path="r.txt", size=0)),
    (parse_job_request, RunJob(uid="u1")),
    (parse_job_request, RunJob(uid="u1", oob=3)),
    (parse_job_request, FileReply(ok=True)),
    (parse_job_request, hostmsg.LaneHandOver(send_key="ab" * 32, recv_key="cd" * 32,
                                             send_seq=1, recv_seq=0)),
    (parse_job_request, hostmsg.LaneClose()),
    (parse_job_request, FileReply(ok=False, reason="client is not connected")),
]


@pytest.mark.parametrize("parse, record", RECORDS, ids=lambda r: getattr(r, "op", None))
def test_every_record_round_trips(parse, record):
    header = record.header()
    assert header["op"] == record.op
    assert parse(header) == record
    assert type(record).parse(header) == record


def test_every_op_has_a_record_in_its_direction():
    ops = {table: {cls.op for cls in getattr(hostmsg, table).values()}
           for table in ("HOST_REQUESTS", "HOST_MESSAGES", "JOB_MESSAGES", "JOB_REQUESTS")}
    assert ops == {
        "HOST_REQUESTS": {"init", "fork", "cancel", "skip", "kill", "settle", "reap", "close"},
        "HOST_MESSAGES": {"ready", "setup_failed", "shutdown_request", "fork_failed",
                          "forked", "skipped", "settled", "reaped", "closed", "host_lost"},
        "JOB_MESSAGES": {"hello", "done", "done_file", "lane_started", "lane_done",
                         "lane_done_file", "lane_ended", "provisional", "send_file"},
        "JOB_REQUESTS": {"job", "file_reply", "lane", "lane_close"},
    }
    tested = {record.op for _, record in RECORDS}
    assert tested == set().union(*ops.values())


def test_a_result_becomes_the_clients_done_frame():
    done = parse_job_message({"op": "done", "uid": "u1", "status": 11, "start_time": 1,
                              "end_time": 2, "text": True, "oob": 0, "exception": None})
    assert isinstance(done, Done)
    assert done.client_header("c1") == {
        "op": "done", "uid": "u1", "cid": "c1", "status": 11, "start_time": 1.0,
        "end_time": 2.0, "exception": None, "text": True, "oob": 0}


def test_the_same_op_means_another_record_in_another_direction():
    assert parse_host_request({"op": "close"}) == CloseHost()
    assert parse_host_message({"op": "closed"}) == HostClosed()
    with pytest.raises(MessageError):
        parse_host_message({"op": "close"})
    with pytest.raises(MessageError):
        parse_host_request({"op": "ready", "pid": 1})
    with pytest.raises(MessageError):
        parse_job_request({"op": "done", "uid": "u1"})


@pytest.mark.parametrize("parse, header", [
    (parse_host_request, {"op": "init", "cid": "c1"}),                    # missing fields
    (parse_host_request, {"op": "init", "cid": "../c", "dir": "d", "jobs_path": "j",
                          "token": "t", "node_name": "n", "node_ip_addr": "i"}),  # bad id
    (parse_host_request, {"op": "fork", "count": "2"}),
    (parse_host_request, {"op": "fork", "count": -1}),
    (parse_host_request, {"op": "cancel", "pid": 1}),                     # no uid
    (parse_host_request, {"op": "cancel", "pid": 1, "uid": "a/b"}),
    (parse_host_request, {"op": "kill"}),
    (parse_host_request, {"op": "settle", "pid": "1"}),
    (parse_host_request, {"op": "reap", "pid": True}),
    (parse_host_request, {"op": "reap", "pid": 1.0}),
    (parse_host_request, {"op": "close", "status": "9"}),
    (parse_host_message, {"op": "ready"}),
    (parse_host_message, {"op": "setup_failed", "reason": 3}),
    (parse_host_message, {"op": "fork_failed"}),
    (parse_host_message, {"op": "forked", "pid": 5}),
    (parse_host_message, {"op": "forked", "pid": 5, "link": ""}),
    (parse_host_message, {"op": "forked", "pid": None, "link": LINK}),
    (parse_host_message, {"op": "settled", "pid": [1]}),
    (parse_host_message, {"op": "reaped", "reason": "x"}),
    (parse_host_message, {"op": "host_lost", "reason": None}),
    (parse_job_message, {"op": "hello", "token": "t"}),                  # no link
    (parse_job_message, {"op": "hello", "token": "t", "link": "../x"}),
    (parse_job_message, {"op": "done"}),
    (parse_job_message, {"op": "done", "uid": 7}),
    (parse_job_message, {"op": "done", "uid": "a", "status": "11"}),
    (parse_job_message, {"op": "done", "uid": "a", "status": True}),
    (parse_job_message, {"op": "done", "uid": "a", "oob": -1}),
    (parse_job_message, {"op": "done", "uid": "a", "end_time": "now"}),
    (parse_job_message, {"op": "done", "uid": "a", "end_time": 10 ** 400}),
    (parse_job_message, {"op": "done", "uid": "a", "exception": ["x"]}),
    (parse_job_message, {"op": "done", "uid": "a", "text": 1}),
    (parse_job_message, {"op": "provisional"}),
    (parse_job_message, {"op": "provisional", "uid": ""}),
    (parse_job_message, {"op": "send_file", "uid": "a", "path": "p"}),     # no size
    (parse_job_message, {"op": "send_file", "uid": "a", "path": "p", "size": -1}),
    (parse_job_message, {"op": "send_file", "uid": "a", "path": 1, "size": 1}),
    (parse_job_request, {"op": "job"}),
    (parse_job_request, {"op": "job", "uid": "a", "oob": -2}),
    (parse_job_request, {"op": "job", "uid": "a", "oob": "1"}),
    (parse_job_request, {"op": "file_reply"}),
    (parse_job_request, {"op": "file_reply", "ok": "yes"}),
    (parse_job_message, {"op": "lane_done", "uid": "a", "delivered": 1}),
    (parse_job_message, {"op": "lane_done", "uid": "../a"}),
    (parse_job_message, {"op": "lane_done_file", "uid": "a", "file": "1-2", "lens": [1, 0, 0],
                         "delivered": "yes"}),
    (parse_job_message, {"op": "lane_done_file", "uid": "a", "file": "../results.log",
                         "lens": [1, 0, 0]}),
    (parse_job_message, {"op": "lane_done_file", "uid": "a", "file": "1-2", "lens": [1, 0]}),
    (parse_job_message, {"op": "lane_done_file", "uid": "a", "lens": [1, 0, 0]}),
    (parse_job_request, {"op": "lane", "send_key": "k", "recv_key": "k", "send_seq": -1,
                         "recv_seq": 0}),
    (parse_job_request, {"op": "lane", "send_key": "k", "recv_key": "k", "send_seq": 1}),
    (parse_job_message, {"op": "lane_started", "uid": "../../x"}),
    (parse_host_message, {"op": "no_such_op"}),
    (parse_job_message, {"op": ["done"]}),
    (parse_host_request, {"pid": 1}),
])
def test_malformed_frames_are_refused_with_a_reason(parse, header):
    with pytest.raises(MessageError) as err:
        parse(header)
    assert str(err.value)


OPS = sorted({cls.op for table in (hostmsg.HOST_REQUESTS, hostmsg.HOST_MESSAGES,
                                   hostmsg.JOB_MESSAGES, hostmsg.JOB_REQUESTS)
              for cls in table.values()})
FIELDS = ["op", "pid", "uid", "cid", "count", "reason", "link", "token", "status", "oob",
          "start_time", "end_time", "exception", "text", "path", "size", "mtime", "mode",
          "ok", "dir", "jobs_path", "node_name", "node_ip_addr", "client_shutdown", "reply"]


@given(st.sampled_from([parse_host_request, parse_host_message, parse_job_message,
                        parse_job_request]),
       st.dictionaries(st.sampled_from(FIELDS),
                       st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                                 st.text(max_size=8), st.lists(st.integers(), max_size=2),
                                 st.dictionaries(st.text(max_size=2), st.integers(),
                                                 max_size=1),
                                 st.sampled_from(OPS))))
def test_any_header_is_a_record_or_a_message_error(parse, header):
    try:
        record = parse(header)
    except MessageError:
        return
    assert record.op == header["op"]
    assert parse(record.header()) == record


def test_done_in_file_names_its_file_and_the_size_of_each_buffer():
    sent = hostmsg.DoneInFile(uid="u1", status=5, oob=1, file="123-0123456789abcdef-4",
                              lens=[9, 0, 2, 7])
    header = sent.header()
    assert header["op"] == "done_file"
    got = hostmsg.parse_job_message(header)
    assert isinstance(got, hostmsg.DoneInFile) and got == sent
    assert got.client_header("c1")["op"] == "done"  # the client gets a plain result
    assert "file" not in got.client_header("c1")
    for bad in ({"lens": [1, 2]}, {"lens": [1, 2, -3, 4]}, {"lens": [1, 2, 3, "4"]},
                {"lens": [1, 2, 3, True]}, {"file": "../results.log"}, {"file": None},
                {"uid": None}, {"oob": -3, "lens": []}):
        with pytest.raises(MessageError):
            hostmsg.parse_job_message({**header, **bad})
