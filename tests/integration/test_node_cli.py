"""dispynode's command line: CPUs, file size limit, ports, signals, one client at a time."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from conftest import wait_started

import dispy

pytestmark = pytest.mark.timeout(90)


def ident(x):
    return x


def run_node(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dispy.dispynode", "--daemon", *args],
                          capture_output=True, text=True, timeout=30)


def test_negative_cpus(node_factory):
    ncpu = os.cpu_count() or 1
    if ncpu < 2:
        pytest.skip("needs 2 CPUs")
    node = node_factory("-c", "-1")
    assert f"serving {ncpu - 1} CPUs" in node.output()


def test_bad_options_are_clear_errors():
    ncpu = os.cpu_count() or 1
    res = run_node("-c", str(ncpu + 5))
    assert res.returncode == 2 and "has only" in res.stderr
    res = run_node("--max_file_size", "ten")
    assert res.returncode == 2 and "max_file_size" in res.stderr
    res = run_node("--certfile", "/nonexistent.pem")
    assert res.returncode == 2 and "does not exist" in res.stderr


def test_port_in_use(node, tmp_path):
    res = run_node("-i", "127.0.0.1", "-p", str(node.port), "--dest_path_prefix",
                   str(tmp_path / "other"))
    assert res.returncode == 1 and "cannot" in res.stderr and str(node.port) in res.stderr


def test_max_file_size(node_factory, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(dispy.config, "StallReportInterval", 0.5)
    node = node_factory("--max_file_size", "1k")
    big = tmp_path / "big.dat"
    big.write_bytes(b"x" * 5000)
    cluster = dispy.JobCluster(ident, nodes=["127.0.0.1"], node_port=node.port, port=0,
                               depends=[str(big)])
    job = cluster.submit(1)
    assert cluster.wait(timeout=3) is False
    cluster.close(timeout=0, terminate=True)
    assert job.status == dispy.DispyJob.Cancelled
    assert "max_file_size" in caplog.text


def listing(x):
    return sorted(os.listdir("."))


def test_files_over_max_file_size_after_setup_fail_alone(node_factory, tmp_path,
                                                         monkeypatch):
    """After setup, a file over --max_file_size fails on its own, with the reason:
    cluster.send_file of a file sent in several chunks returns -1 and the computation
    goes on (it used to be broken for every later job); a job whose dispy_job_depends
    file is refused ends Terminated with the reason (it used to run without it)."""
    monkeypatch.setattr(dispy.config, "FileChunkSize", 1000)
    node = node_factory("-c", "1", "--max_file_size", "3k")
    big = tmp_path / "big.dat"
    big.write_bytes(b"x" * 5000)  # five chunks
    small = tmp_path / "small.dat"
    small.write_bytes(b"s" * 100)
    with dispy.JobCluster(listing, nodes=["127.0.0.1"], node_port=node.port, port=0,
                          reentrant=True) as cluster:
        assert cluster.wait_nodes(1, timeout=30) == 1
        assert cluster.send_file(str(big), "127.0.0.1") == -1
        assert cluster.send_file(str(small), "127.0.0.1") == 0
        assert cluster.submit(1)() == ["small.dat"]
        job = cluster.submit(2, dispy_job_depends=[str(big)])
        assert job() is None and job.status == dispy.DispyJob.Terminated
        assert "max_file_size" in job.exception
        assert cluster.submit(3)() == ["small.dat"]
    assert "max_file_size" in node.output()


def raises_keyboard_interrupt(x):
    raise KeyboardInterrupt("the job's own")


def raises_a_long_message(n):
    raise ValueError("e" * n)


def test_a_jobs_own_keyboard_interrupt_and_a_huge_exception_are_its_failures(node):
    """Only a cancel ends a job Cancelled: a KeyboardInterrupt the job raises is its own
    failure (Terminated). An exception whose text is over the header's bound (20 MB
    here) arrives shortened, with both ends, instead of 'exited with code 1'."""
    with dispy.JobCluster(raises_keyboard_interrupt, nodes=["127.0.0.1"],
                          node_port=node.port, port=0) as cluster:
        job = cluster.submit(1)
        assert job() is None and job.status == dispy.DispyJob.Terminated
        assert "the job's own" in job.exception
    with dispy.JobCluster(raises_a_long_message, nodes=["127.0.0.1"],
                          node_port=node.port, port=0) as cluster:
        job = cluster.submit(20 << 20)
        assert job() is None and job.status == dispy.DispyJob.Terminated
        assert "characters left out" in job.exception
        assert job.exception.rstrip().endswith("e" * 100)  # ValueError: eee...


def sleeper(x):
    dispy_provisional_result("started")  # noqa: F821
    time.sleep(x)
    return x


def two_jobs_then_ctrl_c(node, secs: float) -> tuple[dispy.JobCluster, list]:
    """A cluster with two jobs of ``secs`` s running on ``node``, then Ctrl-C to it."""
    cluster = dispy.JobCluster(sleeper, nodes=["127.0.0.1"], node_port=node.port, port=0)
    jobs = [cluster.submit(secs) for _ in range(2)]
    for job in jobs:
        wait_started(job)
    os.kill(node.proc.pid, signal.SIGINT)
    node.wait_for("will quit once client")
    return cluster, jobs


def test_sigint_quits_once_the_client_is_done(node):
    """Ctrl-C: the node quits after the running computations finish (as the original):
    the program's jobs, also those submitted after the Ctrl-C, run to the end, and the
    node exits when the program closes its cluster."""
    cluster, jobs = two_jobs_then_ctrl_c(node, 0.5)
    jobs.append(cluster.submit(0.1))
    assert [j() for j in jobs] == [0.5, 0.5, 0.1]
    assert all(j.status == dispy.DispyJob.Finished for j in jobs)
    assert node.proc.poll() is None  # still serving the program
    cluster.close(timeout=10)
    assert node.proc.wait(20) == 0
    assert "quitting as asked, now that the client is done" in node.output()


def test_second_sigint_finishes_running_jobs_then_exits(node):
    """Ctrl-C twice: the running jobs finish and deliver their results, the program is
    told the node has no CPUs, so a job it submits then waits for another node instead
    of being refused or lost; the node exits."""
    cluster, jobs = two_jobs_then_ctrl_c(node, 1.5)
    os.kill(node.proc.pid, signal.SIGINT)
    node.wait_for("will quit after")  # (2 running jobs, unless a slow machine ended one)
    late = cluster.submit(0.1)
    assert [j() for j in jobs] == [1.5, 1.5]
    assert all(j.status == dispy.DispyJob.Finished for j in jobs)
    assert node.proc.wait(20) == 0
    assert late.status == dispy.DispyJob.Created  # queued for another node, not lost
    cluster.close(timeout=0, terminate=True)
    assert late() is None and late.status == dispy.DispyJob.Cancelled


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGABRT])
def test_sigterm_and_sigabrt_end_jobs_now_as_terminated(node, sig):
    cluster = dispy.JobCluster(sleeper, nodes=["127.0.0.1"], node_port=node.port, port=0)
    job = cluster.submit(60)
    wait_started(job)
    os.kill(node.proc.pid, sig)
    assert job() is None
    assert job.status == dispy.DispyJob.Terminated and "terminated" in job.exception
    assert node.proc.wait(20) == 0
    cluster.close(timeout=5, terminate=True)


CLIENT = textwrap.dedent("""
    import sys, time, dispy
    def f(x):
        time.sleep(x)
        return x
    c = dispy.JobCluster(f, nodes=["127.0.0.1"], node_port=int(sys.argv[1]), port=0)
    j = c.submit(float(sys.argv[2]))
    print("result", j(), flush=True)
    c.close()
