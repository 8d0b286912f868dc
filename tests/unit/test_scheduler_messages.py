"""Typed records between a program and dispyscheduler, without sockets: each one's header
parses back to it, a malformed frame is a MessageError (the frame dropped, the link
kept), and what the scheduler relays of a node's result is what the program reads."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispy.client.scheduler_link import SchedulerLink
from dispy.scheduler.clients import _OPS, ClientService
from dispy.wire import messages
from dispy.wire.messages import (
    SCHEDULER_MESSAGES,
    SCHEDULER_REQUESTS,
    Ack,
    AllocateNode,
    AskAllocate,
    Cancel,
    Close,
    Closed,
    CloseNode,
    DeallocateNode,
    Done,
    File,
    Job,
    JobResult,
    JobsQuery,
    JobStatus,
    MessageError,
    NodeEvent,
    Provisional,
    Refused,
    Reply,
    ResetupNode,
    Schedule,
    Scheduled,
    SchedulerStopping,
    SendFile,
    SetNodeCpus,
    SharedCompute,
    Waiting,
    parse_reply,
    parse_request,
    parse_scheduler_message,
)

pytestmark = pytest.mark.timeout(30)

NODE = {"ip": "10.0.0.2", "port": 51348, "name": "n2", "cpus": 4, "busy": 0,
        "jobs_done": 0, "cpu_time": 0.0, "platform": "Linux", "avail_info": None,
        "tx": 0, "rx": 0}

TO_PROGRAM = [
    Scheduled(cid="c1"),
    Waiting(cid="c1", reason="exclusive computation waits for 'x' of client p"),
    Refused(cid="c1", reason="invalid computation: no nodes given"),
    SchedulerStopping(cid="c1"),
    JobStatus(cid="c1", uid="u1", status=7, start_time=1.5, ip="10.0.0.2", port=51348),
    JobStatus(cid="c1", uid="u1", status=5),
    NodeEvent(cid="c1", status=1, node=NODE),
    AskAllocate(cid="c1", alloc=2, node=NODE, reply="0123abcd"),
    JobResult(uid="u1", cid="c1", status=11, start_time=1.0, end_time=2.5, exception=None,
              text=True, oob=1, ip="10.0.0.2", port=51348),
    JobResult(uid="u1", cid="c1", status=8, exception="Cancelled"),
    Provisional(cid="c1", uid="u1"),
    SendFile(cid="c1", path="out/x.txt", size=3, mtime=2.0, mode=0o600),
    Closed(cid="c1"),
    Reply(reply="resend", unknown=["u1", "u2"]),
    Reply(reply="t1", rc=-1, reason="node is not set up for this computation"),
]

TO_SCHEDULER = [
    SharedCompute(cid="c1", name="work", dest_path="d", cleanup=False, kind="function",
                  reentrant=True, exclusive=True, program=None, files=["a.py", "d/b.dat"],
                  allocs=[{"host": "10.0.0.*", "port": None, "cpus": 0, "custom": False,
                           "index": 0, "setup_args": 0, "depends": []}]),
    Schedule(cid="c1"),
    Job(cid="c1", uid="u1", oob=1, pin=["10.0.0.2", 51348], timeout=2.0, priority=3),
    Cancel(cid="c1", uid="u1"),
    Close(cid="c1", terminate=True),
    Ack(uids=["u1", "u2"]),
    JobsQuery(uids=["u1"], reply="resend"),
    File(cid="c1", path="x.txt", size=3, offset=0, final=True, mtime=1.0, mode=0o644,
         node=["10.0.0.2", 51348], xfer="x1", reply="t1"),
    File(cid="c1", path="x.txt", size=3, job="u1"),
    AllocateNode(cid="c1", allocs=[{"host": "10.0.0.3", "setup_args": 0}], reply="t2"),
    DeallocateNode(cid="c1", node=["10.0.0.2", 51348], reply="t3"),
    CloseNode(cid="c1", node=["10.0.0.2", 51348], terminate=True, reply="t4"),
    ResetupNode(cid="c1", node=["10.0.0.2", 51348], cpus=2, depends=["d/x"], reply="t5"),
    SetNodeCpus(cid="c1", node=["10.0.0.2", 51348], cpus=1, reply="t6"),
]


@pytest.mark.parametrize("record", TO_PROGRAM, ids=lambda r: type(r).__name__)
def test_each_scheduler_message_round_trips(record):
    header = record.header()
    assert header["op"] == record.op and None not in header.values()
    parsed = parse_scheduler_message(header)
    assert type(parsed) is type(record) and parsed == record


@pytest.mark.parametrize("record", TO_SCHEDULER, ids=lambda r: type(r).__name__)
def test_each_request_to_the_scheduler_round_trips(record):
    parsed = parse_request(record.header(), [b"bundle", b"x"], SCHEDULER_REQUESTS)
    assert type(parsed) is type(record) and parsed == record


def test_every_scheduler_op_has_its_handler():
    assert set(_OPS) == set(SCHEDULER_REQUESTS)
    assert {cls.op for cls in SCHEDULER_REQUESTS.values()} == set(SCHEDULER_REQUESTS)
    assert {cls.op for cls in SCHEDULER_MESSAGES.values()} == set(SCHEDULER_MESSAGES)


def test_a_computation_is_read_with_how_it_is_shared():
    """A node takes "compute" as Compute; dispyscheduler as SharedCompute."""
    header = {"op": "compute", "cid": "c1", "name": "w", "exclusive": True,
              "allocs": [{"host": "*", "setup_args": 0}], "files": ["a"]}
    assert type(parse_request(header, [b""])) is messages.Compute
    shared = parse_request(header, [b"", b""], SCHEDULER_REQUESTS)
    assert isinstance(shared, SharedCompute) and shared.exclusive and shared.files == ["a"]
    assert parse_request(header, [b""], SCHEDULER_REQUESTS, "compute") == shared


def test_a_journaled_request_is_read_as_the_op_it_was_stored_as():
    """Journals written before the records held the program's header as it came
    (unknown fields, or none for op): they still restore."""
    old = {"op": "job", "cid": "c1", "uid": "u1", "oob": 0, "priority": 0, "extra": 1}
    assert parse_request(old, [b"a"], SCHEDULER_REQUESTS, "job") == Job(cid="c1", uid="u1")
    no_op = {"cid": "c1", "name": "w", "allocs": [], "files": []}
    assert isinstance(parse_request(no_op, [b""], SCHEDULER_REQUESTS, "compute"),
                      SharedCompute)
    with pytest.raises(MessageError):
        parse_request({"cid": "c1"}, [b"a"], SCHEDULER_REQUESTS, "job")  # no uid


def test_the_relayed_result_carries_what_the_node_sent():
    """The program's sink reads ``text``, ``oob``, the times: they go on as they came,
    under the program's ids, with the node that ran the job."""
    node = Done.parse({"op": "done", "uid": "n7", "cid": "b1s1.c1", "status": 11,
                       "exception": None, "start_time": 1.0, "end_time": 2.0,
                       "text": False, "oob": 2})
    done = JobResult.of(node, "u1", "c1", "10.0.0.2", 51348)
    assert done.header() == {"op": "done", "uid": "u1", "cid": "c1", "status": 11,
                             "start_time": 1.0, "end_time": 2.0, "text": False, "oob": 2,
                             "ip": "10.0.0.2", "port": 51348}
    assert parse_scheduler_message(done.header()) == done
    # the scheduler's own verdict: nothing it does not know is made up
    verdict = JobResult(uid="u1", cid="c1", status=8, exception="Cancelled", end_time=3.0)
    assert verdict.header() == {"op": "done", "uid": "u1", "cid": "c1", "status": 8,
                                "end_time": 3.0, "exception": "Cancelled"}
    assert parse_scheduler_message(verdict.header()) == verdict


