"""The client's recover file (client/journal.py): an append-only log that reads back as
what was committed, survives a record cut short by a crash, compacts, and is held by
one program at a time."""

from __future__ import annotations

import os
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispy.client import journal as journal_mod
from dispy.client.job import DispyJob
from dispy.client.journal import MAGIC, Journal, read_file

pytestmark = pytest.mark.timeout(60)

CLUSTER = ("c1", "work", "session", b"key", None, None, 1.0, b"spec")


def job_row(uid: str, cid: str = "c1", sent: bool = False) -> tuple:
    return (uid, cid, "10.0.0.2" if sent else None, 51348 if sent else None, repr(uid),
            1.0, 2.0 if sent else None, b"args", "peer" if sent else None)


def test_what_was_committed_reads_back(tmp_path):
    path = str(tmp_path / "r")
    j = Journal(path)
    j.add_rows([CLUSTER], [job_row("a"), job_row("b")])
    j.add_rows([], [job_row("a", sent=True)], ["b"])
    clusters, jobs = read_file(path)
    assert clusters == {"c1": CLUSTER} and jobs == {"a": job_row("a", sent=True)}
    assert (j.cluster_rows, j.rows) == (clusters, jobs)
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    j.close()


def test_flush_journals_queued_sent_and_forgotten_jobs(tmp_path):
    j = Journal(str(tmp_path / "r"))
    queued, sent = DispyJob(None, b"q", "u1", 1.0), DispyJob(None, b"s", "u2", 1.0)
    queued.id, sent.id = 7, "x"
    j.queued(queued, "c1")
    j.queued(sent, "c1")
    sent.status = DispyJob.Running  # sent before the commit: journaled once, as sent
    j.dispatched(sent, "c1", "10.0.0.2", 51348, "peer")
    j.flush()
    _, jobs = read_file(j.path)
    assert jobs["u1"][2:5] == (None, None, "7") and jobs["u1"][7] == b"q"
    assert jobs["u2"][2:4] == ("10.0.0.2", 51348) and jobs["u2"][8] == "peer"
    j.finished("u1")
    j.flush()
    assert set(read_file(j.path)[1]) == {"u2"}
    assert j.close_at_exit() == 1 and os.path.exists(j.path)  # kept for recover_jobs


def test_a_record_cut_short_by_a_crash_ends_the_log(tmp_path):
    path = str(tmp_path / "r")
    j = Journal(path)
    j.add_rows([CLUSTER], [job_row("a")])
    j.close()
    with open(path, "ab") as fh:
        fh.write(b"\x00\x00\x01\x00partial")
    assert read_file(path)[1] == {"a": job_row("a")}
    again = Journal(path)  # cuts the torn record off and appends after what was whole
    again.add_rows([], [job_row("b")])
    again.close()
    assert set(read_file(path)[1]) == {"a", "b"}


def test_anything_else_is_not_a_recover_file(tmp_path):
    path = tmp_path / "r"
    path.write_bytes(b"SQLite format 3\x00...")
    with pytest.raises(ValueError, match="not a dispy recover file"):
        read_file(str(path))
    with pytest.raises(ValueError, match="cannot be used"):
        Journal(str(path))
    assert path.read_bytes().startswith(b"SQLite")  # left as it was


def test_one_program_at_a_time(tmp_path):
    path = str(tmp_path / "r")
    first = Journal(path)
    with pytest.raises(ValueError, match="another program"):
        Journal(path)
    first.close()
    Journal(path).close()


def test_removing_a_cluster_removes_its_jobs(tmp_path):
    j = Journal(str(tmp_path / "r"))
    j.add_rows([CLUSTER, ("c2", *CLUSTER[1:])], [job_row("a"), job_row("b", cid="c2")])
    j.remove_clusters(["c1"])
    assert read_file(j.path) == ({"c2": ("c2", *CLUSTER[1:])}, {"b": job_row("b", cid="c2")})
    j.close()


def test_the_log_is_compacted_to_what_is_live(tmp_path, monkeypatch):
    monkeypatch.setattr(journal_mod, "COMPACT_MIN", 100)
    j = Journal(str(tmp_path / "r"))
    j.add_rows([CLUSTER], [])
    for i in range(500):
        j.add_rows([], [job_row(f"u{i}")], [f"u{i - 1}"] if i else None)
    assert j.records <= 100 and os.path.getsize(j.path) < 10_000
    assert read_file(j.path) == ({"c1": CLUSTER}, {"u499": job_row("u499")})
    assert not os.path.exists(j.path + ".new")
    with pytest.raises(ValueError):
        Journal(j.path)  # still held after the rename
    j.close()


ops = st.lists(st.tuples(st.sampled_from(["queue", "send", "forget", "drop_cluster"]),
                         st.integers(0, 9), st.sampled_from(["c1", "c2"])), max_size=80)


@settings(max_examples=100, deadline=None)
@given(ops)
def test_the_file_always_reads_as_the_model(steps):
    """Whatever is committed, in whatever order, and however often the log is
    compacted, reading the file gives what a plain dict model holds."""
    with tempfile.TemporaryDirectory(prefix="dispy-j") as tmp:  # (one per example)
        _file_reads_as_the_model(os.path.join(tmp, "r"), steps)


def _file_reads_as_the_model(path, steps):
    j = Journal(path)
    old = journal_mod.COMPACT_MIN
    journal_mod.COMPACT_MIN = 10
    try:
        clusters = {cid: (cid, *CLUSTER[1:]) for cid in ("c1", "c2")}
        j.add_rows(clusters.values(), [])
        jobs: dict[str, tuple] = {}
        for op, n, cid in steps:
            uid = f"u{n}"
            if op in ("queue", "send") and cid in clusters:
                jobs[uid] = job_row(uid, cid, sent=op == "send")
                j.add_rows([], [jobs[uid]])
            elif op == "forget":
                jobs.pop(uid, None)
                j.forget([uid])
            elif op == "drop_cluster":
                clusters.pop(cid, None)
                jobs = {u: row for u, row in jobs.items() if row[1] != cid}
                j.remove_clusters([cid])
        assert read_file(path) == (clusters, jobs)
    finally:
        journal_mod.COMPACT_MIN = old
        j.close()


def test_magic_is_what_the_file_starts_with(tmp_path):
    j = Journal(str(tmp_path / "r"))
    j.close()
    assert (tmp_path / "r").read_bytes() == MAGIC
