"""Big results (``jobproc.RESULT_FILE_MIN`` bytes and more) go from the job process to
a file of the node's result directory, not through its link or into its result log:
they arrive whole, survive a node killed with -9, their files go once acknowledged,
and a job process cannot make the node send, or remove, a file that is not its own."""

from __future__ import annotations

import os
import signal
import textwrap
import time
from pathlib import Path

import pytest
from conftest import crash_program, wait_kept

import dispy

pytestmark = pytest.mark.timeout(90)

BIG = 3 << 20  # over jobproc.RESULT_FILE_MIN


def result_dir(node) -> Path:
    return node.prefix / "dispy" / f"node-{node.port}" / "results"


def wait_empty(directory: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while os.listdir(directory):
        assert time.monotonic() < deadline, os.listdir(directory)
        time.sleep(0.05)


def big(n):
    print("made", n)
    return bytes([n]) * (3 << 20)


def test_big_results_arrive_whole_and_their_files_go(node):
    with dispy.JobCluster(big, nodes=["127.0.0.1"], node_port=node.port, port=0) as c:
        jobs = [c.submit(i) for i in range(4)]
        for i, job in enumerate(jobs):
            assert job() == bytes([i]) * BIG, job.exception
            assert job.status == dispy.DispyJob.Finished and job.stdout == f"made {i}\n"
    wait_empty(result_dir(node))  # acknowledged: removed


CLIENT = textwrap.dedent("""
    import sys, time
    import dispy

    def compute(n):
        import time
        time.sleep(0.3)
        return bytes([n]) * (3 << 20)

    cluster = dispy.JobCluster(compute, nodes=["127.0.0.1"], node_port=int(sys.argv[1]),
                               port=0, recover_file=sys.argv[2])
    jobs = [cluster.submit_job_id(i, i) for i in range(2)]
    while sum(job.status == dispy.DispyJob.Running for job in jobs) < 2:
        time.sleep(0.02)
    print("all running", flush=True)
    sys.stdin.read()  # killed here by the test
""")


def test_big_results_survive_a_node_killed_with_sigkill(node_factory, tmp_path):
    node = node_factory("-c", "2")
    crash_program(tmp_path, CLIENT, str(node.port), "big.rec")
    wait_kept(node, 2)
    files = result_dir(node)
    assert len(os.listdir(files)) == 2
    (files / f"999999-{'a' * 16}-1").write_bytes(b"left by a node killed before it logged it")
    node.stop(signal.SIGKILL)
    again = node_factory(port=node.port)
    again.wait_for("kept 2 undelivered result(s)")
    assert len(os.listdir(files)) == 2  # the unnamed one is gone
    jobs = dispy.recover_jobs(str(tmp_path / "big.rec"))
    assert sorted((job.id, job.result == bytes([job.id]) * BIG) for job in jobs) == \
        [(0, True), (1, True)]
    wait_empty(files)


def forge(planted, hard_link):
    """A job that tells the node its result is in a file that is not its own."""
    import os

    from dispy.node import jobproc
    from dispy.wire import hostmsg
    from dispy.wire.sync import send_frame_sync

    if planted:
        name = planted
        if hard_link:  # a name of its own, for another process's file
            name = f"{os.getpid()}-{jobproc._State.result_tag}-99"
            os.link(os.path.join(jobproc._State.result_dir, planted),
                    os.path.join(jobproc._State.result_dir, name))
        sock = jobproc._State.sock
        send_frame_sync(sock, hostmsg.DoneInFile(  # of a job it does not run: dropped
            uid="stale", status=5, file=planted, lens=[0, 0, 0]), [])
        send_frame_sync(sock, hostmsg.DoneInFile(
            uid=jobproc._State.uid, status=5, file=name, lens=[17, 0, 0]), [])
    return "own result"


@pytest.mark.parametrize("hard_link", [False, True])
def test_a_job_process_cannot_pass_off_another_file(node, hard_link):
    files = result_dir(node)
    os.makedirs(files, exist_ok=True)
    other = f"1-{'0' * 16}-1"  # another computation's process's
    (files / other).write_bytes(b"another process's")  # 17 bytes
    with dispy.JobCluster(forge, nodes=["127.0.0.1"], node_port=node.port, port=0) as c:
        job = c.submit(other, hard_link)
        job()
        assert job.status == dispy.DispyJob.Terminated, job.result
        assert "lost the job's result" in job.exception
        assert c.submit(None, False)() == "own result"  # the process goes on
    assert (files / other).read_bytes() == b"another process's"  # neither sent nor removed
    assert os.listdir(files) == [other]  # (the hard link, its own name, is removed)


def write_and_die(n):
    """A job process that wrote a result file and died before it said so."""
    import os

    from dispy.node import jobproc

    name = f"{os.getpid()}-{jobproc._State.result_tag}-{n}"
    with open(os.path.join(jobproc._State.result_dir, name), "wb") as fh:
        fh.write(b"half a result")
    os._exit(3)


def test_a_file_its_dead_process_never_claimed_goes(node):
    files = result_dir(node)
    with dispy.JobCluster(write_and_die, nodes=["127.0.0.1"], node_port=node.port,
                          port=0) as c:
        job = c.submit(77)
        job()
        assert job.status == dispy.DispyJob.Terminated
        wait_empty(files)
