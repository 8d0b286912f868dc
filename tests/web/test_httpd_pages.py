"""dispy.httpd in a real browser: real nodes, real jobs, the pages and their controls."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By

import dispy
import dispy.httpd
from dispy import NodeAllocate

from .conftest import cell, click, fill, screenshot, texts, wait_until

pytestmark = [pytest.mark.web, pytest.mark.timeout(90)]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def compute(n, what=None):
    import time

    dispy_provisional_result("started")  # noqa: F821 (bound by dispynode)
    time.sleep(n)
    return n


class Item:
    """An argument with its own text on the node page (show_job_args)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __str__(self) -> str:
        return f"item-{self.name}"


@pytest.fixture
def two_nodes(node_factory):
    return node_factory("-c", "2", "--name", "alpha"), node_factory("-c", "2", "--name", "beta")


@pytest.fixture
def watched(two_nodes):
    """A cluster over two nodes, watched by a DispyHTTPServer on a free port."""
    a, b = two_nodes
    events = []
    cluster = dispy.JobCluster(compute, nodes=[NodeAllocate("127.0.0.1", a.port),
                                               NodeAllocate("127.0.0.1", b.port)],
                               port=0, pulse_interval=1,
                               cluster_status=lambda s, n, j: events.append(s))
    server = dispy.httpd.DispyHTTPServer(cluster, port=0, poll_sec=2)
    try:
        yield cluster, server, events
    finally:
        server.shutdown(wait=False)
        cluster.close(timeout=5, terminate=True)


def node_rows(driver) -> list[str]:
    return texts(driver, "#node-table tbody tr td[data-col=key]")




