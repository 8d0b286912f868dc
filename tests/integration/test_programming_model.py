"""What a computation can be and what it sees: code by value, setup/cleanup, programs."""

from __future__ import annotations

import os
import stat
import sys

import pytest

import dispy

pytestmark = pytest.mark.timeout(90)


def make(node, computation, **kw):
    return dispy.JobCluster(computation, nodes=["127.0.0.1"], node_port=node.port, port=0, **kw)


def test_lambda_and_closure(node):
    offset = 7

    def add(x):
        return x + offset

    with make(node, lambda x: x * 3) as cluster:
        assert cluster.submit(5)() == 15
    with make(node, add) as cluster:
        assert [cluster.submit(i)() for i in range(3)] == [7, 8, 9]


class Accumulator:
    def __init__(self, base):
        self.base = base

    def add(self, x):
        return self.base + x


def test_bound_method(node):
    with make(node, Accumulator(100).add) as cluster:
        assert cluster.submit(5)() == 105


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def norm2(self):
        return self.x * self.x + self.y * self.y


def norm(point):
    return Point(point.y, point.x), point.norm2()


def test_instances_as_arguments_and_results(node):
    with make(node, norm, depends=[Point]) as cluster:
        swapped, n2 = cluster.submit(Point(3, 4))()
    assert isinstance(swapped, Point) and (swapped.x, swapped.y) == (4, 3) and n2 == 25


def setup_data(path):
    global data
    with open(path) as fh:
        data = [int(line) for line in fh]
    return 0


def cleanup_data(path):
    global data
    del data
    with open(path + ".cleaned", "w") as fh:
        fh.write("yes")


def lookup(i):
    return data[i]  # noqa: F821  (set by setup on the node)


def test_setup_globals_and_cleanup(node, tmp_path):
    datafile = tmp_path / "data.txt"
    datafile.write_text("10\n20\n30\n")
    alloc = dispy.NodeAllocate("127.0.0.1", port=node.port, setup_args=(str(datafile),))
    cluster = dispy.JobCluster(lookup, nodes=[alloc], port=0, setup=setup_data,
                               cleanup=cleanup_data)
    assert [cluster.submit(i)() for i in range(3)] == [10, 20, 30]
    cluster.close()
    assert (tmp_path / "data.txt.cleaned").read_text() == "yes"


def cleanup_that_fails():
    raise RuntimeError("cleanup boom")


def cleanup_that_hangs():
    import time

    time.sleep(60)


def ident(x):
    return x


@pytest.mark.parametrize("cleanup, said", [(cleanup_that_fails, "RuntimeError: cleanup boom"),
                                           (cleanup_that_hangs, "did not finish in 1 s")])
def test_a_cleanup_that_fails_is_told_to_the_program(node_factory, caplog, cleanup, said):
    """The cluster's cleanup function raising (or hanging past --msg_timeout) on the node:
    the program's log names the node, the computation and the cause; close() returns."""
    node = node_factory("-c", "1", "--msg_timeout", "1")
    cluster = dispy.JobCluster(ident, nodes=[("127.0.0.1", node.port)], port=0,
                               cleanup=cleanup)
    assert cluster.submit(1)() == 1
    cluster.close(timeout=30)
    assert "cleanup of 'ident' failed" in caplog.text and said in caplog.text, caplog.text
    assert "cleanup of 'ident' " in node.output()


def test_depends_file_module_and_package(node, tmp_path, monkeypatch):
    pkg = tmp_path / "shippedpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from .inner import triple\n")
    (pkg / "inner.py").write_text("def triple(x):\n    return 3 * x\n")
    (tmp_path / "helpermod.py").write_text("def double(x):\n    return 2 * x\n")
    (tmp_path / "input.txt").write_text("hello")
    monkeypatch.syspath_prepend(str(tmp_path))
    import helpermod
    import shippedpkg

    def use(x):
        import helpermod
        import shippedpkg
        with open("input.txt") as fh:
            return helpermod.double(x), shippedpkg.triple(x), fh.read()

    with make(node, use, depends=[helpermod, shippedpkg, "input.txt"]) as cluster:
        assert cluster.submit(5)() == (10, 15, "hello")


