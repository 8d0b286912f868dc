"""dispy_job_depends: per-job functions and files, gone after the job."""

from __future__ import annotations

import pytest

import dispy

pytestmark = pytest.mark.timeout(90)


def double(x):
    return 2 * x


def square(x):
    return x * x


def dispatch(name, x, path):
    import os
    with open(path) as fh:
        data = fh.read()
    return globals()[name](x), data, os.path.exists(path)


def test_per_job_functions_and_files(node, tmp_path):
    (tmp_path / "a.txt").write_text("A")
    (tmp_path / "b.txt").write_text("B")
    with dispy.JobCluster(dispatch, nodes=["127.0.0.1"], node_port=node.port,
                          port=0) as cluster:
        j1 = cluster.submit("double", 5, "a.txt", dispy_job_depends=[double, "a.txt"])
        j2 = cluster.submit("square", 5, "b.txt", dispy_job_depends=[square, "b.txt"])
        assert j1() == (10, "A", True) and j2() == (25, "B", True)
        j3 = cluster.submit("double", 1, "a.txt")
        j3()
    assert j3.status == dispy.DispyJob.Terminated and "No such file" in j3.exception
