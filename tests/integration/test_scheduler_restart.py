"""A dispyscheduler killed with ``kill -9`` and started again keeps every program's jobs
(issue 15): its journal brings back the programs' sessions, computations, queued jobs
and unacknowledged results; results of jobs that were on nodes are fetched from them."""

from __future__ import annotations

import threading
import time

import pytest

import dispy

pytestmark = pytest.mark.timeout(120)


def work(x, flag):
    """Says it started, then runs until ``flag`` exists."""
    import os
    import time

    dispy_provisional_result("started")  # noqa: F821 (a dispy builtin on the node)
    while not os.path.exists(flag):
        time.sleep(0.05)
    return 2 * x


def _running(jobs: list, n: int) -> None:
    deadline = time.monotonic() + 30
    while sum(j.status == dispy.DispyJob.ProvisionalResult for j in jobs) < n:
        assert time.monotonic() < deadline, [j.status for j in jobs]
        time.sleep(0.02)


def _restart(sched) -> None:
    sched.stop()  # SIGKILL: no chance to tidy up
    sched.restart("clients connect to")


@pytest.mark.parametrize("reentrant", [False, True])
def test_restarted_scheduler_delivers_every_job_once(scheduler_factory, node_factory,
                                                     tmp_path, reentrant):
    node = node_factory("-c", "2")
    sched = scheduler_factory()
    flag = str(tmp_path / "go")
    finals: dict = {}
    lock = threading.Lock()

    def callback(job):
        if job.status in (dispy.DispyJob.Finished, dispy.DispyJob.Terminated,
                          dispy.DispyJob.Abandoned, dispy.DispyJob.Cancelled):
            with lock:
                finals[job.result] = finals.get(job.result, 0) + 1

    with dispy.SharedJobCluster(work, nodes=[dispy.NodeAllocate("127.0.0.1", node.port)],
                                scheduler_node="127.0.0.1", scheduler_port=sched.port,
                                callback=callback, reentrant=reentrant) as cluster:
        jobs = [cluster.submit(i, flag) for i in range(6)]  # two run, four wait
        _running(jobs, 2)
        _restart(sched)
        open(flag, "w").close()
        assert [job() for job in jobs] == [2 * i for i in range(6)]
        assert all(job.status == dispy.DispyJob.Finished for job in jobs)
        later = cluster.submit(10, flag)  # the program goes on with the restarted scheduler
        assert later() == 20
    assert finals == {2 * i: 1 for i in [*range(6), 10]}  # a callback per job, once
    assert "journal: 1 program(s), 1 computation(s), 6 job(s) (2 on nodes)" in sched.output()


@pytest.mark.parametrize("reentrant", [False, True])
def test_jobs_whose_node_restarted_meanwhile(scheduler_factory, node_factory, tmp_path,
                                             reentrant):
    """The node of two running jobs is restarted while the scheduler is down: they run
    again (reentrant) or end Abandoned with the reason; the queued ones run."""
    node = node_factory("-c", "2")
    sched = scheduler_factory()
    flag = str(tmp_path / "go")
    with dispy.SharedJobCluster(work, nodes=[dispy.NodeAllocate("127.0.0.1", node.port)],
                                scheduler_node="127.0.0.1", scheduler_port=sched.port,
                                reentrant=reentrant) as cluster:
        jobs = [cluster.submit(i, flag) for i in range(4)]
        _running(jobs, 2)
        on_node = [j for j in jobs if j.status == dispy.DispyJob.ProvisionalResult]
        sched.stop()
        node.stop()
        node.restart("serving")
        sched.restart("clients connect to")
        open(flag, "w").close()
        for job in jobs:
            job()
        for job in jobs:
            if reentrant or job not in on_node:
                assert job.status == dispy.DispyJob.Finished and job.result == 2 * jobs.index(job)
            else:
                assert job.status == dispy.DispyJob.Abandoned
                assert "scheduler restarted" in job.exception
                assert f"node 127.0.0.1:{node.port}" in job.exception  # no record, or
                # the restarted node closed the connection of a session it never had