""")


def test_one_client_at_a_time_and_busy_reason(node, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(dispy.config, "StallReportInterval", 0.5)
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    other = subprocess.Popen([sys.executable, str(script), str(node.port), "4"],
                             stdout=subprocess.PIPE, text=True)
    try:
        node.wait_for("computation 'f'")
        cluster = dispy.JobCluster(ident, nodes=["127.0.0.1"], node_port=node.port, port=0)
        job = cluster.submit(7)
        time.sleep(1.5)
        assert job.status == dispy.DispyJob.Created
        assert "busy with client" in caplog.text
        assert job() == 7  # served once the other client is done
        cluster.close()
        out, _ = other.communicate(timeout=30)
        assert "result 4.0" in out
    finally:
        other.kill()
        other.wait()


def test_job_socket_lives_under_the_node_directory(node_factory, tmp_path):
    """No /tmp/dispynode-* directory: the job socket is in the node's own directory, and
    what a node killed with -9 left there is removed at the next start."""
    node = node_factory("-c", "1")
    sockets = node.prefix / "dispy" / f"node-{node.port}" / "sockets"
    assert (sockets / "jobs").exists()
    (sockets / "stale").write_text("from a killed node")
    node.stop()  # SIGKILL
    again = node_factory("-c", "1", port=node.port)
    assert again.prefix == node.prefix
    assert (sockets / "jobs").exists() and not (sockets / "stale").exists()
    with dispy.JobCluster(ident, nodes=[("127.0.0.1", again.port)], port=0) as c:
        assert c.submit(7)() == 7


def test_long_prefix_socket_dir_is_found_again_after_kill_9(node_factory, tmp_path):
    """A --dest_path_prefix too long for a Unix socket path puts the job socket in a
    temp directory named after the node's directory: a node killed with -9 leaves it,
    the next start on that directory removes and remakes it, a clean stop removes it."""
    long_prefix = tmp_path / ("p" * 90)
    long_prefix.mkdir()
    node = node_factory("-c", "1", "--dest_path_prefix", str(long_prefix))
    root = long_prefix / "dispy" / f"node-{node.port}"
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:16]
    # the node's temp dir: tests give daemons a private TMPDIR (conftest)
    sockets = Path(os.environ.get("TMPDIR") or tempfile.gettempdir()) / f"dispynode-{digest}"
    try:
        assert (sockets / "jobs").exists()
        (sockets / "stale").write_text("from a killed node")
        node.stop()  # SIGKILL
        again = node_factory("-c", "1", "--dest_path_prefix", str(long_prefix),
                             port=node.port)
        assert (sockets / "jobs").exists() and not (sockets / "stale").exists()
        with dispy.JobCluster(ident, nodes=[("127.0.0.1", again.port)], port=0) as c:
            assert c.submit(7)() == 7
        again.stop(signal.SIGTERM)
        assert not sockets.exists()
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
