"""SharedJobCluster through a real dispyscheduler and real dispynodes on loopback."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import wait_started
from test_recover import journaled_but_never_sent

import dispy

pytestmark = pytest.mark.timeout(120)

CLIENT = str(Path(__file__).parents[1] / "netlab" / "programs" / "shared_client.py")


def shared(sched, node, computation, **kw):
    nodes = kw.pop("nodes", None) or [dispy.NodeAllocate("127.0.0.1", node.port)]
    return dispy.SharedJobCluster(computation, nodes=nodes, scheduler_node="127.0.0.1",
                                  scheduler_port=sched.port, **kw)


def double(x):
    return 2 * x


def slow(x):
    dispy_provisional_result("started")  # noqa: F821 (a dispy builtin on the node)
    time.sleep(x)
    return x


def test_jobs_results_callbacks_and_node_events(scheduler_factory, node):
    sched = scheduler_factory()
    seen, nodes = [], []
    lock = threading.Lock()

    def callback(job):
        with lock:
            seen.append((job.id, job.status))

    job_events = []

    def cluster_status(status, dnode, job):
        if job is None:
            nodes.append((status, dnode))
        else:
            job_events.append(status)

    with shared(sched, node, double, callback=callback, cluster_status=cluster_status) as c:
        jobs = [c.submit(i) for i in range(20)]
        assert [j() for j in jobs] == [2 * i for i in range(20)]
        assert all(j.status == dispy.DispyJob.Finished and j.ip_addr == "127.0.0.1"
                   for j in jobs)
        st = c.status()
        assert [n.port for n in st.nodes] == [node.port] and st.jobs_pending == 0
        assert st.nodes[0].jobs_done == 20
    # the program never used the node itself, even though the node announced itself
    comps = [ln for ln in node.output().splitlines() if "computation 'double'" in ln]
    assert comps and all("from dispyscheduler@" in ln for ln in comps)
    assert nodes[0][0] == dispy.DispyNode.Initialized
    assert nodes[-1][0] == dispy.DispyNode.Closed
    assert sorted(seen) == [(j.id, dispy.DispyJob.Finished) for j in jobs]  # results only
    assert dispy.DispyJob.Running in job_events  # cluster_status hears of every change


def test_lambda_provisional_result_and_cancel(scheduler_factory, node):
    sched = scheduler_factory()
    with shared(sched, node, slow) as c:
        job = c.submit(30)
        wait_started(job)
        assert job.result == "started"
        assert c.node_jobs("127.0.0.1") == [job]
        assert c.cancel(job) == 0
        job()
        assert job.status in (dispy.DispyJob.Cancelled, dispy.DispyJob.Terminated)
        assert c.cancel(job) == -1
    with shared(sched, node, lambda x: x + 1) as c:
        assert c.submit(41)() == 42
    with shared(sched, node, lambda b: (len(b), b[::-1])) as c:
        big = os.urandom(3 << 20)  # out of band in both directions, through the scheduler
        n, back = c.submit(big)()
        assert n == len(big) and back == big[::-1]


def test_queued_job_cancelled_at_the_scheduler(scheduler_factory, node_factory):
    node = node_factory("-c", "1")
    sched = scheduler_factory()
    with shared(sched, node, slow) as c:
        first = c.submit(30)
        wait_started(first)
        queued = c.submit(1)
        assert c.cancel(queued) == 0
        queued()
        assert queued.status == dispy.DispyJob.Cancelled
        c.cancel(first)
        first()


def test_two_clusters_share_one_node_at_once(scheduler_factory, node):
    sched = scheduler_factory()
    with shared(sched, node, slow) as a, shared(sched, node, lambda x: (time.sleep(x), x)[1]) \
            as b:
        ja = a.submit(3)
        wait_started(ja)
        jb = b.submit(0.2)
        assert jb() == 0.2  # ran while ja was still running on the same 2-CPU node
        assert ja.status == dispy.DispyJob.ProvisionalResult
        a.cancel(ja)


def test_exclusive_cluster_waits_then_runs_alone(scheduler_factory, node, caplog):
    caplog.set_level(logging.INFO, logger="dispy")
    sched = scheduler_factory()
    a = shared(sched, node, slow)
    first = a.submit(2)
    wait_started(first)
    x = shared(sched, node, double, exclusive=True)
    assert "waits for" in caplog.text
    xjob = x.submit(5)
    time.sleep(0.5)
    assert xjob.status == dispy.DispyJob.Created  # waits for `a` to close
    assert first() == 2
    closed = time.time()
    a.close()
    assert xjob() == 10 and xjob.start_time >= closed - 0.5
    b = shared(sched, node, double)  # arrives while x runs: waits for it
    bjob = b.submit(1)
    time.sleep(0.5)
    assert bjob.status == dispy.DispyJob.Created
    x.close()
    assert bjob() == 2
    b.close()


def test_set_node_cpus_is_refused_submit_node_works(scheduler_factory, node, caplog):
    sched = scheduler_factory()
    with shared(sched, node, double) as c:
        assert c.submit(1)() == 2
        assert c.set_node_cpus("127.0.0.1", 1) == -1
        assert "shared" in caplog.text
        job = c.submit_node("127.0.0.1", 4)
        assert job() == 8 and job.ip_addr == "127.0.0.1"
        assert c.submit_node("10.9.9.9", 1) is None
        assert c.node_jobs("10.9.9.9") == -1


def test_submit_node_right_after_creation_waits_for_the_node(scheduler_factory, node):
    sched = scheduler_factory()
    with shared(sched, node, double) as c:
        job = c.submit_node("127.0.0.1", 5)
        assert job is not None and job() == 10
        assert c.wait_nodes(1, timeout=10) == 1


def test_print_status_shows_traffic(scheduler_factory, node, capsys):
    sched = scheduler_factory()
    with shared(sched, node, double) as c:
        assert [j() for j in [c.submit(i) for i in range(3)]] == [0, 2, 4]
        c.print_status()
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "127.0.0.1" in ln)
    cells = [cell.strip() for cell in line.split("|")]
    assert cells[2] == "3" and cells[5] != "0 B" and cells[6] != "0 B", line


def test_cooperative_scheduler_lets_programs_set_node_cpus(scheduler_factory, node_factory):
    """4.15's dispyscheduler --cooperative: set_node_cpus works through the scheduler."""
    node = node_factory("-c", "2")
    sched = scheduler_factory("--cooperative", "--early_cluster_scheduler")
    with shared(sched, node, double) as c:
        assert c.submit(1)() == 2
        assert c.set_node_cpus("127.0.0.1", 1) == 1
        assert [j() for j in [c.submit(i) for i in range(4)]] == [0, 2, 4, 6]
    assert "policy early" in sched.output()


