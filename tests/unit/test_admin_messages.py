"""The dispyadmin link's records (wire/adminmsg.py) and the node's answers, no sockets."""

from __future__ import annotations

import dataclasses
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispy.node import admin
from dispy.wire import adminmsg, codec
from dispy.wire.adminmsg import (
    AdminMessageError,
    AdminReply,
    Info,
    NotAdminOperation,
    Serve,
    ServiceTime,
    SetCpus,
    Unlisted,
)
from dispy.wire.messages import Cpus

pytestmark = pytest.mark.timeout(30)


def wire(header: dict[str, Any]) -> dict[str, Any]:
    """``header`` as the peer gets it (through the frame codec)."""
    return codec.loads(codec.dumps(header))


@pytest.mark.parametrize("record", [
    Info(reply="1"), SetCpus(reply="2", cpus=3), SetCpus(reply="3", cpus=-1),
    SetCpus(reply="4"), ServiceTime(reply="5", control="stop", time="17:30"),
    ServiceTime(reply="6", control="end", time="now"), ServiceTime(reply="7", control="start"),
    Serve(reply="8", clients=0), Serve(reply="9", clients=-1), Info(),
])
def test_request_round_trip(record):
    assert adminmsg.parse_request(wire(record.header())) == record


@pytest.mark.parametrize("record", [
    AdminReply(reply="1", ok=True, info={"cpus": 2, "service": {"start": None}}),
    AdminReply(reply="2", ok=True, cpus=4),
    AdminReply(reply="3", ok=True, service={"start": "09:00", "stop": None, "end": None},
               pending=True, text="kept"),
    AdminReply(reply="4", ok=True, service={}, service_state="open"),
    AdminReply(reply="5", ok=True, serve=-1),
    AdminReply(reply="6", ok=False, error="no"),
])
def test_reply_round_trip(record):
    assert adminmsg.parse_reply(wire(record.header())) == record


def test_requests_travel_as_the_dicts_did():
    assert SetCpus(reply="1", cpus="all").header() == {"op": "set_cpus", "reply": "1",
                                                       "cpus": "all"}
    assert ServiceTime(control="end").header() == {"op": "service_time", "control": "end",
                                                   "time": ""}
    assert AdminReply(reply="7", ok=True, cpus=2).fields() == {"ok": True, "cpus": 2}
    assert Unlisted(reply="3", name="compute").header() == {"op": "compute", "reply": "3"}
    assert adminmsg.request("compute", cid="x") == Unlisted(name="compute")
    assert adminmsg.request("serve", clients=2) == Serve(clients=2)


@pytest.mark.parametrize("header, reason", [
    ({"op": "compute", "cid": "x"}, "'compute' is not an admin operation"),
    ({"op": None}, "'None' is not an admin operation"),
    ({"op": ["info"]}, "is not an admin operation"),
    ({}, "is not an admin operation"),
    ({"op": "info", "reply": "../x"}, "not a valid token"),
    ({"op": "info", "reply": 5}, "not a valid token"),
    ({"op": "set_cpus"}, "cpus must be an integer or 'all', not None"),
    ({"op": "set_cpus", "cpus": "most"}, "cpus must be an integer or 'all'"),
    ({"op": "set_cpus", "cpus": True}, "cpus must be an integer or 'all'"),
    ({"op": "set_cpus", "cpus": 2.0}, "cpus must be an integer or 'all'"),
    ({"op": "service_time", "control": "begin", "time": "now"},
     "control must be one of start, stop, end"),
    ({"op": "service_time", "time": "now"}, "control must be one of"),
    ({"op": "service_time", "control": "start", "time": 9}, "HH:MM"),
    ({"op": "serve"}, "clients must be -1"),
    ({"op": "serve", "clients": -2}, "clients must be -1"),
    ({"op": "serve", "clients": "3"}, "clients must be -1"),
    ({"op": "serve", "clients": False}, "clients must be -1"),
])
def test_malformed_requests_are_refused(header, reason):
    with pytest.raises(AdminMessageError, match=reason):
        adminmsg.parse_request(header)


@pytest.mark.parametrize("header", [
    {"op": "info"}, {"ok": True}, {"op": "reply", "ok": "yes"},
    {"op": "reply", "ok": True, "cpus": "2"}, {"op": "reply", "ok": True, "info": [1]},
    {"op": "reply", "reply": "a b", "ok": True}, {"op": "reply", "ok": False, "error": 3},
])
def test_malformed_replies_are_refused(header):
    with pytest.raises(AdminMessageError):
        adminmsg.parse_reply(header)


