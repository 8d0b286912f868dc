"""dispynode for operators, through the real command line: configuration files,
announcements, zombie clients, restarts, client shutdown, service windows, --serve,
several nodes on one host, the files layout and the container recipe."""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from conftest import free_port, wait_started

import dispy
from dispy.wire import discovery
from dispy.wire.discoverymsg import NodeAnnouncement

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parents[2]


def run_node(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dispy.dispynode", "--daemon", *args],
                          capture_output=True, text=True, timeout=30)


def until(predicate, what: str, timeout: float = 30.0) -> None:
    """Wait for a state (never a duration)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def cluster_for(computation, *nodes, **kw) -> dispy.JobCluster:
    return dispy.JobCluster(computation, nodes=[("127.0.0.1", n.port) for n in nodes],
                            port=0, **kw)


def node_name(x):
    return dispy_node_name, x  # noqa: F821


def wait_for_file(path, result=None):
    """A job that says it started, then runs until the test creates ``path``."""
    dispy_provisional_result("started")  # noqa: F821
    while not os.path.exists(path):
        time.sleep(0.02)
    return result if result is not None else dispy_node_name  # noqa: F821


# ---- configuration files ----------------------------------------------------------------


def options_line(node) -> str:
    """The node's effective options (logged with -d), without what differs per run."""
    line = re.search(r"options: (.*)", node.output()).group(1)
    return re.sub(r"(node_port|dest_path_prefix|config_file)=[^,]*, ", "", line)


def test_saved_config_gives_the_same_node(node_factory, tmp_path, monkeypatch):
    argv = ["-c", "1", "-s", "s3cret", "--zombie_interval", "10", "--max_file_size", "10m",
            "--service_start", "17:00", "--service_stop", "6:00", "--service_end", "8:00",
            "--ping_interval", "30", "--client_shutdown", "-d"]
    cfg = tmp_path / "node.cfg"
    res = run_node(*argv, "--name", "here-only", "--ext_ip_addr", "10.1.2.3",
                   "--save_config", str(cfg))
    assert res.returncode == 0, res.stderr
    text = cfg.read_text()
    assert "here-only" not in text and "10.1.2.3" not in text
    assert 'secret = "s3cret"' in text and 'service_end = "8:00"' in text

    clock = tmp_path / "clock"
    set_clock(clock, 18, 0)  # in the service window
    monkeypatch.setenv("DISPY_NODE_CLOCK_FILE", str(clock))
    direct = node_factory(*argv)
    loaded = node_factory("--config", str(cfg))
    assert options_line(loaded) == options_line(direct)
    assert "zombie_interval=10.0" in options_line(loaded)
    assert f"options from {cfg}" in loaded.output()
    # and the node works with the secret from the file
    cluster = cluster_for(node_name, loaded, secret="s3cret")
    try:
        assert cluster.submit(1)()[1] == 1
    finally:
        cluster.close(timeout=10, terminate=True)


def test_save_config_to_stdout_and_command_line_wins(tmp_path):
    res = run_node("-c", "1", "-i", "127.0.0.1", "--serve", "2", "--save_config")
    assert res.returncode == 0 and res.stdout.startswith("# dispynode configuration")
    assert "[dispynode]" in res.stdout and "serve = 2" in res.stdout
    assert "127.0.0.1" not in res.stdout and "secret" not in res.stdout
    cfg = tmp_path / "node.cfg"
    cfg.write_text(res.stdout)
    res = run_node("--config", str(cfg), "--serve", "5", "--save_config")
    assert "serve = 5" in res.stdout and "cpus = 1" in res.stdout


def test_bad_config_and_service_options_are_clear_errors(tmp_path):
    cfg = tmp_path / "bad.cfg"
    cfg.write_text("cpus = __import__('os').getpid()\n")
    res = run_node("--config", str(cfg))
    assert res.returncode == 2 and str(cfg) in res.stderr and "line 1" in res.stderr
    res = run_node("--config", str(tmp_path / "missing.cfg"))
    assert res.returncode == 2 and "cannot read" in res.stderr
    res = run_node("--service_start", "17:00")
    assert res.returncode == 2 and "needs --service_stop or --service_end" in res.stderr
    res = run_node("--service_start", "17:00", "--service_stop", "9:00",
                   "--service_end", "8:00")
    assert res.returncode == 2 and "comes after --service_end" in res.stderr
    res = run_node("--service_start", "5pm", "--service_end", "8:00")
    assert res.returncode == 2 and "HH:MM" in res.stderr