def send_back(name):
    os.makedirs(os.path.dirname(name), exist_ok=True)
    with open(name, "w") as fh:
        fh.write("from the node")
    dispy_send_file(name)  # noqa: F821 (a dispy builtin on the node)
    return open("data.txt").read()


def read_file(name):
    return open(name).read()


def test_files_both_ways(scheduler_factory, node, tmp_path):
    sched = scheduler_factory()
    (tmp_path / "data.txt").write_text("to the node")
    os.makedirs(tmp_path / "out", exist_ok=True)
    with shared(sched, node, send_back, depends=["data.txt"]) as c:
        job = c.submit("out/back.txt")
        assert job() == "to the node", job.exception
        assert (tmp_path / "out" / "back.txt").read_text() == "from the node"
    (tmp_path / "extra.txt").write_text("sent later")
    (tmp_path / "perjob.txt").write_text("with the job")
    with shared(sched, node, read_file) as c:
        assert c.submit("perjob.txt", dispy_job_depends=["perjob.txt"])() == "with the job"
        assert c.submit("perjob.txt", dispy_job_depends=["perjob.txt"])() == "with the job"
        assert c.send_file(str(tmp_path / "extra.txt"), "127.0.0.1") == 0
        assert c.submit("extra.txt")() == "sent later"
        assert c.send_file(str(tmp_path / "missing.txt"), "127.0.0.1") == -1


def test_file_over_max_file_size_is_a_clear_error(scheduler_factory, node, tmp_path):
    sched = scheduler_factory("--max_file_size", "1k")
    (tmp_path / "big.bin").write_bytes(b"x" * 5000)
    with pytest.raises(ConnectionError, match="max_file_size"):
        shared(sched, node, double, depends=["big.bin"])


