"""The node's result log: what was saved and not dropped survives a restart; a big
result stays in its result file, which the log names."""

from __future__ import annotations

import os

import pytest

from dispy.node import results
from dispy.node.results import ResultStore

pytestmark = pytest.mark.timeout(30)


def item(sid, uid, data=b"r", file=None):
    return (sid, "prog", {"op": "done", "uid": uid, "status": 11}, [data, b"", b"out"],
            file)


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
    (header, bufs, file), = kept["s1"][1]
    assert header["uid"] == "b" and bufs == [b"x" * 200_000, b"", b"out"] and file is None
    assert [h["uid"] for h, _, _ in kept["s2"][1]] == ["c", "d"]


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
    assert sorted(h["uid"] for h, _, _ in again.load()["s"][1]) == ["a", "b"]
    again.drop("s", ["a"])
    again.flush_drops()  # the node's housekeeping, each second
    os.close(again.fd)
    assert [h["uid"] for h, _, _ in ResultStore(path).load()["s"][1]] == ["b"]
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
    assert [h["uid"] for h, _, _ in kept["s"][1]] == ["a"]


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
    assert [h["uid"] for h, _, _ in kept["s"][1]] == ["last"]


def _result_file(directory, name, pieces):
    with open(os.path.join(directory, name), "wb") as fh:
        for piece in pieces:
            fh.write(piece)
    return [len(p) for p in pieces]


def test_a_result_file_is_named_not_copied_and_mapped_again_at_start(tmp_path):
    path, files = str(tmp_path / "results.log"), tmp_path / "results"
    files.mkdir()
    pieces = [b"p" * 300_000, b"stdout", b"", b"big" * 1000]
    _result_file(files, "4321-1", pieces)
    _result_file(files, "4321-2", [b"gone", b"", b""])  # its result was dropped
    _result_file(files, "4321-3", [b"never", b"", b""])  # never named: a killed node
    (files / "other").write_bytes(b"not ours")  # not a result file's name: left alone
    store = ResultStore(path, str(files))
    store.save([("s", "prog", {"op": "done", "uid": "a"}, pieces, "4321-1"),
                ("s", "prog", {"op": "done", "uid": "b"}, [b"gone", b"", b""], "4321-2")])
    store.drop("s", ["b"])
    store.save([item("s", "c")])
    assert os.path.getsize(path) < 1000  # names, not the 300 KB
    os.close(store.fd)  # killed
    again = ResultStore(path, str(files))
    kept = again.load()
    got = {h["uid"]: (bufs, file) for h, bufs, file in kept["s"][1]}
    assert sorted(got) == ["a", "c"]
    assert [bytes(b) for b in got["a"][0]] == pieces and got["a"][1] == "4321-1"
    assert got["c"][1] is None
    # files no record names are gone (the dropped result's too); others stay
    assert sorted(os.listdir(files)) == ["4321-1", "other"]
    again.close()


def test_a_result_file_missing_at_start_loses_that_result_only(tmp_path, caplog):
    path, files = str(tmp_path / "results.log"), tmp_path / "results"
    files.mkdir()
    _result_file(files, "77-1", [b"short", b"", b""])
    store = ResultStore(path, str(files))
    store.save([("s", "prog", {"op": "done", "uid": "a"}, [b"short", b"", b""], "77-1"),
                ("s", "prog", {"op": "done", "uid": "b"}, [b"", b"", b""], "77-2"),
                item("s", "c")])
    store.close()
    os.truncate(files / "77-1", 2)  # not the size its record says
    kept = ResultStore(path, str(files)).load()
    assert [h["uid"] for h, _, _ in kept["s"][1]] == ["c"]
    assert "result of job a is lost" in caplog.text and "result of job b" in caplog.text


@pytest.mark.parametrize("name", ["../results.log", "0-1", "12-x", "1-1-1", "a-1", ""])
def test_only_result_file_names_are_mapped(tmp_path, name):
    with pytest.raises(ValueError):
        results.map_result_file(str(tmp_path), name, [0, 0, 0])
