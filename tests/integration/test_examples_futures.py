"""The examples of futures, Executor, timeouts and priorities, run as programs against a
real dispynode (see test_examples.py)."""

from __future__ import annotations

import re

import pytest
from test_examples import run_example

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def alpha(node_factory):
    return node_factory("-c", "2", "--name", "alpha")


def test_futures_asyncio(alpha, tmp_path):
    out = run_example("futures_asyncio.py", tmp_path, alpha)
    assert "map: [0, 1, 4, 9, 16, 25]" in out
    found = re.search(r"^as completed: \[(.*)\]$", out, re.M)
    assert found and sorted(int(v) for v in found[1].split(", ")) == [0, 1, 4, 9, 16]
    assert "failed: Terminated ValueError: negative: -1" in out
    assert "not yet; then: 16" in out
    assert "awaited: [49, 64, 81]" in out


def test_executor(alpha, tmp_path):
    out = run_example("executor.py", tmp_path, alpha)
    for n, steps in ((27, 111), (97, 118), (871, 178)):
        assert f"collatz_steps({n}) = {steps}" in out
    assert "longest below 1000: 871" in out
    assert "lambda: 40" in out
    assert "remote ValueError: invalid literal for int() with base 10: 'not a number'" in out


def test_timeout_priority(node_factory, tmp_path):
    """One CPU, so no two jobs start at once (on two CPUs a pair starts together and
    their start times fall in either order). The first job may take the free CPU as it
    is submitted; the rest wait and start by priority, first come first within one."""
    node = node_factory("-c", "1", "--name", "solo")
    out = run_example("timeout_priority.py", tmp_path, node)
    assert "stuck: terminated=True: timed out after 1 s" in out
    order = re.search(r"^started in order: (.*)$", out, re.M)[1].split()
    assert sorted(order) == sorted(f"p{p}-{i}" for p in (0, 5, 1) for i in range(2))
    waited = [(-int(name[1]), int(name[3])) for name in order[1:]]
    assert waited == sorted(waited), order


def test_cluster_stats(alpha, tmp_path):
    out = run_example("cluster_stats.py", tmp_path, alpha)
    assert "finished 8 of 9, failed 1" in out
    assert re.search(r"0\.\d\d s per job on 2 CPU\(s\) of 1 node\(s\)", out), out
