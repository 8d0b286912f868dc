"""The node's result log: what was saved and not dropped survives a restart; a big
result stays in its result file, which the log names."""

from __future__ import annotations

import os

import pytest

from dispy.node import results
from dispy.node.results import ResultStore

pytestmark = pytest.mark.timeout(30)

TAG = "0123456789abcdef"  # a computation's result tag


def item(sid, uid, data=b"r", file=None):
    return (sid, "prog", {"op": "done", "uid": uid, "status": 11}, [data, b"", b"out"],
            file)


def test_saved_and_not_dropped_results_survive(tmp_path):
    path = str(tmp_path / "results.log")
    store = ResultStore(path, os.path.dirname(path))
    store.save([item("s1", "a"), item("s1", "b", b"x" * 200_000), item("s2", "c")])
    store.drop("s1", ["a"])
    store.save([item("s2", "d")])  # the drop is written with it
    os.close(store.fd)  # as a kill -9 would leave it: nothing more written
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    kept = ResultStore(path, os.path.dirname(path)).load()
    assert sorted(kept) == ["s1", "s2"]
    (header, bufs, file), = kept["s1"][1]
    assert header["uid"] == "b" and bufs == [b"x" * 200_000, b"", b"out"] and file is None
    assert [h["uid"] for h, _, _ in kept["s2"][1]] == ["c", "d"]


def test_a_drop_waits_for_the_next_write_or_flush(tmp_path):
    """Drops ride with the next results (one write); a node killed before then offers
    the acknowledged result again (the client drops it), never loses one."""
    path = str(tmp_path / "results.log")
    store = ResultStore(path, os.path.dirname(path))
    store.save([item("s", "a"), item("s", "b")])
    store.drop("s", ["a"])
    size = os.path.getsize(path)
    os.close(store.fd)  # killed
    assert os.path.getsize(path) == size
    again = ResultStore(path, os.path.dirname(path))
    assert sorted(h["uid"] for h, _, _ in again.load()["s"][1]) == ["a", "b"]
    again.drop("s", ["a"])
    again.flush_drops()  # the node's housekeeping, each second
    os.close(again.fd)
    kept = ResultStore(path, os.path.dirname(path)).load()
    assert [h["uid"] for h, _, _ in kept["s"][1]] == ["b"]
    last = ResultStore(path, os.path.dirname(path))
    last.load()
    last.drop("s", ["b"])  # nothing live: no drop record needed at all
    last.close()
    assert ResultStore(path, os.path.dirname(path)).load() == {}


def test_a_record_cut_short_by_a_crash_ends_the_log(tmp_path):
    path = str(tmp_path / "results.log")
    store = ResultStore(path, os.path.dirname(path))
    store.save([item("s", "a")])
    store.save([item("s", "b", b"y" * 1000)])
    store.close()
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) - 10)
    kept = ResultStore(path, os.path.dirname(path)).load()
    assert [h["uid"] for h, _, _ in kept["s"][1]] == ["a"]


def test_the_log_is_compacted_and_truncated(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "COMPACT_AT", 50_000)
    path = str(tmp_path / "results.log")
    store = ResultStore(path, os.path.dirname(path))
    store.save([item("s", "keep")])
    for i in range(40):
        store.save([item("s", f"j{i}", b"z" * 5000)])
        store.drop("s", [f"j{i}"])
    assert os.path.getsize(path) < 50_000 + 10_000  # compacted along the way
    store.drop("s", ["keep"])
    store.save([item("s", "last")])
    store.close()
    kept = ResultStore(path, os.path.dirname(path)).load()
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
    _result_file(files, f"4321-{TAG}-1", pieces)
    _result_file(files, f"4321-{TAG}-2", [b"gone", b"", b""])  # its result was dropped
    _result_file(files, f"4321-{TAG}-3", [b"never", b"", b""])  # not named: a killed node
    (files / "other").write_bytes(b"not ours")  # not a result file's name: left alone
    store = ResultStore(path, str(files))
    store.save([("s", "prog", {"op": "done", "uid": "a"}, pieces, f"4321-{TAG}-1"),
                ("s", "prog", {"op": "done", "uid": "b"}, [b"gone", b"", b""],
                 f"4321-{TAG}-2")])
    store.drop("s", ["b"])
    store.save([item("s", "c")])
    assert os.path.getsize(path) < 1000  # names, not the 300 KB
    os.close(store.fd)  # killed
    again = ResultStore(path, str(files))
    kept = again.load()
    got = {h["uid"]: (bufs, file) for h, bufs, file in kept["s"][1]}
    assert sorted(got) == ["a", "c"]
    assert [bytes(b) for b in got["a"][0]] == pieces and got["a"][1] == f"4321-{TAG}-1"
    assert got["c"][1] is None
    # files no record names are gone (the dropped result's too); others stay
    assert sorted(os.listdir(files)) == [f"4321-{TAG}-1", "other"]
    again.close()