def test_a_malformed_node_result_is_refused():
    with pytest.raises(MessageError):
        Done.parse({"op": "done", "uid": "n1", "status": 11, "text": "yes"})
    with pytest.raises(MessageError):
        Done.parse({"op": "done", "uid": "../u", "status": 11})


@pytest.mark.parametrize("header", [
    {"op": "done"},                                          # no uid
    {"op": "done", "uid": "../x"},
    {"op": "done", "uid": "u", "cid": 3},
    {"op": "done", "uid": "u", "status": "11"},
    {"op": "done", "uid": "u", "status": True},
    {"op": "done", "uid": "u", "oob": -1},
    {"op": "done", "uid": "u", "start_time": "now"},
    {"op": "done", "uid": "u", "end_time": 10 ** 400},
    {"op": "done", "uid": "u", "exception": ["x"]},
    {"op": "done", "uid": "u", "text": 1},
    {"op": "done", "uid": "u", "ip": 10},
    {"op": "done", "uid": "u", "port": "51348"},
    {"op": "job_status", "cid": "c", "uid": "u"},            # no status
    {"op": "job_status", "cid": "c", "uid": "u", "status": 7, "start_time": "x"},
    {"op": "node", "cid": "c", "status": 1},                 # no node
    {"op": "node", "cid": "c", "status": 1, "node": [1]},
    {"op": "allocate", "cid": "c"},
    {"op": "allocate", "cid": "c", "alloc": "0"},
    {"op": "send_file", "cid": "c"},
    {"op": "scheduled"},
    {"op": "waiting", "cid": "c", "reason": 3},
    {"op": "refused", "cid": "/etc"},
    {"op": "closed", "cid": ".."},
    {"op": "reply", "reply": "t", "unknown": "u1"},
    {"op": "reply", "reply": "t", "rc": "0"},
    {"op": "provisional"},
    {"op": "job", "cid": "c", "uid": "u"},                   # a request, not for a program
    {"op": "no_such_op"},
    {"op": None},
    {"cid": "c"},
])
def test_malformed_frames_from_the_scheduler_are_refused_with_a_reason(header):
    with pytest.raises(MessageError) as err:
        parse_scheduler_message(header)
    assert str(err.value)