def test_cluster_and_node_secrets_are_checked_separately(scheduler_factory, node_factory,
                                                         caplog):
    node = node_factory("-c", "2", "-s", "nodesecret")
    sched = scheduler_factory("--cluster_secret", "clustersecret", "--node_secret",
                              "nodesecret")
    with pytest.raises(ConnectionError, match="secret mismatch"):
        shared(sched, node, double, secret="nodesecret")
    with shared(sched, node, double, secret="clustersecret") as c:
        assert c.submit(3)() == 6
    # a node with another secret refuses the scheduler; the scheduler log says so
    other = node_factory("-c", "1", "-s", "different")
    with shared(sched, other, double, secret="clustersecret") as c:
        job = c.submit(1)
        deadline = time.monotonic() + 20
        while "secret mismatch" not in sched.output() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "secret mismatch" in sched.output()
        c.cancel(job)
    # and a client cannot use the scheduler's port with JobCluster
    with pytest.raises(ConnectionError, match="cannot connect"):
        dispy.SharedJobCluster(double, nodes=["127.0.0.1"], scheduler_node="127.0.0.1",
                               scheduler_port=node.port + 7)


@pytest.fixture
def certfile(tmp_path):
    path = tmp_path / "sskeycert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-keyout", str(path), "-nodes",
         "-out", str(path), "-days", "2", "-subj", "/CN=dispy"],
        check=True, capture_output=True)
    return str(path)


def test_tls_on_both_legs(scheduler_factory, node_factory, certfile, tmp_path):
    node = node_factory("-c", "2", "--certfile", certfile)
    other = tmp_path / "cluster.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-keyout", str(other), "-nodes",
         "-out", str(other), "-days", "2", "-subj", "/CN=cluster"],
        check=True, capture_output=True)
    sched = scheduler_factory("--node_certfile", certfile, "--cluster_certfile", str(other))
    with shared(sched, node, double, certfile=str(other)) as c:
        assert c.submit(21)() == 42
    with pytest.raises(ConnectionError):
        shared(sched, node, double)  # no certificate: the TLS handshake fails


def run_client(sched, node, *args, hold=False):
    argv = [sys.executable, CLIENT, "--scheduler", "127.0.0.1", "--scheduler-port",
            str(sched.port), "--nodes", f"127.0.0.1:{node.port}", *args]
    if hold:
        argv.append("--hold")
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def result_of(proc, timeout=90):
    out, err = proc.communicate(timeout=timeout)
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    assert lines, f"no result; rc={proc.returncode}\n{out}\n{err}"
    return json.loads(lines[-1][7:])


def test_two_programs_at_once_and_a_killed_one_frees_its_cpus(scheduler_factory,
                                                              node_factory):
    node = node_factory("-c", "2")
    sched = scheduler_factory("--zombie_interval", "0.05")  # 3 s
    doomed = run_client(sched, node, "--tag", "K", "--jobs", "4", "--secs", "60", hold=True)
    try:
        assert doomed.stdout.readline().startswith("ready")
        time.sleep(1)  # its jobs occupy both CPUs
        a = run_client(sched, node, "--tag", "A", "--jobs", "10", "--secs", "0.05")
        b = run_client(sched, node, "--tag", "B", "--jobs", "10", "--secs", "0.05")
        time.sleep(1)
        os.killpg(doomed.pid, 9)
        doomed.wait(10)
        for proc, tag in ((a, "A"), (b, "B")):
            res = result_of(proc)
            assert [j["result"][:2] for j in res["jobs"]] == [[tag, i * i] for i in range(10)]
        log = sched.output()
        assert "away for" in log and "closed" in log
    finally:
        if doomed.poll() is None:
            os.killpg(doomed.pid, 9)
            doomed.wait(10)


def test_recover_jobs_of_a_killed_shared_client(scheduler_factory, node_factory, tmp_path):
    node = node_factory("-c", "2")
    sched = scheduler_factory()
    recover = str(tmp_path / "shared.rec")
    doomed = run_client(sched, node, "--tag", "R", "--jobs", "4", "--secs", "1.5",
                        "--recover-file", recover, hold=True)
    try:
        assert doomed.stdout.readline().startswith("ready")
        time.sleep(0.5)
        os.killpg(doomed.pid, 9)
        doomed.wait(10)
    finally:
        if doomed.poll() is None:
            os.killpg(doomed.pid, 9)
            doomed.wait(10)
    # the window between journaling a job and sending it to the scheduler: it runs
    # now, through the scheduler (never on the nodes directly)
    row = journaled_but_never_sent(recover)
    jobs = dispy.recover_jobs(recover, timeout=60)
    lost = [j for j in jobs if j.id == "lost"]
    assert len(lost) == 1 and lost[0].status == dispy.DispyJob.Finished
    assert sorted(j.result[1] for j in jobs if j.id != "lost") == [0, 1, 4, 9]
    assert all(j.status == dispy.DispyJob.Finished for j in jobs)
    assert [lost[0].result[:2]] == [j.result[:2] for j in jobs if str(j.id) == row[4]]
    assert not os.path.exists(recover)
    # the scheduler closed the computation: the node serves a new client at once
    with shared(sched, node, double) as c:
        assert c.submit(2)() == 4


