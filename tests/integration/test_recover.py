"""recover_file and recover_jobs: a client program crashes, a new one gets the results."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from conftest import crash_program, wait_kept

import dispy
from dispy.client.journal import Journal

pytestmark = pytest.mark.timeout(90)

CLIENT = textwrap.dedent("""
    import os, sys, time
    import dispy

    def compute(n, secs):
        import time
        time.sleep(secs)
        print("job", n)
        return n * n

    port, secs, count = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    cluster = dispy.JobCluster(compute, nodes=["127.0.0.1"], node_port=port, port=0,
                               recover_file=sys.argv[4] if len(sys.argv) > 4 else None)
    jobs = [cluster.submit_job_id(i, i, secs) for i in range(count)]  # ids journaled too
    def running():
        return sum(job.status == dispy.DispyJob.Running for job in jobs)

    while not cluster.status().nodes or running() < min(count, cluster.status().nodes[0].cpus):
        time.sleep(0.02)
    print("all running", flush=True)
    sys.stdin.read()  # killed here by the test
""")


def crashed_client(tmp_path, node, secs, count, recover_file=None):
    args = [str(node.port), str(secs), str(count)]
    crash_program(tmp_path, CLIENT, *args, *([recover_file] if recover_file else []))


def double(x):
    return 2 * x


def test_recover_jobs_after_the_client_was_killed(node, tmp_path):
    crashed_client(tmp_path, node, 1.0, 2)
    files = glob.glob(str(tmp_path / "_dispy_*"))
    assert len(files) == 1
    jobs = dispy.recover_jobs()  # the newest recover file in the working directory
    assert sorted((job.id, job.result, job.status) for job in jobs) == [
        (0, 0, dispy.DispyJob.Finished), (1, 1, dispy.DispyJob.Finished)]
    assert all(job.stdout.startswith("job ") for job in jobs)
    assert all(job() == job.result for job in jobs)
    assert not glob.glob(str(tmp_path / "_dispy_*"))  # consumed
    with dispy.JobCluster(double, nodes=["127.0.0.1"], node_port=node.port, port=0) as c:
        assert c.submit(21)() == 42  # the node serves a new client at once


def test_recover_with_timeout_and_terminate_pending(node, tmp_path):
    crashed_client(tmp_path, node, 60, 2, "mine.rec")
    jobs = dispy.recover_jobs("mine.rec", timeout=0.5, terminate_pending=True)
    assert [job.status for job in jobs] == [dispy.DispyJob.Cancelled] * 2
    assert not os.path.exists("mine.rec")
    with dispy.JobCluster(double, nodes=["127.0.0.1"], node_port=node.port, port=0) as c:
        assert c.submit(1)() == 2


def test_recover_with_timeout_leaves_running_jobs_for_later(node, tmp_path):
    crashed_client(tmp_path, node, 2.0, 2, "later.rec")
    first = dispy.recover_jobs("later.rec", timeout=0.2)
    assert [job.status for job in first] == [dispy.DispyJob.Running] * 2
    assert os.path.exists("later.rec")
    second = dispy.recover_jobs("later.rec")
    assert sorted(job.result for job in second) == [0, 1]
    assert not os.path.exists("later.rec")


def test_recover_file_is_removed_after_a_clean_close(node, tmp_path):
    cluster = dispy.JobCluster(double, nodes=["127.0.0.1"], node_port=node.port, port=0)
    [path] = glob.glob(str(tmp_path / "_dispy_*"))
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert cluster.submit(2)() == 4
    cluster.close()
    assert not glob.glob(str(tmp_path / "_dispy_*"))


def test_recover_jobs_without_a_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        dispy.recover_jobs()
    (tmp_path / "_dispy_bad").write_text("not sqlite")
    with pytest.raises(ValueError, match="not a dispy recover file"):
        dispy.recover_jobs("_dispy_bad")


def test_results_survive_a_node_restart(node_factory, tmp_path):
    node = node_factory()
    crashed_client(tmp_path, node, 0.3, 2, "restart.rec")
    wait_kept(node, 2)
    node.stop(signal.SIGTERM)
    again = node_factory(port=node.port)
    again.wait_for("kept 2 undelivered result(s)")
    jobs = dispy.recover_jobs("restart.rec")
    assert sorted((job.id, job.result) for job in jobs) == [(0, 0), (1, 1)]
    with dispy.JobCluster(double, nodes=["127.0.0.1"], node_port=again.port, port=0) as c:
        assert c.submit(5)() == 10
    again.stop(signal.SIGTERM)
    third = node_factory(port=node.port)  # fetched results are not kept any more
    assert "undelivered" not in third.output()


def test_jobs_lost_with_a_killed_node_come_back_abandoned(node_factory, tmp_path):
    node = node_factory()
    crashed_client(tmp_path, node, 30, 2, "lost.rec")
    node.stop(signal.SIGKILL)
    again = node_factory(port=node.port)
    jobs = dispy.recover_jobs("lost.rec")
    assert [job.status for job in jobs] == [dispy.DispyJob.Abandoned] * 2
    assert "no record" in jobs[0].exception
    assert again.proc.poll() is None


def _signal_state(pid: int) -> str:
    """The signal masks of each thread of ``pid`` (why a signal was not acted on)."""
    lines = []
    for status in sorted(glob.glob(f"/proc/{pid}/task/*/status")):
        with open(status) as fh:
            fields = dict(line.split(":", 1) for line in fh if ":" in line)
        lines.append(" ".join(f"{k}={fields.get(k, '?').strip()}" for k in
                              ("Name", "SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt")))
    return "; ".join(lines)


def test_ctrl_c_exits_the_client_and_its_jobs_can_be_recovered(node, tmp_path):
    gate = tmp_path / "go"  # the jobs run until the test is done with the program
    script = tmp_path / "client.py"
    # Ctrl-C as in a terminal: a suite started in the background (``&``) hands its
    # children SIGINT ignored, and Python then installs no handler of its own
    script.write_text("import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"
                      + CLIENT.replace("sys.stdin.read()  # killed here by the test",
                                       "cluster.wait()").replace(
        "time.sleep(secs)",
        f"while not __import__('os').path.exists({str(gate)!r}): time.sleep(0.02)"))
    proc = subprocess.Popen([sys.executable, str(script), str(node.port), "1.0", "2",
                             "int.rec"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "all running"
        proc.send_signal(signal.SIGINT)  # Ctrl-C while the program waits for its jobs
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"SIGINT did not end the program: {_signal_state(proc.pid)}"
                                 f"; the test's own: {_signal_state(os.getpid())}") from None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    assert "recover file" in err and "dispy.recover_jobs(" in err  # says how to recover
    gate.touch()
    jobs = dispy.recover_jobs("int.rec")
    assert sorted(job.result for job in jobs) == [0, 1]


EXITS = textwrap.dedent("""
    import sys
    import dispy

    def compute(n):
        return n * n

    cluster = dispy.JobCluster(compute, nodes=["127.0.0.1"], node_port=int(sys.argv[1]),
                               port=0)
    assert [j() for j in [cluster.submit(i) for i in range(3)]] == [0, 1, 4]
    if sys.argv[2] == "interrupt":
        raise KeyboardInterrupt  # Ctrl-C after the jobs are done
    # else: the program ends without cluster.close(), as many published programs do
