"""What a new user meets in the first hours: output types as in 4.15, readable
tracebacks, unpicklable arguments named, debug logs that trace what happens, a clear
word when TLS is on one side only."""

from __future__ import annotations

import logging
import threading
import time

import pytest

import dispy

pytestmark = pytest.mark.timeout(90)


def talk(x):
    print("out", x)
    import sys
    print("err", x, file=sys.stderr)
    return x


def write_program(tmp_path):
    prog = tmp_path / "talk.py"
    prog.write_text("import sys\nprint('out', sys.argv[1])\nprint('err', file=sys.stderr)\n")
    return str(prog)


def test_stdout_is_str_for_functions_bytes_for_programs(node, tmp_path):
    """As 4.15 (reference, verified there): a function's stdout/stderr are str, a
    program's are bytes and its result the exit status."""
    with dispy.JobCluster(talk, nodes=[("127.0.0.1", node.port)], port=0) as c:
        job = c.submit(1)
        assert job() == 1
        assert job.stdout == "out 1\n" and job.stderr == "err 1\n"
    with dispy.JobCluster(write_program(tmp_path), nodes=[("127.0.0.1", node.port)],
                          port=0) as c:
        job = c.submit(2)
        assert job() == 0
        assert job.stdout == b"out 2\n" and job.stderr == b"err\n"


def test_stdout_types_through_the_scheduler(scheduler_factory, node, tmp_path):
    sched = scheduler_factory()
    kw = dict(nodes=[dispy.NodeAllocate("127.0.0.1", node.port)], scheduler_node="127.0.0.1",
              scheduler_port=sched.port)
    with dispy.SharedJobCluster(talk, **kw) as c:
        job = c.submit(3)
        assert job() == 3 and job.stdout == "out 3\n" and job.stderr == "err 3\n"
    with dispy.SharedJobCluster(write_program(tmp_path), **kw) as c:
        job = c.submit(4)
        assert job() == 0 and job.stdout == b"out 4\n"


def test_unpicklable_argument_returns_none_and_logs_why(node, caplog):
    """As 4.15, submit() returns None; the ERROR log names the argument and its type."""
    with dispy.JobCluster(talk, nodes=[("127.0.0.1", node.port)], port=0) as c:
        assert c.submit(threading.Lock()) is None
        assert c.submit(5)() == 5
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert any("argument 1 is a _thread.lock" in r.getMessage() for r in errors), caplog.text


CELL = '''\
def inner(x):
    return 10 // x


def analyse(x):
    y = x * 2
    return inner(y - y)
'''


def test_traceback_shows_file_names_and_source_lines(node):
    """cloudpickle names all shipped code "<dynamic-code>"; the computation's file name
    is kept and its source shipped, so the node's traceback reads as locally, even for
    a file the node cannot read (here, code only in the client's linecache, as a
    notebook cell)."""
    import linecache

    fname = "/no/such/dir/analysis_cell.py"
    linecache.cache[fname] = (len(CELL), None, CELL.splitlines(True), fname)
    namespace = {"__name__": "analysis_cell"}
    exec(compile(CELL, fname, "exec"), namespace)
    try:
        with dispy.JobCluster(namespace["analyse"], nodes=[("127.0.0.1", node.port)],
                              port=0) as c:
            job = c.submit(3)
            job()
    finally:
        del linecache.cache[fname]
    assert job.status == dispy.DispyJob.Terminated
    text = job.exception
    assert f'File "{fname}", line 7, in analyse' in text, text
    assert "return inner(y - y)" in text and "return 10 // x" in text, text
    assert "<dynamic-code>" not in text and "ZeroDivisionError" in text


def test_debug_logs_trace_discovery_setup_jobs_and_unused_nodes(node_factory, caplog):
    """dispy.logger.setLevel(DEBUG) (kept by JobCluster without loglevel) and dispynode
    -d show discovery, handshake, setup, each job's dispatch and result, and why a node
    is not used."""
    node = node_factory("-c", "1", "-d")
    other = node_factory("-c", "1")

    class OnlyFirst(dispy.NodeAllocate):
        def allocate(self, cluster, ip_addr, name, cpus, avail_info=None, platform=""):
            return 0

    old = dispy.logger.level
    dispy.logger.setLevel(dispy.logger.DEBUG)
    try:
        caplog.set_level(logging.DEBUG, logger="dispy")
        nodes = [("127.0.0.1", node.port), OnlyFirst("127.0.0.1", other.port)]
        with dispy.JobCluster(talk, nodes=nodes, port=0) as c:
            job = c.submit(7)
            assert job() == 7
            # the other node may answer after the job is done: it is judged before the
            # cluster closes (a closing cluster takes no node)
            deadline = time.monotonic() + 30
            while ("NodeAllocate gave 0 CPUs" not in caplog.text
                   and time.monotonic() < deadline):
                time.sleep(0.02)
        assert dispy.logger.level == dispy.logger.DEBUG
    finally:
        dispy.logger.setLevel(old)
    text = caplog.text
    for expected in (f"node 127.0.0.1:{node.port}: connecting", "handshake done",
                     "setting up 'talk'", "'talk' set up", f"job {job.id} of 'talk' sent",
                     f"job {job.id} of 'talk': Finished", "NodeAllocate gave 0 CPUs"):
        assert expected in text, (expected, text)
    node.wait_for("done: status 11")
    out = node.output()
    for expected in ("handshake with 127.0.0.1", "setup of 'talk': done", "queued"):
        assert expected in out, (expected, out)
