"""dispyscheduler --httpd: the monitor page shows every program's computation."""

from __future__ import annotations

import pytest
from conftest import free_port

import dispy
from dispy import NodeAllocate

from .conftest import screenshot, texts, wait_until

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