def test_a_result_file_missing_at_start_loses_that_result_only(tmp_path, caplog):
    path, files = str(tmp_path / "results.log"), tmp_path / "results"
    files.mkdir()
    _result_file(files, f"77-{TAG}-1", [b"short", b"", b""])
    store = ResultStore(path, str(files))
    store.save([("s", "prog", {"op": "done", "uid": "a"}, [b"short", b"", b""],
                 f"77-{TAG}-1"),
                ("s", "prog", {"op": "done", "uid": "b"}, [b"", b"", b""], f"77-{TAG}-2"),
                item("s", "c")])
    store.close()
    os.truncate(files / f"77-{TAG}-1", 2)  # not the size its record says
    kept = ResultStore(path, str(files)).load()
    assert [h["uid"] for h, _, _ in kept["s"][1]] == ["c"]
    assert "result of job a is lost" in caplog.text and "result of job b" in caplog.text


@pytest.mark.parametrize("name", ["../results.log", "1-1", f"0-{TAG}-1", f"12-{TAG}-x",
                                  f"12-{TAG.upper()}-1", f"a-{TAG}-1", ""])
def test_only_result_file_names_are_mapped(tmp_path, name):
    with pytest.raises(ValueError):
        results.map_result_file(str(tmp_path), name, [0, 0, 0])


def test_a_dropped_results_file_goes_once_the_log_says_it_is_dropped(tmp_path):
    """A node killed between an acknowledgement and its drop record offers the result
    again: its file must still be there."""
    path, files = str(tmp_path / "results.log"), tmp_path / "results"
    files.mkdir()
    for n in (1, 2):
        _result_file(files, f"5-{TAG}-{n}", [b"x", b"", b""])
    store = ResultStore(path, str(files))
    store.save([("s", "prog", {"op": "done", "uid": f"u{n}"}, [b"x", b"", b""],
                 f"5-{TAG}-{n}") for n in (1, 2)])
    store.drop("s", ["u1"])
    assert sorted(os.listdir(files)) == [f"5-{TAG}-1", f"5-{TAG}-2"]  # not yet
    store.flush_drops()
    assert os.listdir(files) == [f"5-{TAG}-2"]
    store.drop("s", ["u2"])  # the last one: the log is truncated, its file goes
    store.close()
    assert os.listdir(files) == []


def test_a_fifo_or_a_result_over_a_frames_limits_is_refused_at_once(tmp_path):
    os.mkfifo(tmp_path / f"6-{TAG}-1")  # opening it to read would block
    with pytest.raises(ValueError, match="not a file"):
        results.map_result_file(str(tmp_path), f"6-{TAG}-1", [0, 0, 0])
    _result_file(tmp_path, f"6-{TAG}-2", [b"", b"", b""])
    with pytest.raises(ValueError, match="limits"):
        results.map_result_file(str(tmp_path), f"6-{TAG}-2", [0] * 5000)


def test_a_result_file_that_cannot_be_mapped_is_read(tmp_path, monkeypatch):
    pieces = [b"r" * 5000, b"out", b"", b"big" * 100]
    lens = _result_file(tmp_path, f"8-{TAG}-1", pieces)

    def no_room(*args, **kwargs):
        raise OSError(12, "Cannot allocate memory")
    monkeypatch.setattr(results.mmap, "mmap", no_room)
    bufs = results.map_result_file(str(tmp_path), f"8-{TAG}-1", lens)
    assert [bytes(b) for b in bufs] == pieces