""")


@pytest.mark.parametrize("how", ["interrupt", "no_close"])
def test_recover_file_of_a_program_that_exits_with_nothing_to_recover_goes(node, tmp_path,
                                                                          how):
    script = tmp_path / "exits.py"
    script.write_text(EXITS)
    proc = subprocess.run([sys.executable, str(script), str(node.port), how],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == (-2 if how == "interrupt" else 0), proc.stderr
    assert glob.glob(str(tmp_path / "_dispy_*")) == [], proc.stderr


def test_jobs_still_queued_in_the_crashed_program_are_rerun(node, tmp_path):
    crashed_client(tmp_path, node, 0.5, 6, "queued.rec")  # 2 run, 4 wait in the client
    jobs = dispy.recover_jobs("queued.rec")
    assert sorted((job.id, job.result, job.status) for job in jobs) == [
        (i, i * i, dispy.DispyJob.Finished) for i in range(6)]
    assert not glob.glob(str(tmp_path / "queued.rec*"))


def journaled_but_never_sent(recover_file: str) -> tuple:
    """Add to a crashed program's recover file a job as the program journals one just
    before it sends it, as if it crashed before the bytes left: same node, same
    arguments as a job that did arrive, a new uid. Returns the row it copied."""
    journal = Journal(recover_file)
    try:
        row = next(row for row in journal.rows.values() if row[2] is not None)
        assert row[8] is not None and row[7] is not None  # the peer's id and the arguments
        journal.add_rows([], [("never-sent", *row[1:4], "'lost'", *row[5:])])
    finally:
        journal.close()
    return row


def test_a_job_journaled_as_sent_that_never_arrived_runs(node, tmp_path):
    """The crash window between journaling a job and sending it: the node (the same
    one: not restarted since) has no record of it, so it never arrived and runs now."""
    crashed_client(tmp_path, node, 0.5, 2, "window.rec")
    row = journaled_but_never_sent("window.rec")
    copied = int(row[4])  # the id of the job whose arguments it has
    jobs = dispy.recover_jobs("window.rec")
    assert sorted((str(job.id), job.result, job.status) for job in jobs) == sorted(
        [("0", 0, dispy.DispyJob.Finished), ("1", 1, dispy.DispyJob.Finished),
         ("lost", copied * copied, dispy.DispyJob.Finished)])
    assert not glob.glob(str(tmp_path / "window.rec*"))


CALLBACK_CLIENT = textwrap.dedent("""
    import sys, time
    import dispy

    def compute(n):
        return n * n

    def callback(job):
        if job.status == dispy.DispyJob.Finished:
            print("in callback", job.result, flush=True)
            time.sleep(600)  # killed here: the program never took the result

    cluster = dispy.JobCluster(compute, nodes=["127.0.0.1"], node_port=int(sys.argv[1]),
                               port=0, recover_file="cb.rec", callback=callback)
    cluster.submit(7)
    sys.stdin.readline()
    # the next job's dispatch commits the recover file: a job whose callback had run
    # would be forgotten in it from here on
    print("second", cluster.submit(2)(), flush=True)
    sys.stdin.read()
