"""dispyscheduler --httpd: the monitor page shows every program's computation."""

from __future__ import annotations

import pytest
from conftest import free_port

import dispy
from dispy import NodeAllocate

from .conftest import rows, screenshot, texts, wait_until

pytestmark = [pytest.mark.web, pytest.mark.timeout(90)]


def double(x):
    import time

    time.sleep(0.2)
    return 2 * x


def test_scheduler_httpd_shows_every_programs_computation(page, scheduler_factory, node,
                                                          tmp_path):
    port = free_port()
    sched = scheduler_factory("--httpd", "--httpd_port", str(port))
    with dispy.SharedJobCluster(double, nodes=[NodeAllocate("127.0.0.1", node.port)],
                                scheduler_node="127.0.0.1", scheduler_port=sched.port) as c:
        jobs = [c.submit(i) for i in range(6)]
        assert [job() for job in jobs] == [2 * i for i in range(6)]
        page.get(f"http://localhost:{port}/")
        wait_until("the program's 6 jobs finished",
                   lambda: texts(page, "#cluster-table td[data-col=finished]") == ["6"])
        wait_until("its node in the table", lambda: texts(
            page, "#node-table tbody tr td[data-col=key]") == [f"127.0.0.1:{node.port}"])
        names = texts(page, "#cluster-table td[data-col=name]")
        assert len(names) == 1 and names[0].startswith("double (")
        screenshot(page, tmp_path / "scheduler.png")
    wait_until("the closed computation leaves the page",
               lambda: texts(page, "#cluster-table td[data-col=finished]") == [])


def hold(path):
    import os
    import time

    while not os.path.exists(path):
        time.sleep(0.02)
    return path


def test_scheduler_httpd_counts_each_programs_own_jobs(page, scheduler_factory, node_factory,
                                                       tmp_path):
    """Per computation: "running" counts its own jobs on the nodes (not the nodes'
    busy CPUs, which include other programs' jobs) and "pending" the ones still queued."""
    node = node_factory("-c", "1")
    port = free_port()
    sched = scheduler_factory("--httpd", "--httpd_port", str(port))
    gate = tmp_path / "go"
    kw = dict(nodes=[NodeAllocate("127.0.0.1", node.port)], scheduler_node="127.0.0.1",
              scheduler_port=sched.port)
    with dispy.SharedJobCluster(hold, **kw) as a, dispy.SharedJobCluster(hold, **kw) as b:
        jobs = [a.submit(str(gate)) for _ in range(2)] + [b.submit(str(gate))]
        page.get(f"http://localhost:{port}/")

        def counts() -> list[tuple[str, ...]]:
            return sorted(rows(page, "cluster-table", "running", "pending"))

        # the node's one CPU runs one job of a or b; the others wait
        wait_until("one job running, two waiting", lambda: counts() in (
            [("0", "1"), ("1", "1")], [("0", "2"), ("1", "0")]))
        gate.touch()
        assert [j() for j in jobs] == [str(gate)] * 3
