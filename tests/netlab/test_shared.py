"""dispyscheduler on its own host, two node hosts, and several client programs at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import NODE_PORT, DispyLan, parse_run
from .lab import Host, netlab_available

pytestmark = [pytest.mark.netlab, pytest.mark.timeout(180)]

_reason = netlab_available()
if _reason:
    pytestmark.append(pytest.mark.skip(reason=_reason))

SCHED_PORT = 51349


class Scheduler:
    def __init__(self, lan: DispyLan, tmp: Path, *extra: str, host: Host | None = None) -> None:
        self.host = host or lan.lab.add_host(f"sched{len(lan.lab.hosts)}")
        self.log = tmp / f"{self.host.name}.log"
        prefix = tmp / self.host.name
        prefix.mkdir()
        argv = [sys.executable, "-m", "dispy.dispyscheduler", "--daemon", "--node_port",
                str(NODE_PORT), "--dest_path_prefix", str(prefix), *extra]
        with open(self.log, "wb") as fh:
            self.proc = self.host.popen(argv, stdout=fh, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        self.wait_for("clients connect to")

    @property
    def ip(self) -> str:
        return self.host.ip

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            assert self.proc.poll() is None, self.output()
            time.sleep(0.05)
        raise AssertionError(f"dispyscheduler never logged {text!r}:\n{self.output()}")


def start_client(lan: DispyLan, sched: Scheduler, *args: str) -> subprocess.Popen:
    argv = lan.client_argv("shared_client.py", "--scheduler", sched.ip, "--scheduler-port",
                           str(SCHED_PORT), "--nodes", lan.wildcard, *args)
    return lan.client.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=lan.workdir, start_new_session=True)


def finish(proc: subprocess.Popen, sched: Scheduler, timeout: float = 120) -> dict:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"client hung:\n{out}\n{err}\n{sched.output()}") from None
    run = parse_run(proc.returncode, out, err)
    assert run.report is not None, run.describe() + sched.output()
    return run.report


def intervals(report: dict) -> list[tuple[str, str, float, float]]:
    """(tag, node ip, start, end) of every job, checking each result on the way."""
    out = []
    for job in report["jobs"]:
        assert job["status"] == 11, job
        tag, square, ip, start, end = job["result"]
        assert square == job["x"] ** 2
        out.append((tag, ip, start, end))
    return out


def test_programs_share_nodes_and_an_exclusive_one_runs_alone(dispy_lan: DispyLan,
                                                              tmp_path: Path) -> None:
    lan = dispy_lan
    sched = Scheduler(lan, tmp_path)
    # A's two long jobs are spread over the two nodes; B's short ones fill the CPUs left
    a = start_client(lan, sched, "--tag", "A", "--jobs", "2", "--secs", "3",
                     "--wait-nodes", "2")
    assert a.stdout.readline().startswith("ready")
    b = start_client(lan, sched, "--tag", "B", "--jobs", "24", "--secs", "0.2")
    assert b.stdout.readline().startswith("ready")
    x = start_client(lan, sched, "--tag", "X", "--jobs", "12", "--secs", "0.2",
                     "--exclusive")
    ra, rb = finish(a, sched), finish(b, sched)
    rx = finish(x, sched)
    ia, ib, ix = intervals(ra), intervals(rb), intervals(rx)
    # A and B ran on the same node at the same time (non-exclusive sharing)
    assert any(pa[1] == pb[1] and pa[2] < pb[3] and pb[2] < pa[3] for pa in ia for pb in ib), \
        sorted(ia + ib, key=lambda iv: iv[2])
    assert {ip for _, ip, _, _ in ia + ib} == {n.ip for n in lan.nodes.values()}
    # X waited until A and B were done, then had both nodes to itself
    assert min(s for _, _, s, _ in ix) >= max(e for _, _, _, e in ia + ib)
    assert {ip for _, ip, _, _ in ix} == {n.ip for n in lan.nodes.values()}
    assert "exclusive computation waits for" in sched.output()


def test_killed_client_does_not_disturb_others_and_its_cpus_are_reused(
        dispy_lan: DispyLan, tmp_path: Path) -> None:
    lan = dispy_lan
    sched = Scheduler(lan, tmp_path, "--zombie_interval", "0.05", "--pulse_interval", "1")
    doomed = start_client(lan, sched, "--tag", "K", "--jobs", "8", "--secs", "120",
                          "--hold")
    assert doomed.stdout.readline().startswith("ready")
    a = start_client(lan, sched, "--tag", "A", "--jobs", "30", "--secs", "0.2")
    time.sleep(1.5)
    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.communicate()
    ia = intervals(finish(a, sched))
    sched.wait_for("away for")
    # once K's jobs were cancelled, A had all 4 CPUs of the two nodes at some point
    late = [iv for iv in ia if iv[2] > min(e for _, _, _, e in ia)]
    assert {ip for _, ip, _, _ in late} == {n.ip for n in lan.nodes.values()}
    b = start_client(lan, sched, "--tag", "B", "--jobs", "8", "--secs", "0.05")
    assert len(intervals(finish(b, sched))) == 8


def make_cert(path: Path, cn: str) -> str:
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-keyout", str(path),
                    "-nodes", "-out", str(path), "-days", "2", "-subj", f"/CN={cn}"],
                   check=True, capture_output=True)
    return str(path)


def test_secrets_checked_separately_and_tls_on_both_legs(dispy_lan_idle: DispyLan,
                                                         tmp_path: Path) -> None:
    lan = dispy_lan_idle
    node_cert = make_cert(tmp_path / "node.pem", "nodes")
    cluster_cert = make_cert(tmp_path / "cluster.pem", "clients")
    for name in lan.nodes:
        lan.start_node(name, "-s", "nodesecret", "--certfile", node_cert)
    sched = Scheduler(lan, tmp_path, "--node_secret", "nodesecret", "--cluster_secret",
                      "clustersecret", "--node_certfile", node_cert, "--cluster_certfile",
                      cluster_cert)
    # a client that knows only the node's secret is refused by the scheduler
    wrong = lan.run_client("shared_client.py", "--scheduler", sched.ip, "--scheduler-port",
                           str(SCHED_PORT), "--nodes", lan.wildcard, "--secret",
                           "nodesecret", "--certfile", cluster_cert, timeout=60)
    assert wrong.returncode == 3 and "secret mismatch" in wrong.stdout, wrong.describe()
    ok = lan.run_client("shared_client.py", "--scheduler", sched.ip, "--scheduler-port",
                        str(SCHED_PORT), "--nodes", lan.wildcard, "--secret",
                        "clustersecret", "--certfile", cluster_cert, "--jobs", "8",
                        timeout=90)
    assert ok.report is not None, ok.describe() + sched.output()
    assert len(intervals(ok.report)) == 8
    # the reverse: a scheduler that gives the nodes the clients' secret is refused by them
    bad = Scheduler(lan, tmp_path, "--node_secret", "clustersecret", "--cluster_secret",
                    "clustersecret", "--node_certfile", node_cert, "--cluster_certfile",
                    cluster_cert)
    proc = start_client(lan, bad, "--secret", "clustersecret", "--certfile", cluster_cert,
                        "--jobs", "1", "--deadline", "8")
    bad.wait_for("secret mismatch", timeout=60)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert "secret mismatch" in lan.node_logs()
