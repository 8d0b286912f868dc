"""The node's result log: what was saved and not dropped survives a restart."""

from __future__ import annotations

import os

import pytest

from dispy.node import results
from dispy.node.results import ResultStore

pytestmark = pytest.mark.timeout(30)


def item(sid, uid, data=b"r"):
    return (sid, "prog", {"op": "done", "uid": uid, "status": 11}, [data, b"", b"out"])


def test_saved_and_not_dropped_results_survive(tmp_path):
    path = str(tmp_path / "results.log")
    store = ResultStore(path)
    store.save([item("s1", "a"), item("s1", "b", b"x" * 200_000), item("s2", "c")])
    store.drop("s1", ["a"])
    store.save([item("s2", "d")])  # the drop is written with it
    os.close(store.fd)  # as a kill -9 would leave it: nothing more written
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    kept = ResultStore(path).load()
    assert sorted(kept) == ["s1", "s2"]
    (header, bufs), = kept["s1"][1]
    assert header["uid"] == "b" and bufs == [b"x" * 200_000, b"", b"out"]
    assert [h["uid"] for h, _ in kept["s2"][1]] == ["c", "d"]


def test_a_drop_waits_for_the_next_write_or_flush(tmp_path):
    """Drops ride with the next results (one write); a node killed before then offers
    the acknowledged result again (the client drops it), never loses one."""
    path = str(tmp_path / "results.log")
    store = ResultStore(path)
    store.save([item("s", "a"), item("s", "b")])
    store.drop("s", ["a"])
    size = os.path.getsize(path)
    os.close(store.fd)  # killed
    assert os.path.getsize(path) == size
    again = ResultStore(path)
    assert sorted(h["uid"] for h, _ in again.load()["s"][1]) == ["a", "b"]
    again.drop("s", ["a"])
    again.flush_drops()  # the node's housekeeping, each second
    os.close(again.fd)
    assert [h["uid"] for h, _ in ResultStore(path).load()["s"][1]] == ["b"]
    last = ResultStore(path)
    last.load()
    last.drop("s", ["b"])  # nothing live: no drop record needed at all
    last.close()
    assert ResultStore(path).load() == {}


def test_a_record_cut_short_by_a_crash_ends_the_log(tmp_path):
    path = str(tmp_path / "results.log")
    store = ResultStore(path)
    store.save([item("s", "a")])
    store.save([item("s", "b", b"y" * 1000)])
    store.close()
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) - 10)
    kept = ResultStore(path).load()
    assert [h["uid"] for h, _ in kept["s"][1]] == ["a"]


def test_the_log_is_compacted_and_truncated(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "COMPACT_AT", 50_000)
    path = str(tmp_path / "results.log")
    store = ResultStore(path)
    store.save([item("s", "keep")])
    for i in range(40):
        store.save([item("s", f"j{i}", b"z" * 5000)])
        store.drop("s", [f"j{i}"])
    assert os.path.getsize(path) < 50_000 + 10_000  # compacted along the way
    store.drop("s", ["keep"])
    store.save([item("s", "last")])
    store.close()
    kept = ResultStore(path).load()
    assert [h["uid"] for h, _ in kept["s"][1]] == ["last"]
