"""Provisional results and files sent from nodes to the client."""

from __future__ import annotations

import os
import time

import pytest

import dispy

pytestmark = pytest.mark.timeout(90)


def search(n):
    best = None
    for i in range(n):
        best = i
        dispy_provisional_result(("step", i))  # noqa: F821
        time.sleep(0.05)
    return ("final", best)


def test_provisional_results_reach_callback_which_may_cancel(node):
    seen = []
    holder = {}

    def callback(job):
        if job.status == dispy.DispyJob.ProvisionalResult:
            seen.append(job.result)
            if job.result == ("step", 5):
                holder["cluster"].cancel(job)

    with dispy.JobCluster(search, nodes=["127.0.0.1"], node_port=node.port, port=0,
                          callback=callback) as cluster:
        holder["cluster"] = cluster
        done = cluster.submit(3)
        assert done() == ("final", 2)
        cut = cluster.submit(1000)
        cut()
    assert seen[:3] == [("step", 0), ("step", 1), ("step", 2)]
    assert cut.status == dispy.DispyJob.Cancelled


def make_file(name):
    os.makedirs("out", exist_ok=True)
    path = os.path.join("out", name)
    with open(path, "w") as fh:
        fh.write(f"data of {name}")
    os.chmod(path, 0o640)
    return dispy_send_file(path)  # noqa: F821


def test_dispy_send_file(node, tmp_path):
    with dispy.JobCluster(make_file, nodes=["127.0.0.1"], node_port=node.port,
                          port=0) as cluster:
        assert cluster.submit("r1.txt")() == 0
    saved = tmp_path / "out" / "r1.txt"
    assert saved.read_text() == "data of r1.txt"
    assert saved.stat().st_mode & 0o777 == 0o640


def test_dispy_send_file_over_limit_is_refused(node_factory, tmp_path):
    node = node_factory("--max_file_size", "4")
    with dispy.JobCluster(make_file, nodes=["127.0.0.1"], node_port=node.port,
                          port=0) as cluster:
        job = cluster.submit("big.txt")
        assert job() == -1
    assert not (tmp_path / "out" / "big.txt").exists()
    assert "max_file_size" in job.stderr
