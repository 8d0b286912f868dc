"""Progress bars of cluster.wait(progress=True) and Executor.map(progress=True), read from
tqdm's output on stderr (a terminal bar; the same tqdm.auto bar is a widget in Jupyter)."""

from __future__ import annotations

import re

import pytest

import dispy

pytestmark = pytest.mark.timeout(90)


def maybe_fail(x):
    if x == 3:
        raise ValueError("three")
    return x


def last_state(text):
    """(done, total, failed) of the bar's last line."""
    lines = [line for line in re.split(r"[\r\n]", text) if "job" in line]
    assert lines, text
    found = re.search(r"(\d+)/(\d+) \[", lines[-1])
    failed = re.search(r"failed=(\d+)", lines[-1])
    return int(found[1]), int(found[2]), int(failed[1]) if failed else 0


def test_cluster_wait_progress(node, capfd):
    with dispy.JobCluster(maybe_fail, nodes=["127.0.0.1"], node_port=node.port,
                          port=0) as cluster:
        for i in range(10):
            cluster.submit(i)
        assert cluster.wait(60, progress=True)
    err = capfd.readouterr().err
    assert last_state(err) == (10, 10, 1)
    assert "job/s" in err or "s/job" in err


def test_executor_map_progress(node, capfd):
    with dispy.Executor(nodes=["127.0.0.1"], node_port=node.port, port=0) as ex:
        assert list(ex.map(abs, range(-6, 6), progress=True)) == [abs(i) for i in range(-6, 6)]
        assert last_state(capfd.readouterr().err) == (12, 12, 0)
        results = ex.map(maybe_fail, range(5), progress=True)
        with pytest.raises(ValueError):
            list(results)
    done, total, failed = last_state(capfd.readouterr().err)
    assert total == 5 and failed == 1 and done >= 4