values = st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=8) | \
    st.sampled_from(["all", "now", "17:00", "start", "stop", "end", "1"]) | \
    st.lists(st.integers(), max_size=2) | st.dictionaries(st.text(max_size=3), st.integers(),
                                                          max_size=2)
headers = st.fixed_dictionaries(
    {}, optional={"op": st.sampled_from([*adminmsg.REQUESTS, "reply", "job"]) | values,
                  **{k: values for k in ("reply", "cpus", "control", "time", "clients", "ok",
                                         "error", "info", "service", "serve")}})


@settings(max_examples=200, deadline=None)
@given(headers)
def test_anything_parses_to_a_record_or_the_error(header):
    for parse in (adminmsg.parse_request, adminmsg.parse_reply):
        try:
            record = parse(header)
        except AdminMessageError:
            continue
        assert isinstance(record, adminmsg.Record)
        assert parse(wire(record.header())) == record


# ---- the node's side (node/admin.py), with a stand-in daemon --------------------------------


class FakeDaemon:
    def __init__(self) -> None:
        self.cpus, self.sent, self.stopped = 2, [], False
        self.opts = SimpleNamespace(serve=-1, service_window=None)
        self.served, self.owner, self.service_state = 0, None, "open"
        self.quitting = False

    def set_cpus(self, n: int) -> None:
        self.cpus = n if n > 0 else 4 + n  # of 4 CPUs

    def request_stop(self, terminate: bool) -> None:
        self.stopped = True


def test_node_answers_with_the_token(monkeypatch):
    monkeypatch.setattr(admin.os, "cpu_count", lambda: 4)
    daemon = FakeDaemon()
    got = admin.answer(daemon, wire(SetCpus(reply="12", cpus=-1).header()))
    assert got == AdminReply(reply="12", ok=True, cpus=3) and daemon.cpus == 3
    too_many = admin.answer(daemon, wire(SetCpus(reply="13", cpus=5).header()))
    assert too_many == AdminReply(reply="13", ok=False,
                                  error="the node has 4 CPUs; cannot use 5")
    assert admin.answer(daemon, {"op": "serve", "reply": "14", "clients": 0}) == \
        AdminReply(reply="14", ok=True, serve=0)
    assert daemon.stopped


def test_serve_replaces_a_ctrl_c_quit():
    daemon = FakeDaemon()
    daemon.owner, daemon.quitting, daemon.opts.serve = object(), True, 1  # after Ctrl-C
    assert admin.answer(daemon, {"op": "serve", "reply": "15", "clients": -1}) == \
        AdminReply(reply="15", ok=True, serve=-1)
    assert not daemon.quitting and daemon.opts.serve == -1 and not daemon.stopped


def test_node_refuses_what_is_no_admin_request(caplog):
    with caplog.at_level(logging.WARNING, logger="dispy.node"):
        got = admin.answer(None, {"op": "job", "reply": "4", "cid": "x"}, "10.0.0.1")
    assert got == AdminReply(reply="4", ok=False, error="'job' is not an admin operation")
    assert "10.0.0.1 asked for 'job'" in caplog.text
    assert admin.answer(None, {"op": "set_cpus", "reply": "5", "cpus": "x"}) == AdminReply(
        reply="5", ok=False, error="cpus must be an integer or 'all', not 'x'")
    bad_token = admin.answer(None, {"op": "info", "reply": {"a": 1}})
    assert bad_token.reply is None and not bad_token.ok
    with pytest.raises(NotAdminOperation):
        adminmsg.parse_request({"op": "file"})


def test_reopening_tells_the_owner_its_cpus_as_a_record():
    daemon = FakeDaemon()
    daemon.service_state = "stopped"
    daemon.usable_cpus = lambda: 2
    daemon.owner = SimpleNamespace(send=daemon.sent.append)
    daemon.jobs = SimpleNamespace(start_jobs=lambda: None)
    admin._reopen(daemon)
    assert daemon.sent == [Cpus(cpus=2)]
    assert dataclasses.asdict(daemon.sent[0]) == {"reply": None, "cpus": 2}