def test_node_lost_reentrant_jobs_move_others_are_cancelled(scheduler_factory,
                                                            node_factory):
    n1 = node_factory("-c", "1")
    n2 = node_factory("-c", "1")
    sched = scheduler_factory("--pulse_interval", "1")
    nodes = [dispy.NodeAllocate("127.0.0.1", n.port) for n in (n1, n2)]
    with shared(sched, n1, slow, nodes=nodes, reentrant=True) as re, \
            shared(sched, n1, slow, nodes=nodes) as plain:
        while len(re.status().nodes) < 2 or len(plain.status().nodes) < 2:
            time.sleep(0.05)
        jobs = [re.submit(1.5) for _ in range(2)] + [plain.submit(1.5) for _ in range(2)]
        for job in jobs:
            wait_started(job)
        victims = [j for j in jobs if j.ip_addr and (j._key or (None, None))[1] == n1.port]
        n1.stop()
        for job in jobs:
            job()
        for job in jobs:
            if job in victims and job._cluster is plain._state:
                assert job.status == dispy.DispyJob.Cancelled
                assert "lost" in job.exception
            else:
                assert job.status == dispy.DispyJob.Finished, job.exception


def test_options_and_config_file(tmp_path):
    cfg = tmp_path / "sched.cfg"
    run = subprocess.run([sys.executable, "-m", "dispy.dispyscheduler", "--cluster_secret",
                          "s3", "--policy", "fair", "--zombie_interval", "5",
                          "--save_config", str(cfg)], capture_output=True, text=True,
                         timeout=30)
    assert run.returncode == 0, run.stderr
    text = cfg.read_text()
    assert "[dispyscheduler]" in text and 'policy = "fair"' in text
    from dispy.scheduler import options
    opts = options.parse(["--config", str(cfg), "--zombie_interval", "7"])
    assert opts.cluster_secret == "s3" and opts.policy == "fair"
    assert opts.zombie_interval == 7.0
    opts = options.parse(["--dispy_port", "9700"])
    assert (opts.port, opts.node_port, opts.scheduler_port) == (9700, 9701, 9702)
    for bad in (["--pulse_interval", "0"], ["--policy", "random"], ["--zombie_interval", "0"],
                ["--node_keyfile", "k.pem"]):
        run = subprocess.run([sys.executable, "-m", "dispy.dispyscheduler", *bad],
                             capture_output=True, text=True, timeout=30)
        assert run.returncode == 2 and "error" in run.stderr