def test_status_page_shows_nodes_jobs_and_charts(page, watched, two_nodes, tmp_path):
    """Cluster status: summary, sortable node table with availability, live charts; the
    program's own cluster_status still gets every event."""
    cluster, server, events = watched
    a, b = two_nodes
    jobs = [cluster.submit(0.3) for _ in range(8)]
    page.get(server.url)
    keys = {f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"}
    wait_until("both nodes in the table", lambda: set(node_rows(page)) == keys)
    for job in jobs:
        assert job() == 0.3
    wait_until("8 jobs finished in the summary",
               lambda: texts(page, "#cluster-table td[data-col=finished]") == ["8"])
    assert texts(page, "#cluster-table td[data-col=submitted]") == ["8"]
    done = [int(cell(page, "node-table", k, "jobs_done")) for k in sorted(keys)]
    assert sum(done) == 8
    # availability from the nodes' pulses, and traffic
    wait_until("memory shown", lambda: all(re.search(r"[KMG]B$", cell(page, "node-table", k,
                                                                        "memory"))
                                           for k in keys))
    assert all(cell(page, "node-table", k, "tx").endswith("B") for k in keys)
    # the charts were drawn from samples: a line for the rate, one per node for CPU
    wait_until("rate chart line", lambda: page.find_elements(
        By.CSS_SELECTOR, "#chart-rate polyline.series"))
    wait_until("a CPU line per node", lambda: {e.get_attribute("data-name") for e in
                                              page.find_elements(By.CSS_SELECTOR,
                                                                 "#chart-cpu polyline")}
               == keys)
    # sorting: by name, both ways
    click(page, "#node-table th[data-key=name]")
    wait_until("sorted by name", lambda: texts(page, "#node-table td[data-col=name]")
               == ["alpha", "beta"])
    click(page, "#node-table th[data-key=name]")
    wait_until("sorted backwards", lambda: texts(page, "#node-table td[data-col=name]")
               == ["beta", "alpha"])
    screenshot(page, tmp_path / "monitor.png")
    assert events.count(dispy.DispyJob.Finished) == 8  # chained, not replaced


def test_node_page_shows_args_and_cancels_jobs(page, watched, two_nodes, tmp_path):
    """Node page: running jobs with their arguments; cancel the selected one."""
    cluster, server, _ = watched
    a, _ = two_nodes
    node_key = f"127.0.0.1:{a.port}"
    wait_until("nodes set up", lambda: len(cluster.status().nodes) == 2)
    node = next(n for n in cluster.status().nodes if n.port == a.port)
    jobs = [cluster.submit_node(node, 30, Item(str(i))) for i in range(2)]
    for job in jobs:
        wait_until("job started", lambda job=job: job.status == dispy.DispyJob.ProvisionalResult)
    page.get(server.url)
    wait_until("node link", lambda: page.find_elements(
        By.CSS_SELECTOR, f"#node-table tr[data-key='{node_key}'] a.node-link"))
    click(page, f"#node-table tr[data-key='{node_key}'] a.node-link")
    wait_until("two running jobs", lambda: len(texts(page, "#job-table tbody tr")) == 2)
    args = sorted(texts(page, "#job-table td[data-col=args]"))
    assert args == ["30, item-0", "30, item-1"], args
    assert cell(page, "node-info", node_key, "busy") == "2"
    screenshot(page, tmp_path / "node.png")
    row_key = wait_until("row of item-1", lambda: [
        r.get_attribute("data-key") for r in page.find_elements(By.CSS_SELECTOR,
                                                                "#job-table tbody tr")
        if "item-1" in r.text])[0]
    click(page, f"#job-table tr[data-key='{row_key}'] input.select")
    click(page, "#cancel")
    wait_until("message", lambda: "cancelled 1" in page.find_element(By.ID, "message").text)
    victim = jobs[1]
    victim()
    assert victim.status == dispy.DispyJob.Cancelled
    assert jobs[0].status == dispy.DispyJob.ProvisionalResult  # the other one runs on
    wait_until("one job left", lambda: len(texts(page, "#job-table tbody tr")) == 1)


def test_manage_page_sets_cpus_adds_and_closes_nodes(page, watched, two_nodes, node_factory,
                                                    tmp_path):
    """Manage: set a node's CPUs (fewer jobs run there), add a node by host and port,
    close a node (the cluster stops using it)."""
    cluster, server, _ = watched
    a, b = two_nodes
    ka, kb = f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"
    page.get(server.url + "manage")
    wait_until("both nodes", lambda: set(node_rows(page)) == {ka, kb})
    # set CPUs of node a to 1
    fill(page, f"input.cpus[data-node='{ka}']", "1")
    click(page, f"button.set-cpus[data-node='{ka}']")
    wait_until("CPUs set", lambda: "CPUs: compute: 1" in page.find_element(By.ID,
                                                                            "message").text)
    jobs = [cluster.submit(3) for _ in range(6)]
    wait_until("jobs dispatched", lambda: sum(n.busy for n in cluster.status().nodes) == 3)
    busy = {f"{n.ip_addr}:{n.port}": n.busy for n in cluster.status().nodes}
    assert busy == {ka: 1, kb: 2}, busy
    for job in jobs:
        cluster.cancel(job)
    # add a third node by host and port
    c = node_factory("-c", "1", "--name", "gamma")
    kc = f"127.0.0.1:{c.port}"
    fill(page, "#add-host", "127.0.0.1")
    fill(page, "#add-port", str(c.port))
    click(page, "#add")
    wait_until("gamma in the table", lambda: kc in node_rows(page))
    assert kc in {f"{n.ip_addr}:{n.port}" for n in cluster.status().nodes}
    screenshot(page, tmp_path / "manage.png")
    # close node b
    click(page, f"#node-table tr[data-key='{kb}'] input.select")
    click(page, "#close")
    wait_until("b closed", lambda: cell(page, "node-table", kb, "state") == "closed")
    assert kb not in {f"{n.ip_addr}:{n.port}" for n in cluster.status().nodes}


def test_httpd_example_runs_unchanged(alpha_node, tmp_path):
    """examples/httpd_example.py (the original's example, rewritten): runs to the end."""
    port = _free_port()
    env = {**os.environ, "DISPY_NODES": "127.0.0.1", "DISPY_NODE_PORT": str(alpha_node.port),
           "DISPY_HTTP_PORT": str(port), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, str(EXAMPLES / "httpd_example.py")], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"open http://localhost:{port}/" in proc.stdout
    assert len(re.findall(r"^job \d+ ", proc.stdout, re.M)) == 8, proc.stdout


@pytest.fixture
def alpha_node(node_factory):
    return node_factory("-c", "2", "--name", "alpha")


def _free_port() -> int:
    from conftest import free_port

    return free_port()


def test_shutdown_gives_the_callback_back(node_factory):
    """del_cluster/shutdown put the program's own cluster_status back in place."""
    node = node_factory("-c", "1")
    seen = []
    cluster = dispy.JobCluster(compute, nodes=[NodeAllocate("127.0.0.1", node.port)], port=0,
                               cluster_status=lambda s, n, j: seen.append(s))
    try:
        server = dispy.httpd.DispyHTTPServer(cluster, port=0, poll_sec=1)
        started = time.monotonic()
        server.shutdown()
        assert time.monotonic() - started < 5
        assert cluster._state.cluster_status is not None
        assert cluster._chain_status(None).__name__ == "<lambda>"
    finally:
        cluster.close(timeout=5, terminate=True)
