"""Short jobs are sent ahead to a busy job process (node/jobs.py): they wait in its socket
and keep the job semantics. A cancelled one never starts and is reported at once; its
dispy_job_timeout counts from its own start; if the process dies they run elsewhere; a
cancel of the job before them leaves them to run."""

from __future__ import annotations

import os
import time

import pytest
from conftest import wait_started

import dispy

pytestmark = [pytest.mark.timeout(90), pytest.mark.usefixtures("no_lanes")]

FINAL = (dispy.DispyJob.Finished, dispy.DispyJob.Cancelled, dispy.DispyJob.Terminated,
         dispy.DispyJob.Abandoned)


def work(x, flag=None, mark=None, die=False):
    """x < 0: return at once. Else report start, run until ``flag`` exists or x seconds
    (then exit the process if ``die``), and leave ``mark`` behind as proof it ran."""
    import os
    import time
    if mark:
        open(mark, "w").close()
    if x < 0:
        return x
    dispy_provisional_result("started")  # noqa: F821 (bound on the node)
    deadline = time.time() + x
    while time.time() < deadline and not (flag and os.path.exists(flag)):
        time.sleep(0.02)
    if die:
        os._exit(3)
    return x


def send_back(flag, name):
    """Wait for ``flag``, then send a file to the client (its reply comes behind the jobs
    sent ahead to this process)."""
    import os
    import time
    deadline = time.time() + 30
    while not os.path.exists(flag) and time.time() < deadline:
        time.sleep(0.02)
    with open(name, "w") as fh:
        fh.write("from the node")
    return dispy_send_file(name)  # noqa: F821 (bound on the node)


def _sent_ahead(node, count: int) -> None:
    """Wait until the node logged ``count`` jobs sent ahead to a job process."""
    deadline = time.monotonic() + 20
    while node.output().count("sent ahead to job process") < count:
        assert time.monotonic() < deadline, node.output()[-2000:]
        time.sleep(0.02)


def _cluster(node, **kw):
    cluster = dispy.JobCluster(work, nodes=["127.0.0.1"], node_port=node.port, port=0, **kw)
    # short jobs: the client sends jobs ahead to the node, and the node to its process
    assert [cluster.submit(-1)() for _ in range(10)] == [-1] * 10
    return cluster


def test_a_job_cancelled_while_sent_ahead_never_starts(node_factory, tmp_path):
    node = node_factory("-c", "1", "-d")
    flag = str(tmp_path / "go")
    with _cluster(node) as cluster:
        head = cluster.submit(30, flag)
        wait_started(head)
        marks = [str(tmp_path / f"ran-{i}") for i in range(3)]
        ahead = [cluster.submit(-1, None, mark) for mark in marks]
        _sent_ahead(node, 3)
        assert cluster.cancel(ahead[1]) == 0
        # reported at once, while the job before it still runs
        assert ahead[1]() is None and ahead[1].status == dispy.DispyJob.Cancelled
        assert head.status == dispy.DispyJob.ProvisionalResult
        open(flag, "w").close()
        assert head() == 30
        assert ahead[0]() == -1 and ahead[2]() == -1
        assert os.path.exists(marks[0]) and os.path.exists(marks[2])
        assert not os.path.exists(marks[1])
        assert cluster.submit(-1)() == -1  # the process goes on


def test_the_timeout_of_a_job_sent_ahead_counts_from_its_start(node_factory):
    node = node_factory("-c", "1", "-d")
    with _cluster(node) as cluster:
        head = cluster.submit(1.5)
        wait_started(head)
        ahead = cluster.submit(0.3, dispy_job_timeout=1.0)  # 1.8 s after it was sent
        late = cluster.submit(5, dispy_job_timeout=1.0)
        _sent_ahead(node, 2)
        assert head() == 1.5
        assert ahead() == 0.3 and ahead.status == dispy.DispyJob.Finished
        assert late() is None and late.status == dispy.DispyJob.Terminated
        assert "timed out after 1 s" in late.exception


def test_jobs_sent_ahead_to_a_process_that_dies_run_elsewhere(node_factory, tmp_path):
    node = node_factory("-c", "1", "-d")
    flag = str(tmp_path / "go")
    ended: dict = {}

    def callback(job):
        if job.status in FINAL:
            ended.setdefault(job.id, []).append(job.status)

    with _cluster(node, callback=callback) as cluster:
        head = cluster.submit_job_id("head", 30, flag, None, True)
        wait_started(head)
        ahead = [cluster.submit_job_id(f"ahead-{i}", -1, None, str(tmp_path / f"ran-{i}"))
                 for i in range(3)]  # (ids apart from the numbers submit gives)
        _sent_ahead(node, 3)
        open(flag, "w").close()
        assert head() is None and head.status == dispy.DispyJob.Terminated
        assert "exited with code 3" in head.exception
        assert [job() for job in ahead] == [-1, -1, -1]
        cluster.wait()
    assert {k: v for k, v in ended.items() if isinstance(k, str)} == {
        "head": [dispy.DispyJob.Terminated], "ahead-0": [dispy.DispyJob.Finished],
        "ahead-1": [dispy.DispyJob.Finished], "ahead-2": [dispy.DispyJob.Finished]}


def test_cancelling_the_running_job_leaves_those_sent_ahead_to_run(node_factory, tmp_path):
    """The host's escalation (SIGTERM 5 s after the interrupt) is settled when the
    cancelled job ends, so it never hits the process running the jobs sent after it."""
    node = node_factory("-c", "1", "-d")
    with _cluster(node) as cluster:
        head = cluster.submit(30)
        wait_started(head)
        ahead = [cluster.submit(-1), cluster.submit(6.5), cluster.submit(-1)]
        _sent_ahead(node, 3)
        assert cluster.cancel(head) == 0
        assert head() is None and head.status == dispy.DispyJob.Cancelled
        assert [job() for job in ahead] == [-1, 6.5, -1]
        assert all(job.status == dispy.DispyJob.Finished for job in ahead)


def test_a_file_sent_by_a_job_with_jobs_sent_ahead_behind_it(node_factory, tmp_path,
                                                               monkeypatch):
    """The reply to dispy_send_file comes behind the jobs sent ahead: they are kept and
    run after the job, none taken for the reply."""
    node = node_factory("-c", "1", "-d")
    monkeypatch.chdir(tmp_path)  # the client saves the files in its working directory
    ready, flag = str(tmp_path / "ready"), str(tmp_path / "go")
    open(ready, "w").close()
    with dispy.JobCluster(send_back, nodes=["127.0.0.1"], node_port=node.port,
                          port=0) as cluster:
        assert [cluster.submit(ready, f"warm-{i}.txt")() for i in range(10)] == [0] * 10
        head = cluster.submit(flag, "sent.txt")
        ahead = [cluster.submit(ready, f"ahead-{i}.txt") for i in range(3)]
        _sent_ahead(node, 3)
        open(flag, "w").close()
        assert head() == 0 and head.status == dispy.DispyJob.Finished
        assert [job() for job in ahead] == [0, 0, 0]
        assert all(job.status == dispy.DispyJob.Finished for job in ahead)
    assert (tmp_path / "sent.txt").read_text() == "from the node"
    assert all((tmp_path / f"ahead-{i}.txt").exists() for i in range(3))
