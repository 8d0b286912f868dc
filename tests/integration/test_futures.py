"""Jobs as futures against a real dispynode: job.future, await job, as_completed, wait,
cluster.map and job(timeout=...)."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import time

import pytest

import dispy
from tests.conftest import wait_started

pytestmark = pytest.mark.timeout(90)


def compute(x):
    import time

    if x == "fail":
        raise ValueError("bad input")
    if isinstance(x, float):
        dispy_provisional_result("started")  # noqa: F821 (given by the node)
        time.sleep(x)
    return x * 2


def make(node, computation=compute, **kw):
    return dispy.JobCluster(computation, nodes=["127.0.0.1"], node_port=node.port, port=0, **kw)


def test_future_result_and_job_error(node):
    with make(node) as cluster:
        ok, bad = cluster.submit(21), cluster.submit("fail")
        assert ok.future.result(30) == 42
        with pytest.raises(dispy.JobError) as info:
            bad.future.result(30)
        err = info.value
        assert err.status == dispy.DispyJob.Terminated and err.status_name == "Terminated"
        assert "ValueError: bad input" in err.exception and err.job is bad
        assert isinstance(bad.future.exception(), dispy.JobError)
        # a future asked for after the job ended is already resolved
        assert ok.future.done() and ok.future is ok.future


def test_job_call_timeout_is_compatible(node):
    with make(node) as cluster:
        job = cluster.submit(3.0)
        wait_started(job)
        with pytest.raises(TimeoutError):
            job(timeout=0.1)
        assert job() == 6.0  # job() waits without a timeout as before
        assert cluster.submit("fail")() is None  # job() returns result, not raises


def test_await_job(node):
    with make(node) as cluster:
        async def main():
            jobs = [cluster.submit(i) for i in range(4)]
            results = await asyncio.gather(*jobs)
            with pytest.raises(dispy.JobError):
                await cluster.submit("fail")
            return results

        assert asyncio.run(main()) == [0, 2, 4, 6]


def test_as_completed_and_wait(node):
    with make(node) as cluster:
        slow, fast = cluster.submit(2.0), cluster.submit(1)
        order = list(dispy.as_completed([slow, fast], timeout=60))
        assert order == [fast, slow]
        slow = cluster.submit(5.0)
        with pytest.raises(TimeoutError):
            list(dispy.as_completed([slow], timeout=0.2))
        done, not_done = dispy.wait([slow, fast], return_when=dispy.FIRST_COMPLETED)
        assert done == {fast} and not_done == {slow}
        bad = cluster.submit("fail")
        done, not_done = dispy.wait([slow, bad], timeout=60,
                                    return_when=dispy.FIRST_EXCEPTION)
        assert done == {bad} and not_done == {slow}
        done, not_done = dispy.wait([slow, bad], timeout=60)
        assert done == {slow, bad} and not not_done
        with pytest.raises(ValueError):
            dispy.wait([slow], return_when="sometime")
        with pytest.raises(TypeError):
            dispy.wait([None])


def test_future_cancel_queued_not_running(node):
    with make(node) as cluster:
        assert cluster.submit(0.5)() == 1.0  # a longer job: no more jobs sent ahead
        running = [cluster.submit(3.0) for _ in range(2)]  # both CPUs busy
        for job in running:
            wait_started(job)
        queued = cluster.submit(1)
        assert not running[0].future.cancel() and running[0].future.running()
        assert queued.future.cancel() and queued.future.cancelled()
        assert queued.status == dispy.DispyJob.Cancelled
        with pytest.raises(cf.CancelledError):
            queued.future.result()
        done, _ = dispy.wait([queued], timeout=0)
        assert done == {queued}
        assert [job() for job in running] == [6.0, 6.0]


def test_cluster_map(node):
    with make(node) as cluster:
        assert list(cluster.map(range(6))) == [0, 2, 4, 6, 8, 10]
        assert list(cluster.map(["a", "b"])) == ["aa", "bb"]
        results = cluster.map([1, "fail", 2])
        assert next(results) == 2
        with pytest.raises(dispy.JobError):
            next(results)
        with pytest.raises(ValueError):
            cluster.map([1], chunksize=2)
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            list(cluster.map([4.0, 4.0, 4.0], timeout=0.5))
        assert time.monotonic() - start < 3
        cluster.wait(30)


def add(a, b):
    return a + b


def test_cluster_map_zips_iterables(node):
    with make(node, add) as cluster:
        assert list(cluster.map([1, 2, 3], [10, 20])) == [11, 22]