# ---- announcements -----------------------------------------------------------------------


def test_scheduler_node_gets_announcements_with_ext_ip_addr(node_factory):
    listen_port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", listen_port))
        sock.settimeout(20)
        node = node_factory("--scheduler_node", "127.0.0.1", "--scheduler_port",
                            str(listen_port), "--ext_ip_addr", "10.9.8.7",
                            "--ping_interval", "0.2")
        seen = []
        while len(seen) < 3:  # the one at start, then on --ping_interval
            data, _ = sock.recvfrom(discovery.MAX_DATAGRAM)
            seen.append(discovery.decode(data))
    for msg in seen:
        assert isinstance(msg, NodeAnnouncement) and msg.port == node.port
        assert msg.ip_addr == "10.9.8.7" and not msg.busy_with


# ---- zombie clients ----------------------------------------------------------------------

ZOMBIE_CLIENT = textwrap.dedent("""
    import sys, time, dispy
    def job(path, done):
        dispy_provisional_result("started")
        while not os.path.exists(path):
            time.sleep(0.02)
        open(done, "w").close()
        return 1
    c = dispy.JobCluster(job, nodes=[("127.0.0.1", int(sys.argv[1]))], port=0)
    j = c.submit(sys.argv[2], sys.argv[3])
    while j.status != dispy.DispyJob.ProvisionalResult:
        time.sleep(0.02)
    print("started", flush=True)
    time.sleep(600)
""")