def test_port_in_use_is_a_clear_error(scheduler_factory, tmp_path):
    sched = scheduler_factory()
    run = subprocess.run([sys.executable, "-m", "dispy.dispyscheduler", "-i", "127.0.0.1",
                          "--scheduler_port", str(sched.port), "--daemon",
                          "--dest_path_prefix", str(tmp_path)],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 1
    assert f"cannot listen on TCP port {sched.port}" in run.stderr
    assert not (tmp_path / "dispy").exists()  # a start that failed leaves nothing behind


class Gives(dispy.NodeAllocate):
    def __init__(self, host, port, give):
        super().__init__(host, port)
        self.give = give

    def allocate(self, cluster, ip_addr, name, cpus, avail_info=None, platform=""):
        return min(cpus, self.give)


def test_each_matching_nodeallocate_is_asked_through_the_scheduler(scheduler_factory, node):
    """Through dispyscheduler too, a NodeAllocate that says 0 leaves the node to the next
    matching one (the scheduler asks the program, which asks them in turn)."""
    sched = scheduler_factory()
    allocs = [Gives("127.0.0.1", node.port, 0), Gives("127.0.0.*", node.port, 1)]
    with shared(sched, node, double, nodes=allocs) as cluster:
        assert [j() for j in [cluster.submit(i) for i in range(3)]] == [0, 2, 4]


def test_custom_nodeallocate_after_a_plain_one_that_gives_none(scheduler_factory, node):
    """A plain pattern that leaves no CPU (cpus=-64), then an overridden allocate(): the
    scheduler asks the program for the second one (it decided plain ones itself and
    never asked the program when the first one was plain)."""
    sched = scheduler_factory()
    custom = Gives("127.0.0.*", node.port, 1)
    asked = []
    custom.allocate = lambda *args, **kw: asked.append(args[1]) or 1  # type: ignore
    allocs = [dispy.NodeAllocate("127.0.0.1", node.port, cpus=-64), custom]
    with shared(sched, node, double, nodes=allocs) as cluster:
        assert [j() for j in [cluster.submit(i) for i in range(3)]] == [0, 2, 4]
    assert asked == ["127.0.0.1"]  # the program's allocate() decided


def test_stopped_program_is_a_zombie_for_the_scheduler(scheduler_factory, node_factory):
    """A program connected but stopped (SIGSTOP) answers no pulse: after
    --zombie_interval the scheduler closes its computations (as for a program that went
    away), so the node it held runs another program's job."""
    node = node_factory("-c", "1", "-d")
    sched = scheduler_factory("--zombie_interval", "0.05", "--msg_timeout", "1")  # 3 s
    doomed = run_client(sched, node, "--tag", "K", "--jobs", "1", "--secs", "60", hold=True)
    try:
        assert doomed.stdout.readline().startswith("ready")
        node.wait_for("queued", timeout=30)  # its job holds the node's one CPU
        os.killpg(doomed.pid, signal.SIGSTOP)
        with shared(sched, node, double) as cluster:
            job = cluster.submit(21)
            assert job() == 42, job.exception
        assert "silent for" in sched.output()
        assert "are closed and their jobs cancelled" in sched.output()
    finally:
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait(10)


def test_program_gives_up_on_a_hung_scheduler(scheduler_factory, node, monkeypatch):
    """A scheduler connected but stopped (SIGSTOP) sends no pulse: the program presumes
    it gone (after 5 pulses), tries to reconnect for the grace time, then the job ends
    Abandoned with the reason; job() returns."""
    from dispy.client import scheduler_link

    monkeypatch.setattr(scheduler_link, "SCHEDULER_GRACE", 2.0)
    monkeypatch.setattr(dispy.config, "MsgTimeout", 1.0)
    sched = scheduler_factory("--zombie_interval", "0.05")  # pulses every 0.6 s
    cluster = shared(sched, node, slow)
    try:
        job = cluster.submit(60)
        wait_started(job)
        os.kill(sched.proc.pid, signal.SIGSTOP)
        assert job() is None
        assert job.status == dispy.DispyJob.Abandoned and "unreachable" in job.exception
    finally:
        os.kill(sched.proc.pid, signal.SIGCONT)
        cluster.close(timeout=5, terminate=True)


def test_job_file_over_the_schedulers_max_file_size_ends_the_job(scheduler_factory, node):
    """A dispy_job_depends file the scheduler refuses (--max_file_size): the job ends
    Terminated with the reason, not Finished without its file; later jobs run."""
    sched = scheduler_factory("--max_file_size", "1k")
    big = sched.prefix / "big.dat"
    big.write_bytes(b"x" * 5000)
    with shared(sched, node, double) as cluster:
        job = cluster.submit(1, dispy_job_depends=[str(big)])
        assert job() is None and job.status == dispy.DispyJob.Terminated
        assert "max_file_size" in job.exception
        assert cluster.submit(2)() == 4


def test_scheduler_sigterm_ends_jobs_and_exits_cleanly(scheduler_factory, node):
    """SIGTERM with a program connected: its running job ends with the reason, the
    scheduler exits 0, and its journal is written to the end (no 'not written')."""
    sched = scheduler_factory()
    cluster = shared(sched, node, slow)
    try:
        job = cluster.submit(60)
        wait_started(job)
        sched.proc.send_signal(signal.SIGTERM)
        assert job() is None and job.status in (dispy.DispyJob.Cancelled,
                                                dispy.DispyJob.Terminated)
        assert sched.proc.wait(30) == 0
        out = sched.output()
        assert "dispyscheduler stopped" in out and "not written" not in out, out
    finally:
        cluster.close(timeout=5, terminate=True)


def cleanup_that_fails():
    raise RuntimeError("cleanup boom")


def test_a_cleanup_that_fails_is_told_to_the_program_through_the_scheduler(
        scheduler_factory, node, caplog):
    """A cleanup function that raises on a node: dispyscheduler logs it and passes it on
    with the computation's end, and the program logs it."""
    sched = scheduler_factory()
    cluster = shared(sched, node, double, cleanup=cleanup_that_fails)
    assert cluster.submit(2)() == 4
    cluster.close(timeout=30)
    assert "cleanup of 'double' failed: RuntimeError: cleanup boom" in caplog.text
    sched.wait_for("cleanup of")