def fails(x):
    raise ValueError(f"bad value {x}")


def test_exception_gives_terminated_with_traceback(node):
    with make(node, fails) as cluster:
        job = cluster.submit(3)
        assert job() is None
    assert job.status == dispy.DispyJob.Terminated
    assert "ValueError: bad value 3" in job.exception and "fails" in job.exception


def noisy(x):
    print("out", x)
    print("err", x, file=sys.stderr)
    return x


def test_stdout_and_stderr(node):
    with make(node, noisy) as cluster:
        job = cluster.submit(4)
        job()
    assert job.stdout == "out 4\n" and job.stderr == "err 4\n"


def unpicklable(x):
    import threading
    return threading.Lock()


def test_unpicklable_result_is_terminated_not_stuck(node):
    with make(node, unpicklable) as cluster:
        job = cluster.submit(1)
        assert job() is None
    assert job.status == dispy.DispyJob.Terminated
    assert "could not be pickled" in job.exception


def test_unpicklable_argument_is_refused(node, caplog):
    import threading

    with make(node, noisy) as cluster:
        assert cluster.submit(threading.Lock()) is None
    assert "cannot be pickled" in caplog.text


def test_program_computation(node, tmp_path):
    script = tmp_path / "prog.sh"
    script.write_text("#!/bin/sh\necho \"args: $1 $2\"\necho oops >&2\nexit $2\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    with make(node, str(script)) as cluster:
        job = cluster.submit("a", 3)
        assert job() == 3
    assert job.stdout == b"args: a 3\n" and job.stderr == b"oops\n"
    assert job.status == dispy.DispyJob.Finished


def test_setup_failure_is_reported_and_close_returns(node, caplog, monkeypatch):
    monkeypatch.setattr(dispy.config, "StallReportInterval", 0.5)

    def bad_setup():
        return 5

    cluster = make(node, noisy, setup=bad_setup)
    job = cluster.submit(1)
    assert cluster.wait(timeout=3) is False
    assert cluster.close(timeout=0.5, terminate=True) is True
    assert job.status == dispy.DispyJob.Cancelled and job() is None
    assert "setup returned 5" in caplog.text


def test_with_block_does_not_swallow_exceptions(node):
    with pytest.raises(KeyError):
        with make(node, noisy) as cluster:
            cluster.submit(1)()
            raise KeyError("mine")


def test_computation_runs_outside_the_daemon(node):
    def pids():
        return os.getpid(), os.getppid()

    with make(node, pids) as cluster:
        pid, parent = cluster.submit()()
    assert node.proc.pid not in (pid, parent)


def test_job_depends_must_be_a_list_and_close_twice_is_true(node, caplog):
    """dispy_job_depends given a lone path is a clear error (it used to be taken letter
    by letter: "dependency 'n' is not a file"); a second close() says True again."""
    cluster = dispy.JobCluster(ident, nodes=[("127.0.0.1", node.port)], port=0)
    assert cluster.submit(1, dispy_job_depends="notalist") is None
    assert "dispy_job_depends must be a list, not str" in caplog.text
    assert cluster.submit(2)() == 2
    assert cluster.close(timeout=30) is True
    assert cluster.close() is True


def test_a_later_clusters_other_addresses_are_warned_about(node, caplog):
    """The program's clusters share the first one's port and addresses: a second cluster
    asking for others hears it instead of being silently ignored."""
    with dispy.JobCluster(ident, nodes=[("127.0.0.1", node.port)], port=0) as first:
        assert first.submit(1)() == 1
        with dispy.JobCluster(ident, nodes=[("127.0.0.1", node.port)], port=0,
                              ip_addr="127.0.0.1") as second:
            assert second.submit(2)() == 2
    assert "ip_addr=['127.0.0.1'] are not used" in caplog.text