""")


def test_a_result_whose_callback_did_not_finish_is_recovered(node, tmp_path):
    """At least once to the callback: a job is forgotten in the recover file, and its
    result acknowledged to the node, only after its callback ran."""
    script = tmp_path / "cb_client.py"
    script.write_text(CALLBACK_CLIENT)
    proc = subprocess.Popen([sys.executable, str(script), str(node.port)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=tmp_path, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "in callback 49"
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "second 4"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    jobs = dispy.recover_jobs("cb.rec")  # the second one's callback never ran either
    assert sorted((job.result, job.status) for job in jobs) == [
        (4, dispy.DispyJob.Finished), (49, dispy.DispyJob.Finished)]


def test_clean_removes_kept_results(node_factory, tmp_path):
    node = node_factory()
    crashed_client(tmp_path, node, 0.2, 2, "clean.rec")
    wait_kept(node, 2)
    node.stop(signal.SIGTERM)
    node_factory("--clean", port=node.port)
    jobs = dispy.recover_jobs("clean.rec")
    assert [job.status for job in jobs] == [dispy.DispyJob.Abandoned] * 2


def test_programs_started_together_get_their_own_recover_files(tmp_path):
    from dispy.client.journal import default_path

    first, second = default_path(), default_path()
    assert first != second and os.path.exists(first) and os.path.exists(second)
    assert os.path.basename(second).startswith(os.path.basename(first))


def test_a_recover_file_in_use_is_a_clear_error(node, tmp_path):
    holder = Journal(str(tmp_path / "busy.rec"))  # as another running program holds it
    try:
        with pytest.raises(ValueError, match="busy.rec cannot be used"):
            dispy.JobCluster(double, nodes=["127.0.0.1"], node_port=node.port, port=0,
                             recover_file="busy.rec")
    finally:
        holder.close()
    with dispy.JobCluster(double, nodes=["127.0.0.1"], node_port=node.port, port=0,
                          recover_file="busy.rec") as cluster:
        assert cluster.submit(4)() == 8


def test_queued_jobs_rerun_with_a_timeout_go_on_for_a_later_call(node, tmp_path):
    """Jobs the crashed program had only queued are rerun; when ``timeout`` passes
    they go on (as the spec says of timeout), come back Running, not Cancelled, and a
    later call returns their results instead of running them again from the start."""
    crashed_client(tmp_path, node, 1.5, 4, "queued.rec")  # 2 run on the node, 2 queued
    first = dispy.recover_jobs("queued.rec", timeout=0.5)
    assert len(first) == 4  # still running on the node, or still waiting for a CPU
    assert {job.status for job in first} <= {dispy.DispyJob.Running, dispy.DispyJob.Created}
    assert os.path.exists("queued.rec")
    second = dispy.recover_jobs("queued.rec")
    assert sorted((job.id, job.status, job.result) for job in second) == [
        (i, dispy.DispyJob.Finished, i * i) for i in range(4)]
    assert not os.path.exists("queued.rec")


EXITS_WITHOUT_CLOSE = textwrap.dedent("""
    import sys
    import dispy

    def compute(n):
        return n * n

    cluster = dispy.JobCluster(compute, nodes=["127.0.0.1"], node_port=int(sys.argv[1]),
                               port=0, callback=lambda job: None)
    jobs = [cluster.submit(i) for i in range(5)]
    cluster.wait()  # (each result is acknowledged once its callback ran: not at once)
    print("done", [job.result for job in jobs], flush=True)
""")


def test_a_program_that_exits_without_close_acknowledges_the_results_it_took(
        node_factory, tmp_path):
    """Results wait a moment for their acknowledgement to ride with a job; a program
    that ends then (without ``close()``) still acknowledges them, so its node does not
    keep them on disk for a ``recover_jobs`` that will never come."""
    node = node_factory("-d")  # (it logs the disconnection: the acks came before it)
    script = tmp_path / "exits.py"
    script.write_text(EXITS_WITHOUT_CLOSE)
    out = subprocess.run([sys.executable, str(script), str(node.port)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert "done [0, 1, 4, 9, 16]" in out.stdout, out.stderr
    node.wait_for("disconnected")
    node.stop(signal.SIGTERM)
    mark = len(node.output())
    node.restart(ready="serving")  # (what it kept from its last run is logged before)
    assert "undelivered result" not in node.output()[mark:], node.output()[mark:]