def test_replies_are_checked_too():
    assert parse_reply({"op": "reply", "reply": "t1", "rc": 0}) == Reply(reply="t1", rc=0)
    for bad in ({"op": "done", "uid": "u"}, {"op": "reply", "rc": "0"},
                {"op": "reply", "ok": "yes"}):
        with pytest.raises(MessageError):
            parse_reply(bad)


_FIELDS = sorted({"op", *(f.name for cls in SCHEDULER_MESSAGES.values()
                          for f in dataclasses.fields(cls))})
_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
    st.lists(st.one_of(st.integers(), st.text(max_size=4)), max_size=2),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
    st.sampled_from([*SCHEDULER_MESSAGES, "c1", "u1", "10.0.0.2"]))


@given(st.dictionaries(st.sampled_from(_FIELDS), _VALUES))
def test_any_header_is_a_record_or_a_message_error(header):
    try:
        record = parse_scheduler_message(header)
    except MessageError:
        return
    assert isinstance(record, SCHEDULER_MESSAGES[header["op"]])


# ---- at the ends of the link, with stand-ins for the connection ----------------------


class _Session:
    def __init__(self) -> None:
        self.sent: list = []
        self.clusters: dict = {}

    def send(self, header, bufs=()) -> bool:
        self.sent.append(header.header() if isinstance(header, messages.Record) else header)
        return True

    def describe(self) -> str:
        return "client test"


def _service(tmp_path) -> ClientService:
    opts = SimpleNamespace(dest_path_prefix=str(tmp_path), scheduler_port=1)
    return ClientService(None, opts, None, lambda coro: None)  # type: ignore[arg-type]


def test_a_malformed_request_is_refused_and_a_malformed_computation_answered(tmp_path):
    service, session = _service(tmp_path), _Session()
    service.handle(session, {"op": "cancel", "cid": "c1", "uid": 5, "reply": "t1"}, [])
    service.handle(session, {"op": "compute", "cid": "c2", "files": "a"}, [b""])
    service.handle(session, {"op": "compute", "cid": "../x"}, [b""])  # no id to answer
    service.handle(session, {"op": "setup", "cid": "c3"}, [b""])       # a node's op
    assert [m["op"] for m in session.sent] == ["reply", "refused"]
    assert session.sent[0]["reply"] == "t1" and session.sent[0]["rc"] == -1
    assert session.sent[1]["cid"] == "c2" and "invalid computation" in \
        session.sent[1]["reason"]


def test_a_job_of_an_unknown_computation_ends_cancelled(tmp_path):
    service, session = _service(tmp_path), _Session()
    results: list = []
    session.result = lambda done, bufs: results.append(done)  # type: ignore[attr-defined]
    service.handle(session, Job(cid="gone", uid="u1").header(), [b"args"])
    (done,) = results
    assert isinstance(done, JobResult) and (done.uid, done.cid, done.status) == \
        ("u1", "gone", 8)
    assert set(done.header()) == {"op", "uid", "cid", "status", "exception"}


def test_the_program_drops_a_malformed_frame_and_keeps_its_link(caplog):
    async def run() -> tuple:
        link = SchedulerLink(SimpleNamespace(), "127.0.0.1", 1, None)  # type: ignore[arg-type]
        fut = asyncio.get_running_loop().create_future()
        link.answers["c1"] = fut
        link._on_frame({"op": "scheduled"}, [])                  # no cid: dropped
        link._on_frame({"op": "done", "uid": 3}, [])
        link._on_frame({"op": "nonsense"}, [])
        assert not fut.done()
        link._on_frame(Waiting(cid="c1", reason="its turn").header(), [])
        return fut.result(), link

    with caplog.at_level(logging.WARNING, logger="dispy"):
        answer, link = asyncio.run(run())
    assert answer == Waiting(cid="c1", reason="its turn")
    assert sum("dropped a frame" in r.getMessage() for r in caplog.records) == 3
