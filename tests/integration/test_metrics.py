"""``--metrics_port`` on dispynode and dispyscheduler (Prometheus text, scraped over
HTTP and parsed with prometheus_client's parser), and ``cluster.stats()``."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request

import pytest
from conftest import free_port, wait_started
from prometheus_client.parser import text_string_to_metric_families

import dispy

pytestmark = pytest.mark.timeout(90)


def work(x):
    import time

    if x < 0:
        raise ValueError("negative")
    dispy_provisional_result("started")  # noqa: F821 (a dispy builtin on the node)
    time.sleep(x)
    return x


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """Every sample as {(name, sorted labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _run_three(cluster) -> None:
    """One job finishes, one raises, one is cancelled while it runs."""
    ok, bad, slow = cluster.submit(0), cluster.submit(-1), cluster.submit(30)
    wait_started(slow)
    cluster.cancel(slow)
    for job in (ok, bad, slow):
        job()
    assert [j.status for j in (ok, bad, slow)] == [
        dispy.DispyJob.Finished, dispy.DispyJob.Terminated, dispy.DispyJob.Cancelled]


def test_node_metrics(node_factory):
    mport = free_port()
    node = node_factory("-c", "2", "--metrics_port", str(mport))
    node.wait_for(f"metrics (Prometheus) on http://127.0.0.1:{mport}/metrics")  # localhost
    with dispy.JobCluster(work, nodes=["127.0.0.1"], node_port=node.port, port=0) as c:
        _run_three(c)
        m = scrape(mport)
        assert m[("dispy_node_clients", ())] == 1
    assert m[("dispy_node_cpus", ())] == 2
    assert m[("dispy_node_jobs_running", ())] == 0
    ended = {dict(k[1])["status"]: v for k, v in m.items()
             if k[0] == "dispy_node_jobs_ended_total"}
    assert ended == {"Finished": 1, "Terminated": 1, "Cancelled": 1}
    assert m[("dispy_node_jobs_finished_total", ())] == 1
    assert m[("dispy_node_jobs_failed_total", ())] == 2
    assert m[("dispy_node_job_duration_seconds_count", ())] == 3
    assert m[("dispy_node_received_bytes_total", ())] > 0
    assert m[("dispy_node_sent_bytes_total", ())] > 0
    assert 0 <= m[("dispy_node_available_cpu_percent", ())] <= 100
    assert m[("dispy_node_available_memory_bytes", ())] > 0


def test_scheduler_metrics_and_shared_stats(scheduler_factory, node_factory):
    node = node_factory("-c", "2")
    mport = free_port()
    sched = scheduler_factory("--metrics_port", str(mport))
    with dispy.SharedJobCluster(work, nodes=[dispy.NodeAllocate("127.0.0.1", node.port)],
                                scheduler_node="127.0.0.1",
                                scheduler_port=sched.port) as cluster:
        _run_three(cluster)
        m = scrape(mport)
        stats = cluster.stats(quiet=True)
    assert m[("dispy_scheduler_nodes", ())] == 1 and m[("dispy_scheduler_cpus", ())] == 2
    assert m[("dispy_scheduler_clients", ())] == 1
    assert m[("dispy_scheduler_computations", ())] == 1
    assert m[("dispy_scheduler_jobs_finished_total", ())] == 1
    assert m[("dispy_scheduler_jobs_failed_total", ())] == 2
    assert m[("dispy_scheduler_job_duration_seconds_count", ())] >= 2
    assert (stats.submitted, stats.finished, stats.failed) == (3, 1, 2)


def test_cluster_stats_is_a_typed_record(node, capsys):
    with dispy.JobCluster(work, nodes=["127.0.0.1"], node_port=node.port, port=0) as c:
        jobs = [c.submit(0.05) for _ in range(4)] + [c.submit(-1)]
        c.wait()
        stats = c.stats()  # prints the table too, as 4.15's stats() did
        assert "Node" in capsys.readouterr().out
        assert isinstance(stats, dispy.ClusterStats)
        assert (stats.submitted, stats.queued, stats.running) == (5, 0, 0)
        assert (stats.finished, stats.failed) == (4, 1)
        assert stats.nodes == 1 and stats.cpus >= 1 and stats.busy == 0
        assert stats.job_seconds >= 0.2 and stats.mean_job_seconds > 0
        assert stats.bytes_sent > 0 and stats.bytes_received > 0
        assert all(j.status in (dispy.DispyJob.Finished, dispy.DispyJob.Terminated)
                   for j in jobs)
        with pytest.raises(AttributeError):
            stats.finished = 0  # frozen


@pytest.mark.parametrize("program", ["dispynode", "dispyscheduler"])
def test_metrics_port_in_use_is_a_clear_error(program, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = [sys.executable, "-m", f"dispy.{program}", "-i", "127.0.0.1", "--daemon",
                "--dest_path_prefix", str(tmp_path), "--metrics_port", str(port)]
        argv += (["-p", str(free_port())] if program == "dispynode" else
                 ["--scheduler_port", str(free_port()), "-p", str(free_port())])
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert f"--metrics_port {port} cannot be used" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
