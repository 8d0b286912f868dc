"""The scheduler's journal (scheduler/journal.py) without sockets: what is written is
what a restart reads, in the order it was written."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from dispy.scheduler.blobs import BLOB_MIN
from dispy.scheduler.journal import SchedulerJournal, _replay, pack, unpack

pytestmark = pytest.mark.timeout(60)


@given(st.lists(st.binary(max_size=64), max_size=8))
def test_pack_round_trip(bufs):
    blob, names = pack(bufs)
    assert unpack(blob) == (bufs, []) and names == []


def test_unpack_refuses_what_pack_did_not_make():
    with pytest.raises(ValueError):
        unpack(pack([b"abc"])[0] + b"x")


def test_big_buffers_are_files_written_once_and_removed_with_their_row(tmp_path):
    """An 8 MB argument or result is a private file beside the journal, written once,
    not bytes the log carries again at each compaction."""
    big, small = os.urandom(BLOB_MIN), b"s"
    j = _journal(tmp_path)
    blobs = tmp_path / "journal.log.blobs"
    assert stat.S_IMODE(os.stat(blobs).st_mode) == 0o700
    j.session("s", "client", "prog", "addr", "/root")
    j.computation("s", "cc", {"name": "work"}, [big, small])
    j.job("s", "u1", "cc", {"uid": "u1"}, [big], [])
    j.job("s", "u2", "cc", {"uid": "u2"}, [small, big], [])
    j.flush()
    assert len(os.listdir(blobs)) == 3
    assert all(stat.S_IMODE(os.stat(blobs / n).st_mode) == 0o600 for n in os.listdir(blobs))
    j.sent("s", "u1", "10.0.0.9", 51348, "b1s1.cc", "7")
    j.ended("s", "u1", {"op": "done", "uid": "u1"}, [big, small])
    j.flush()
    assert len(os.listdir(blobs)) == 3  # u1's arguments gone, its result kept
    state = j.load()  # as a restart reads it
    assert state.computations[0][3] == [big, small]
    assert [job.bufs for job in state.jobs] == [[small, big]]
    assert state.results[0][3] == [big, small]
    j.acked("s", ["u1"])
    j.drop_computation("s", "cc")
    j.flush()
    assert os.listdir(blobs) == []
    j.close()


def test_files_no_row_names_are_removed_at_start(tmp_path):
    """A crash between writing a file and committing its row leaves the file alone."""
    j = _journal(tmp_path)
    j.session("s", "client", "prog", "addr", "/root")
    j.job("s", "u1", "cc", {"uid": "u1"}, [os.urandom(BLOB_MIN)], [])
    j.flush()
    j.job("s", "u2", "cc", {"uid": "u2"}, [os.urandom(BLOB_MIN)], [])  # never committed
    os.close(j.fd)  # as a kill -9 would leave it
    blobs = tmp_path / "journal.log.blobs"
    assert len(os.listdir(blobs)) == 2
    again = _journal(tmp_path)
    assert [job.uid for job in again.load().jobs] == ["u1"]
    assert len(os.listdir(blobs)) == 1
    again.drop_session("s")
    again.close()
    assert os.listdir(blobs) == []


def test_a_missing_file_is_a_clear_error(tmp_path):
    j = _journal(tmp_path)
    j.session("s", "client", "prog", "addr", "/root")
    j.job("s", "u1", "cc", {"uid": "u1"}, [os.urandom(BLOB_MIN)], [])
    j.close()
    blobs = tmp_path / "journal.log.blobs"
    for name in os.listdir(blobs):
        os.unlink(blobs / name)
    with pytest.raises(ValueError, match="file"):
        _journal(tmp_path).load()


def _journal(tmp_path) -> SchedulerJournal:
    return SchedulerJournal(str(tmp_path / "journal.log"))


def test_restart_reads_what_was_written(tmp_path):
    j = _journal(tmp_path)
    sid = j.scheduler_id()
    j.start_boot("c1", "k" * 32)
    j.session("s", "client", "prog", "10.0.0.1", "/root/client-x")
    j.computation("s", "cc", {"name": "work"}, [b"bundle", b"setup"])
    j.job("s", "u1", "cc", {"uid": "u1"}, [b"args"], [("/root/f", "f")])
    j.job("s", "u2", "cc", {"uid": "u2"}, [b"args2"], [])
    j.job("s", "u3", "cc", {"uid": "u3"}, [b"args3"], [])
    j.sent("s", "u1", "10.0.0.9", 51348, "b1s1.cc", "7")
    j.sent("s", "u2", "10.0.0.9", 51348, "b1s1.cc", "8")
    j.requeued("s", "u2")  # its node was lost: queued again
    j.ended("s", "u3", {"op": "done", "uid": "u3", "status": 5}, [b"result"])
    j.close()
    assert stat.S_IMODE(os.stat(j.path).st_mode) == 0o600

    again = _journal(tmp_path)
    assert again.scheduler_id() == sid  # programs reconnect to "the same" scheduler
    state = again.load()
    assert state.boots == {1: ("c1", "k" * 32)}
    assert state.sessions == [("s", "client", "prog", "10.0.0.1", "/root/client-x")]
    assert state.computations == [("s", "cc", {"name": "work"}, [b"bundle", b"setup"])]
    jobs = {job.uid: job for job in state.jobs}
    assert set(jobs) == {"u1", "u2"}
    assert jobs["u1"].sent == (1, "10.0.0.9", 51348, "b1s1.cc", "7")
    assert jobs["u1"].files == [("/root/f", "f")] and jobs["u1"].bufs == [b"args"]
    assert jobs["u2"].sent is None
    assert state.results == [("s", "u3", {"op": "done", "uid": "u3", "status": 5},
                              [b"result"])]
    again.start_boot("c2", "q" * 32)
    assert again.boot == 2
    again.acked("s", ["u3"])
    again.forget_boots(set())  # no job refers to boot 1 any more
    again.drop_computation("s", "cc")
    again.flush()
    state = again.load()
    assert state.results == [] and state.jobs == [] and state.computations == []
    assert list(state.boots) == [2]
    again.drop_session("s")
    again.close()
    assert _journal(tmp_path).load().sessions == []


def test_nothing_is_written_before_flush(tmp_path):
    j = _journal(tmp_path)
    j.session("s", "client", "prog", "addr", "/root")
    assert j.load().sessions == []
    j.flush()
    assert len(j.load().sessions) == 1
    j.close()


def test_rows_of_an_ended_session_are_dropped_at_load(tmp_path):
    """A result journaled after its session ended (a late fetch) is not kept forever."""
    j = _journal(tmp_path)
    j.session("s", "client", "prog", "addr", "/root")
    j.drop_session("s")
    j.ended("s", "u1", {"op": "done", "uid": "u1"}, [b"r"])
    j.job("gone", "u2", "cc", {"uid": "u2"}, [b"a"], [])
    j.flush()
    state = j.load()
    assert state.results == [] and state.jobs == [] and state.sessions == []
    j.close()


def test_a_record_cut_by_a_crash_ends_the_log_and_is_cut_off(tmp_path):
    j = _journal(tmp_path)
    j.session("s", "client", "prog", "addr", "/root")
    j.job("s", "u1", "cc", {"uid": "u1"}, [b"a"], [])
    j.flush()
    os.close(j.fd)
    with open(j.path, "ab") as fh:  # half a record: the length says more than follows
        fh.write(b"\x00\x00\x01\x00partial")
    again = _journal(tmp_path)
    assert [job.uid for job in again.load().jobs] == ["u1"]
    again.job("s", "u2", "cc", {"uid": "u2"}, [b"b"], [])  # appended after the cut
    again.close()
    assert sorted(job.uid for job in _journal(tmp_path).load().jobs) == ["u1", "u2"]


def test_a_second_scheduler_cannot_use_the_same_journal(tmp_path):
    j = _journal(tmp_path)
    with pytest.raises(ValueError, match="in use"):
        _journal(tmp_path)
    j.close()
    _journal(tmp_path).close()


def test_the_log_is_compacted_and_keeps_what_is_live(tmp_path, monkeypatch):
    monkeypatch.setattr("dispy.scheduler.journal.COMPACT_MIN", 100)
    j = _journal(tmp_path)
    j.session("s", "client", "prog", "addr", "/root")
    j.flush()
    for i in range(2000):
        j.job("s", f"u{i}", "cc", {"uid": i}, [b"x" * 100], [])
        j.flush()
        j.ended("s", f"u{i}", {"uid": i}, [b"r"])
        j.acked("s", [f"u{i}"]) if i % 2 else None
        j.flush()
    # 5 001 records written; about 1 000 live (the results not acked): rewritten at 4 x
    assert j.records <= 4 * 1002 + 3
    state = j.load()
    assert sorted(uid for _, uid, _, _ in state.results) == sorted(
        f"u{i}" for i in range(0, 2000, 2))
    assert state.jobs == [] and len(state.sessions) == 1
    j.close()
    assert not os.path.exists(j.path + ".new")


_OPS = st.lists(st.tuples(
    st.sampled_from(["job", "sent", "requeued", "ended", "acked", "flush", "reopen",
                     "drop_computation"]),
    st.integers(0, 5), st.sampled_from(["c1", "c2"])), max_size=40)


@given(_OPS)
def test_a_restart_reads_what_a_model_says(ops):
    """Any sequence of changes, flushed and reopened at any point, reads back as a plain
    model of jobs and results says (only what was flushed)."""
    _run_model(ops)


@settings(max_examples=300, deadline=None)
@given(_OPS)
@example([("ended", 0, "c1"), ("job", 0, "c1"), ("flush", 0, "c1")])  # a row and a result
@example([("ended", 1, "c1"), ("flush", 0, "c1"), ("acked", 1, "c1"), ("flush", 0, "c1"),
          ("job", 2, "c2"), ("sent", 2, "c2"), ("flush", 0, "c1"), ("requeued", 2, "c2"),
          ("drop_computation", 0, "c2"), ("flush", 0, "c1")])
def test_compactions_from_memory_keep_what_the_model_says(ops):
    """The same with the log compacted at nearly every flush: a compaction writes the
    state the journal keeps in memory (it no longer reads the log back), and that state
    must be the log's."""
    with mock.patch("dispy.scheduler.journal.COMPACT_MIN", 2), \
            mock.patch("dispy.scheduler.journal.COMPACT_FACTOR", 1):
        _run_model(ops)


