"""dispy.Executor against real dispynodes, after CPython's test_concurrent_futures:
results, exceptions, cancel, timeouts, shutdown semantics, map order and map timeout."""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time

import pytest

import dispy
from dispy.client.executor import RemoteTraceback

pytestmark = pytest.mark.timeout(90)


def mul(x, y=1):
    return x * y


def divide(x):
    return 1 / x


def nap(seconds):
    import time

    time.sleep(seconds)
    return seconds


def span(seconds):
    import time

    start = time.time()
    time.sleep(seconds)
    return start, time.time()


class Unpicklable(Exception):
    def __reduce__(self):
        raise TypeError("no pickling")


def raise_unpicklable():
    raise Unpicklable("oops")


@pytest.fixture
def executor(node):
    ex = dispy.Executor(nodes=["127.0.0.1"], node_port=node.port, port=0)
    yield ex
    ex.shutdown(wait=True, cancel_futures=True)


def test_submit_any_function(executor):
    assert executor.submit(mul, 6, y=7).result(30) == 42
    assert executor.submit(lambda s: s.upper(), "abc").result(30) == "ABC"
    offset = 5
    assert executor.submit(lambda x: x + offset, 1).result(30) == 6
    assert executor.submit(pow, 2, 10).result(30) == 1024


def test_exception_is_reraised_with_remote_traceback(executor):
    fut = executor.submit(divide, 0)
    exc = fut.exception(30)
    assert isinstance(exc, ZeroDivisionError)
    assert isinstance(exc.__cause__, RemoteTraceback) and "divide" in exc.__cause__.tb
    with pytest.raises(ZeroDivisionError):
        fut.result()
    exc = executor.submit(raise_unpicklable).exception(30)
    assert isinstance(exc, RuntimeError) and "Unpicklable: oops" in str(exc)
    with pytest.raises(TypeError):
        executor.submit(42)


def test_function_pickled_once(executor, node):
    pickles = []

    class Counting:
        def __call__(self, x):
            return x + 1

        def __reduce__(self):
            pickles.append(1)
            return (Counting, ())

    fn = Counting()
    assert list(executor.map(fn, range(20))) == list(range(1, 21))
    assert executor.submit(fn, 1).result(30) == 2
    assert len(pickles) == 1
    # the node keeps one copy of each function in the computation's directory
    assert len(list(node.prefix.rglob("_dispy_fn_*.pkl"))) >= 1


def test_map_order_chunks_and_errors(executor):
    assert list(executor.map(nap, [0.6, 0.0, 0.3])) == [0.6, 0.0, 0.3]
    assert list(executor.map(mul, range(10), range(5))) == [i * i for i in range(5)]
    assert list(executor.map(mul, range(25), chunksize=4)) == list(range(25))
    results = executor.map(divide, [1, 0, 2])
    assert next(results) == 1.0
    with pytest.raises(ZeroDivisionError):
        next(results)
    with pytest.raises(ValueError):
        executor.map(mul, [1], chunksize=0)


def test_map_timeout(executor):
    assert executor.submit(nap, 0.0).result(30) == 0.0  # the node is set up: time runs
    start = time.monotonic()
    results = []
    with pytest.raises(TimeoutError):
        for r in executor.map(nap, [0.0, 5.0, 5.0], timeout=1.0):
            results.append(r)
    assert results == [0.0] and time.monotonic() - start < 4


def test_result_and_exception_timeouts(executor):
    fut = executor.submit(nap, 3.0)
    with pytest.raises(TimeoutError):
        fut.result(timeout=0.1)
    with pytest.raises(TimeoutError):
        fut.exception(timeout=0.1)
    assert fut.result(30) == 3.0


def no_prefetch(executor):
    """Jobs are sent ahead to a node (and are then Running), and by the node to a busy job
    process, while its jobs are short: one longer job turns that off, so the next jobs
    wait at the client, cancellable, and each starts on a free CPU."""
    assert executor.submit(nap, 0.5).result(30) == 0.5


def test_cancel_queued_but_not_running(executor):
    no_prefetch(executor)
    running = [executor.submit(nap, 2.0) for _ in range(2)]
    deadline = time.monotonic() + 30
    while not all(f.running() for f in running):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    queued = executor.submit(nap, 0.0)
    assert queued.cancel() and queued.cancelled() and queued.done()
    assert queued.cancel()  # again: still True
    with pytest.raises(cf.CancelledError):
        queued.result()
    assert not running[0].cancel() and not running[0].cancelled()
    done, not_done = cf.wait([queued, *running], timeout=30)
    assert not not_done and [f.result() for f in running] == [2.0, 2.0]


def test_as_completed_and_wait_first_exception(executor):
    # no job sent ahead behind the slow one (a gamble the node takes while jobs are short)
    no_prefetch(executor)
    slow, bad, fast = executor.submit(nap, 2.0), executor.submit(divide, 0), \
        executor.submit(mul, 3)
    done, not_done = cf.wait([slow, bad], timeout=30, return_when=cf.FIRST_EXCEPTION)
    assert bad in done and slow in not_done
    order = list(cf.as_completed([slow, fast], timeout=30))
    assert order[-1] is slow


def test_shutdown_semantics(node):
    ex = dispy.Executor(nodes=["127.0.0.1"], node_port=node.port, port=0)
    futures = [ex.submit(nap, 0.5) for _ in range(4)]
    ex.shutdown(wait=True)
    assert all(f.done() and f.result() == 0.5 for f in futures)
    with pytest.raises(RuntimeError):
        ex.submit(mul, 1)
    with pytest.raises(RuntimeError):
        ex.map(mul, [1], chunksize=2)
    ex.shutdown()  # again: nothing happens


def test_shutdown_cancel_futures_and_no_wait(node):
    ex = dispy.Executor(nodes=["127.0.0.1"], node_port=node.port, port=0)
    no_prefetch(ex)
    running = [ex.submit(nap, 1.5) for _ in range(2)]
    deadline = time.monotonic() + 30
    while not all(f.running() for f in running):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    queued = [ex.submit(nap, 0.0) for _ in range(3)]
    start = time.monotonic()
    ex.shutdown(wait=False, cancel_futures=True)
    assert time.monotonic() - start < 1.0
    assert all(f.cancelled() for f in queued)
    assert [f.result(30) for f in running] == [1.5, 1.5]  # running calls still end
    ex.shutdown(wait=True)


def test_context_manager_and_cpus(node):
    with dispy.Executor(nodes=["127.0.0.1"], node_port=node.port, port=0, cpus=1) as ex:
        futures = [ex.submit(span, 0.5) for _ in range(2)]
    assert all(f.done() for f in futures)
    (s1, e1), (s2, e2) = sorted(f.result() for f in futures)
    assert s2 >= e1 - 0.05  # one CPU of the node: never at the same time


def test_done_callbacks(executor):
    seen = threading.Event()
    fut = executor.submit(mul, 2, 2)
    fut.add_done_callback(lambda f: seen.set() if f.result() == 4 else None)
    assert seen.wait(30)