@pytest.mark.parametrize("silence", ["killed", "stopped"])
def test_zombie_client_is_released_after_its_jobs_finish(node_factory, tmp_path, silence):
    """A client killed without a goodbye, or stopped (SIGSTOP: connected, but it answers
    no pulse, the spec's "no communication from it for n minutes"), is a zombie: its
    running job finishes, then the node is released for another client."""
    node = node_factory("-c", "1", "--zombie_interval", "0.02", "--msg_timeout", "1")
    script = tmp_path / "client.py"
    script.write_text(ZOMBIE_CLIENT)
    go, done = tmp_path / "go", tmp_path / "done"
    client = subprocess.Popen([sys.executable, str(script), str(node.port), str(go),
                               str(done)], stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout.readline().strip() == "started"
        if silence == "killed":
            client.kill()  # SIGKILL: no goodbye to the node
            client.wait()
        else:
            client.send_signal(signal.SIGSTOP)
        node.wait_for("the node is freed after its 1 running job(s) finish", timeout=30)
        assert not done.exists()  # the zombie's job was not killed...
        go.touch()
        node.wait_for("releasing the node")
        assert done.exists()  # ...it finished first
        cluster = cluster_for(node_name, node)
        try:
            assert cluster.submit(2)()[1] == 2  # another client gets the node
        finally:
            cluster.close(timeout=10, terminate=True)
    finally:
        client.kill()
        client.wait()


def test_live_idle_client_keeps_the_node(node_factory):
    """A connected client that runs no job for several zombie intervals answers the
    node's pulses (which come at least five times per --zombie_interval, each one a
    DispyNode.AvailInfo event for the program), so it is not presumed gone."""
    # a connected client is presumed gone after max(1.2 s, 2 x 3 s) without an answer
    node = node_factory("-c", "1", "--zombie_interval", "0.02", "--msg_timeout", "3")
    pulses = threading.Semaphore(0)

    def status(state, dnode, job):
        if state == dispy.DispyNode.AvailInfo:
            pulses.release()

    cluster = cluster_for(node_name, node, cluster_status=status)
    try:
        assert cluster.submit(1)()[1] == 1
        for _ in range(8):  # at least a second apart: past the 6 s
            assert pulses.acquire(timeout=30)
        assert cluster.submit(2)()[1] == 2
        assert "presumed gone" not in node.output()
    finally:
        cluster.close(timeout=10, terminate=True)


# ---- restarts ---------------------------------------------------------------------------


def test_kill_9_then_restart_without_and_with_clean(node_factory, tmp_path):
    node = node_factory("-c", "1")
    root = node.prefix / "dispy" / f"node-{node.port}"
    cluster = cluster_for(wait_for_file, node, cleanup=False)
    try:
        job = cluster.submit(str(tmp_path / "never"))
        wait_started(job)
        leftovers = list((root / "clients").iterdir())
        assert leftovers
        node.stop(signal.SIGKILL)
    finally:
        cluster.close(timeout=0, terminate=True)
    assert (root / "node.pid").exists()  # a stale file of the dead node...
    again = node_factory("-c", "1", port=node.port)  # ...does not stop a restart
    assert "is gone; taking over" in again.output()
    assert all(p.exists() for p in leftovers)  # without --clean earlier files stay
    cluster = cluster_for(node_name, again)
    try:
        assert cluster.submit(3)()[1] == 3
    finally:
        cluster.close(timeout=10, terminate=True)
    res = run_node("-i", "127.0.0.1", "-p", str(node.port), "--dest_path_prefix",
                   str(node.prefix))
    assert res.returncode == 1 and "another dispynode (PID" in res.stderr
    again.stop(signal.SIGKILL)
    cleaned = node_factory("-c", "1", "--clean", port=node.port)
    cleaned.wait_for("--clean: removed files of earlier runs")
    assert not any(p.exists() for p in leftovers)


# ---- dispynode_shutdown ------------------------------------------------------------------


def shutdown_in_cleanup():
    return dispynode_shutdown()  # noqa: F821


def shutdown_in_job(x):
    return dispynode_shutdown()  # noqa: F821


def test_client_shutdown_quits_the_node_after_close(node_factory):
    node = node_factory("-c", "1", "--client_shutdown")
    cluster = cluster_for(shutdown_in_job, node, cleanup=shutdown_in_cleanup)
    try:
        assert cluster.submit(1)() == -1  # only cleanup may call it
        assert node.proc.poll() is None
        assert "works only in a cluster's cleanup" in node.output()
    finally:
        cluster.close(timeout=10, terminate=True)
    assert node.proc.wait(20) == 0
    assert "called dispynode_shutdown()" in node.output()


def test_client_shutdown_is_refused_without_the_option(node_factory):
    node = node_factory("-c", "1")
    cluster = cluster_for(node_name, node, cleanup=shutdown_in_cleanup)
    try:
        assert cluster.submit(1)()[1] == 1
    finally:
        cluster.close(timeout=10, terminate=True)
    node.wait_for("dispynode_shutdown() refused: the node was not started with"
                  " --client_shutdown")
    cluster = cluster_for(node_name, node)
    try:
        assert cluster.submit(2)()[1] == 2  # still serving
    finally:
        cluster.close(timeout=10, terminate=True)
    assert node.proc.poll() is None


# ---- service windows ---------------------------------------------------------------------


def set_clock(path: Path, hh: int, mm: int, ss: int = 0, days: int = 0) -> None:
    """Make the node's clock read hh:mm:ss (``days`` later than today) from now on."""
    now = time.time()
    lt = time.localtime(now)
    target = time.mktime((lt.tm_year, lt.tm_mon, lt.tm_mday + days, hh, mm, ss, 0, 0, -1))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(repr(target - now))
    os.replace(tmp, path)


def node_cpus(cluster) -> list[int]:
    return [n.cpus for n in cluster.status().nodes]


def test_service_window_across_midnight(node_factory, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(dispy.config, "StallReportInterval", 0.5)
    clock = tmp_path / "clock"
    set_clock(clock, 23, 58, 30)
    monkeypatch.setenv("DISPY_NODE_CLOCK_FILE", str(clock))
    node = node_factory("-c", "1", "--service_start", "23:59", "--service_stop", "00:00",
                        "--service_end", "00:01")
    node.wait_for("service window: outside service hours (closed; opens at 23:59)")
    cluster = cluster_for(wait_for_file, node)
    try:
        job1 = cluster.submit(str(tmp_path / "never"))
        until(lambda: "outside service hours" in caplog.text, "the client's stall report")
        assert job1.status == dispy.DispyJob.Created

        set_clock(clock, 23, 59)  # the window opens: the job runs
        node.wait_for("service window: in service hours until 00:00")
        wait_started(job1)

        set_clock(clock, 0, 0, days=1)  # past midnight: stop accepting, job1 goes on
        node.wait_for("not accepting jobs; opens at 23:59")
        until(lambda: node_cpus(cluster) == [0], "the client to learn the node has 0 CPUs")
        job2 = cluster.submit(str(tmp_path / "go"), "second")
        assert job1.status == dispy.DispyJob.ProvisionalResult

        set_clock(clock, 0, 1, days=1)  # the end: running jobs are killed
        assert job1() is None
        assert job1.status == dispy.DispyJob.Terminated
        assert "service window ended" in job1.exception
        node.wait_for("killed at service end")
        assert job2.status == dispy.DispyJob.Created

        (tmp_path / "go").touch()
        set_clock(clock, 23, 59, days=1)  # the next evening it opens again
        assert job2() == "second"
    finally:
        cluster.close(timeout=10, terminate=True)


def blocking_or_when(arg, clock_path, go):
    """"block": say the pid, then run until ``go`` exists; else the node's time of day
    (its test clock) as (hour, minute) when the job ran."""
    if arg == "block":
        dispy_provisional_result(os.getpid())  # noqa: F821
        while not os.path.exists(go):
            time.sleep(0.02)
        return "blocked"
    offset = float(open(clock_path).read())
    lt = time.localtime(time.time() + offset)
    return lt.tm_hour, lt.tm_min


def test_jobs_sent_ahead_to_a_dead_job_process_wait_for_service_hours(
        node_factory, tmp_path, monkeypatch, no_lanes):
    """Jobs sent ahead to a busy job process that then dies go back to the queue; outside
    service hours they go back to the client instead of starting on a new process (and
    a reentrant cluster runs them when the node opens again)."""
    clock = tmp_path / "clock"
    set_clock(clock, 23, 0)  # an hour of the node's clock before it stops
    monkeypatch.setenv("DISPY_NODE_CLOCK_FILE", str(clock))
    node = node_factory("-c", "1", "-d", "--service_start", "23:00", "--service_stop", "00:00",
                        "--service_end", "00:02")
    node.wait_for("service window: accepts jobs from 23:00")
    go = str(tmp_path / "go")
    cluster = cluster_for(blocking_or_when, node, reentrant=True)
    try:
        for i in range(20):  # one at a time: short jobs, none sent ahead (nor logged)
            assert cluster.submit(i, str(clock), go)()[0] == 23
        block = cluster.submit("block", str(clock), go)
        until(lambda: block.status == dispy.DispyJob.ProvisionalResult, "the job to start")
        pid = block.result
        quick = [cluster.submit(i, str(clock), go) for i in range(3)]
        until(lambda: node.output().count(f"sent ahead to job process {pid}") >= 3,
              "three jobs sent ahead to the busy job process")

        set_clock(clock, 0, 0, days=1)  # stop accepting jobs
        node.wait_for("not accepting jobs; opens at 23:00")
        os.kill(pid, signal.SIGKILL)
        assert block() is None and block.status == dispy.DispyJob.Terminated
        back = (dispy.DispyJob.Created, dispy.DispyJob.Finished)  # refused, or (wrongly) run
        until(lambda: all(job.status in back for job in quick), "the node to settle them")

        set_clock(clock, 23, 0, days=1)  # the next evening it opens again
        node.wait_for("service window: in service hours until 00:00")
        assert [job()[0] for job in quick] == [23] * 3  # none ran while stopped
    finally:
        cluster.close(timeout=10, terminate=True)


def windowed_node(node_factory, tmp_path, monkeypatch):
    """A 1-CPU node "windowed" in service from 11:00 to 12:30, its clock at 12:00 (move
    it with ``set_clock``): (node, clock file)."""
    clock = tmp_path / "clock"
    set_clock(clock, 12, 0)
    monkeypatch.setenv("DISPY_NODE_CLOCK_FILE", str(clock))
    node = node_factory("-c", "1", "--name", "windowed", "--service_start", "11:00",
                        "--service_end", "12:30")
    monkeypatch.delenv("DISPY_NODE_CLOCK_FILE")
    return node, clock


def test_service_end_resubmits_reentrant_jobs_elsewhere(node_factory, tmp_path, monkeypatch):
    windowed, clock = windowed_node(node_factory, tmp_path, monkeypatch)
    other_port = free_port()  # its node starts later, so the job starts on "windowed"
    statuses: list[int] = []
    cluster = dispy.JobCluster(wait_for_file, port=0, reentrant=True,
                               cluster_status=lambda st, node, job: job is not None
                               and statuses.append(st),  # (the job's every change)
                               nodes=[("127.0.0.1", windowed.port), ("127.0.0.1", other_port)])
    try:
        job = cluster.submit(str(tmp_path / "go"))
        wait_started(job)
        node_factory("-c", "1", "--name", "always", port=other_port)
        set_clock(clock, 12, 30)  # the window ends on "windowed": its job is killed
        windowed.wait_for("killed at service end")
        until(lambda: statuses.count(dispy.DispyJob.ProvisionalResult) == 2,
              "the job to start again on the other node")
        first = statuses.index(dispy.DispyJob.ProvisionalResult)
        assert dispy.DispyJob.Created in statuses[first:]  # resubmitted, not ended
        (tmp_path / "go").touch()
        assert job() == "always"
        assert job.status == dispy.DispyJob.Finished
    finally:
        cluster.close(timeout=10, terminate=True)


# ---- --serve, --daemon, several nodes on one host ----------------------------------------


def test_serve_1_quits_after_its_client(node_factory):
    node = node_factory("-c", "1", "--serve", "1")
    cluster = cluster_for(node_name, node)
    try:
        assert [cluster.submit(i)()[1] for i in range(3)] == [0, 1, 2]
        assert node.proc.poll() is None
    finally:
        cluster.close(timeout=10, terminate=True)
    assert node.proc.wait(20) == 0
    assert "served 1 client(s) as asked by --serve; quitting" in node.output()


def test_serve_0_quits_at_once(tmp_path):
    res = run_node("-i", "127.0.0.1", "-p", str(free_port()), "--dest_path_prefix",
                   str(tmp_path), "--serve", "0")
    assert res.returncode == 0 and "--serve 0" in res.stderr


def test_daemon_reads_no_commands_even_on_a_terminal(tmp_path):
    master, slave = pty.openpty()
    port = free_port()
    log = tmp_path / "daemon.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dispy.dispynode", "-i", "127.0.0.1", "-p", str(port),
             "--dest_path_prefix", str(tmp_path), "-c", "1", "--daemon"],
            stdin=slave, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    os.close(slave)
    try:
        until(lambda: "serving" in log.read_text(), "the node to start")
        os.write(master, b"quit\n")  # ignored: no menu
        proc.send_signal(signal.SIGINT)  # finish running jobs (none), then exit
        assert proc.wait(20) == 0
        assert "Enter" not in log.read_text() and "will quit after 0" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def test_two_nodes_on_one_host(node_factory):
    a = node_factory("-c", "1", "--name", "node-a")
    b = node_factory("-c", "1", "--name", "node-b")
    assert a.prefix != b.prefix or a.port != b.port
    go = Path("go").resolve()
    cluster = cluster_for(wait_for_file, a, b)
    try:
        jobs = [cluster.submit(str(go)) for _ in range(2)]
        for job in jobs:
            wait_started(job)  # one CPU each: both nodes are running one job
        go.touch()
        assert sorted(job() for job in jobs) == ["node-a", "node-b"]
    finally:
        cluster.close(timeout=10, terminate=True)


def test_same_prefix_two_ports_keep_separate_directories(node_factory, tmp_path):
    shared = tmp_path / "shared"
    ports = [free_port(), free_port()]
    for port in ports:
        node_factory("-c", "1", "--dest_path_prefix", str(shared), port=port)
    for port in ports:
        assert (shared / "dispy" / f"node-{port}" / "node.pid").exists()


# ---- files layout -----------------------------------------------------------------------


def where_am_i(x):
    return dispy_job_path, sorted(os.listdir(dispy_job_path))  # noqa: F821


def test_dest_path_prefix_layout_and_cleanup(node_factory, tmp_path):
    node = node_factory("-c", "1")
    data = tmp_path / "data.txt"
    data.write_text("x")
    clients = node.prefix / "dispy" / f"node-{node.port}" / "clients"

    cluster = cluster_for(where_am_i, node, depends=[str(data)])
    try:
        path, files = cluster.submit(1)()
    finally:
        cluster.close(timeout=10, terminate=True)
    assert Path(path).parent.parent == clients and "data.txt" in files
    assert not Path(path).exists() and not Path(path).parent.exists()  # removed at close

    cluster = cluster_for(where_am_i, node, depends=[str(data)], dest_path="keep/here",
                          cleanup=False)
    try:
        path, files = cluster.submit(1)()
    finally:
        cluster.close(timeout=10, terminate=True)
    dest = node.prefix / "dispy" / f"node-{node.port}" / "dest"
    assert Path(path) == dest / "127.0.0.1" / "keep" / "here"  # by the client's address
    assert (Path(path) / "data.txt").read_text() == "x"  # kept: cleanup=False

    # cleanup=True: the whole dest_path goes, with what the jobs made in it
    cluster = cluster_for(make_files, node, depends=[str(data)], dest_path="keep/here")
    try:
        assert cluster.submit(1)() == ["data.txt", "made.txt", "sub"]
    finally:
        cluster.close(timeout=10, terminate=True)
    assert not (dest / "127.0.0.1").exists()


def make_files(x):
    os.makedirs("sub")
    with open("made.txt", "w") as fh, open(os.path.join("sub", "deeper.txt"), "w") as fh2:
        fh.write("y")
        fh2.write("z")
    return sorted(os.listdir("."))


KEEPING_CLIENT = textwrap.dedent("""
    import os, sys, dispy
    def job(x):
        st = os.stat("data.bin")
        return st.st_ino, st.st_size
    c = dispy.JobCluster(job, nodes=[("127.0.0.1", int(sys.argv[1]))], port=0,
                         depends=[sys.argv[2]], dest_path="reuse", cleanup=False)
    print("found", *c.submit(1)(), flush=True)
    c.close()
""")


def test_dest_path_files_are_kept_for_the_next_run(node_factory, tmp_path):
    """The spec's "same dest_path along with cleanup=False": a second run of a program
    finds the files the first one sent and sends them no more (the node's copy is the
    same file, not a new one); a changed file is sent again."""
    node = node_factory("-c", "1")
    data = tmp_path / "data.bin"
    data.write_bytes(b"d" * 100_000)
    script = tmp_path / "client.py"
    script.write_text(KEEPING_CLIENT)

    def run() -> list[str]:
        out = subprocess.run([sys.executable, str(script), str(node.port), str(data)],
                             capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        return [line for line in out.stdout.splitlines() if line.startswith("found")]

    first, again = run(), run()
    assert first == again and first[0].endswith(" 100000")
    data.write_bytes(b"e" * 50_000)
    changed = run()
    assert changed[0].endswith(" 50000") and changed != first


# ---- containers ---------------------------------------------------------------------------

DOCKER_INSTRUCTIONS = {"ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE",
                       "HEALTHCHECK", "LABEL", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL",
                       "USER", "VOLUME", "WORKDIR"} | {"FROM"}


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, pending = [], ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = pending + line
        pending = ""
        word, _, args = full.strip().partition(" ")
        out.append((word, args.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return out


def test_dockerfile_is_valid_and_runs_dispynode():
    path = Path(dispy.__file__).parent / "data" / "Dockerfile"
    steps = dockerfile_instructions(path.read_text())
    words = [w for w, _ in steps]
    assert set(words) <= DOCKER_INSTRUCTIONS, set(words) - DOCKER_INSTRUCTIONS
    assert all(w.isupper() for w in words)
    first = next(i for i, w in enumerate(words) if w != "ARG")
    assert words[first] == "FROM"  # only ARG may come before FROM
    args = dict(a.split("=", 1) for w, a in steps[:first])
    image = steps[first][1]
    for key, value in args.items():
        image = image.replace("${" + key + "}", value)
    assert re.fullmatch(r"python:3\.\d+-slim", image), image
    for word, arg in steps:
        if word == "RUN":  # the shell script parses
            subprocess.run(["sh", "-n", "-c", arg], check=True)
        elif word == "EXPOSE":
            for port in arg.split():
                number, _, proto = port.partition("/")
                assert 0 < int(number) < 65536 and proto in ("", "tcp", "udp")
    runs = [json.loads(a) for w, a in steps if w in ("CMD", "ENTRYPOINT")]
    assert runs and runs[-1][0] in ("dispynode", "dispynode.py")
    assert "pip install" in " ".join(a for w, a in steps if w == "RUN")


def test_dockerfile_is_shipped_in_the_package(tmp_path):
    """Build the package's files as a wheel holds them and find the Dockerfile the way the
    spec tells users to: os.path.join(os.path.dirname(dispy.__file__), 'data')."""
    src = tmp_path / "src-copy"
    src.mkdir()
    shutil.copy(ROOT / "pyproject.toml", src)
    shutil.copy(ROOT / "README.md", src)
    shutil.copytree(ROOT / "src", src / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    build = tmp_path / "lib"
    setup = ("import sys; sys.argv = ['setup.py', '-q', 'build_py', '--build-lib', "
             f"{str(build)!r}]; from setuptools import setup; setup()")
    subprocess.run([sys.executable, "-c", setup], cwd=src, check=True, capture_output=True,
                   timeout=120)
    probe = ("import os, dispy; print(dispy.__file__); "
             "print(os.path.join(os.path.dirname(dispy.__file__), 'data'))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, check=True, text=True,
                         capture_output=True, env={**os.environ, "PYTHONPATH": str(build)},
                         timeout=60).stdout.split("\n")
    assert out[0].startswith(str(build))
    assert (Path(out[1]) / "Dockerfile").read_text() == (
        ROOT / "src" / "dispy" / "data" / "Dockerfile").read_text()