def _run_model(ops):
    """(a directory per example, removed after it: hundreds of examples run)"""
    with tempfile.TemporaryDirectory(prefix="dispy-j") as tmp:
        _run_model_in(Path(tmp), ops)


def _run_model_in(tmp, ops):
    j = SchedulerJournal(str(tmp / "journal.log"))
    j.session("s", "client", "prog", "addr", "/root")
    j.flush()
    model_jobs: dict = {}
    model_results: dict = {}
    flushed = ({}, {})
    pending_jobs, pending_results = dict(model_jobs), dict(model_results)
    for op, n, ccid in ops:
        uid = f"u{n}"
        if op == "job":
            j.job("s", uid, ccid, {"uid": uid}, [uid.encode()], [])
            pending_jobs[uid] = (ccid, None)
        elif op in ("sent", "requeued") and uid in pending_jobs:
            if op == "sent":
                j.sent("s", uid, "10.0.0.1", 51348, "nc", "7")
                where = (j.boot, "10.0.0.1", 51348, "nc", "7")
            else:
                j.requeued("s", uid)
                where = None
            pending_jobs[uid] = (pending_jobs[uid][0], where)
        elif op == "ended":
            j.ended("s", uid, {"uid": uid}, [b"r" + uid.encode()])
            pending_jobs.pop(uid, None)
            pending_results[uid] = b"r" + uid.encode()
        elif op == "acked":
            j.acked("s", [uid])
            pending_results.pop(uid, None)
        elif op == "drop_computation":
            j.drop_computation("s", ccid)
            pending_jobs = {u: v for u, v in pending_jobs.items() if v[0] != ccid}
        elif op == "flush":
            j.flush()
            flushed = (dict(pending_jobs), dict(pending_results))
            _memory_is_the_log(j)
        elif op == "reopen":  # a crash: what was not flushed is lost
            os.close(j.fd)
            j = SchedulerJournal(str(tmp / "journal.log"))
            pending_jobs, pending_results = dict(flushed[0]), dict(flushed[1])
    state = j.load()
    assert {job.uid: (job.ccid, job.sent) for job in state.jobs} == flushed[0]
    assert {job.uid: job.bufs for job in state.jobs} == {
        u: [u.encode()] for u in flushed[0]}
    assert {uid: bufs[0] for _, uid, _, bufs in state.results} == flushed[1]
    j.close()


def _memory_is_the_log(j: SchedulerJournal) -> None:
    """After a flush the state the journal keeps in memory is what its log replays to."""
    with open(j.path, "rb") as fh:
        on_disk, _, _ = _replay(fh.read())
    assert (on_disk.sessions, on_disk.computations, on_disk.jobs, on_disk.results) == (
        j._live.sessions, j._live.computations, j._live.jobs, j._live.results)
