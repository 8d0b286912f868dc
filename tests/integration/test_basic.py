"""The canonical program against a real dispynode: results, status, print_status."""

from __future__ import annotations

import pytest

import dispy

pytestmark = pytest.mark.timeout(90)


def square(n):
    return n * n


def cluster_for(node, computation, **kw):
    return dispy.JobCluster(computation, nodes=["127.0.0.1"], node_port=node.port, port=0, **kw)


def test_many_small_jobs(node):
    with cluster_for(node, square) as cluster:
        jobs = [cluster.submit(i) for i in range(1000)]
        assert [job() for job in jobs] == [i * i for i in range(1000)]
        assert {job.status for job in jobs} == {dispy.DispyJob.Finished}
        assert [job.id for job in jobs] == sorted(job.id for job in jobs)
        assert all(job.ip_addr == "127.0.0.1" for job in jobs)
        assert all(job.start_time <= job.end_time for job in jobs)


def test_print_status(node, capsys):
    with cluster_for(node, square) as cluster:
        assert cluster.submit(3)() == 9
        cluster.print_status()
    out = capsys.readouterr().out
    assert "Node Time Sec" in out and "127.0.0.1" in out and "speedup" in out


def _row(out: str) -> list[str]:
    line = next(ln for ln in out.splitlines() if "127.0.0.1 (" in ln)
    return [cell.strip() for cell in line.split("|")]


def test_print_status_counts_this_cluster_only(node, capsys):
    """CPUs are the cluster's share; jobs, time and bytes are this cluster's (the first
    cluster's jobs do not show in the second's table)."""
    with cluster_for(node, square) as first:
        assert [j() for j in [first.submit(i) for i in range(5)]] == [0, 1, 4, 9, 16]
    capsys.readouterr()
    nodes = [dispy.NodeAllocate("127.0.0.1", node.port, cpus=1)]
    with dispy.JobCluster(square, nodes=nodes, port=0) as second:
        assert second.submit(3)() == 9
        assert second.submit(4)() == 16
        second.print_status()
    _, cpus, jobs, _, _, sent, rcvd = _row(capsys.readouterr().out)
    assert (cpus, jobs) == ("1", "2")
    assert sent != "0 B" and rcvd != "0 B"


def test_node_globals_visible(node):
    def where():
        return dispy_node_name, dispy_node_ip_addr, os.getcwd() == dispy_job_path  # noqa: F821

    with cluster_for(node, where) as cluster:
        name, ip, in_dir = cluster.submit()()
    assert ip == "127.0.0.1" and in_dir and name
