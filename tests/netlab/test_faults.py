"""Faults on a real (virtual) LAN: nodes killed, links cut, the client program killed.

Each test runs a client program in the lab's client host, breaks something while its
jobs run, and checks that every job reached exactly one final status, with the right
result when it Finished.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import pytest

from .conftest import ClientRun, DispyLan, parse_run
from .lab import netlab_available

pytestmark = [pytest.mark.netlab, pytest.mark.timeout(150)]

_reason = netlab_available()
if _reason:
    pytestmark.append(pytest.mark.skip(reason=_reason))

FINISHED, CANCELLED = 11, 8


class Client:
    """fault_client.py running in the client host; its stdout is read line by line."""

    def __init__(self, lan: DispyLan, *args: str) -> None:
        self.lan = lan
        ips = ",".join(n.ip for n in lan.nodes.values())
        argv = [*lan.client_argv("fault_client.py", "--nodes", ips, "--node-port",
                                 str(lan.port)), *args]
        self.proc = lan.client.popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, cwd=lan.workdir,
                                     start_new_session=True)
        self.lines: list[str] = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.lines.append("<eof>")
            self.cond.notify_all()

    def wait_line(self, pred, timeout: float = 60) -> str:
        with self.cond:
            ok = self.cond.wait_for(lambda: any(pred(x) for x in self.lines), timeout)
            assert ok, f"client never printed the line waited for:\n{self.lines}"
            return next(x for x in self.lines if pred(x))

    def progress(self, n: int, timeout: float = 60) -> None:
        self.wait_line(lambda x: x.startswith("progress ") and int(x.split()[1]) >= n
                       or x == "<eof>", timeout)

    def finish(self, timeout: float = 120) -> ClientRun:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        stderr = self.proc.stderr.read()
        self.wait_line(lambda x: x == "<eof>", 10)
        return parse_run(self.proc.returncode, "\n".join(self.lines), stderr)


def check(run: ClientRun, lan: DispyLan, jobs: int, allow_cancelled: bool) -> dict:
    detail = run.describe() + "\n" + lan.node_logs()
    assert run.returncode == 0 and run.report is not None, detail
    report = run.report
    assert report["waited"] is True, detail
    assert [j["x"] for j in report["jobs"]] == list(range(jobs)), detail
    counts = {FINISHED: 0, CANCELLED: 0}
    for job in report["jobs"]:
        x = job["x"]
        assert report["finals"].get(str(x)) == 1, f"job {x} final {report['finals'].get(str(x))}"
        if job["status"] == FINISHED:
            assert job["result"][0] == x * x, f"job {x}: {job}"
        else:
            assert allow_cancelled and job["status"] == CANCELLED, f"job {x}: {job}\n{detail}"
            assert "Cancelled" in job["exception"] and job["result"] is None, job
        counts[job["status"]] += 1
    return counts


@pytest.mark.parametrize("reentrant", [True, False])
def test_node_killed_in_the_middle_of_200_jobs(dispy_lan: DispyLan, reentrant: bool) -> None:
    args = ["--jobs", "200", "--secs", "0.05", "--pulse", "1"]
    client = Client(dispy_lan, *args, *(["--reentrant"] if reentrant else []))
    client.wait_line(lambda x: x == "ready")
    client.progress(50)
    dispy_lan.nodes["node1"].stop(signal.SIGKILL)
    run = client.finish()
    counts = check(run, dispy_lan, 200, allow_cancelled=not reentrant)
    if reentrant:
        assert counts[FINISHED] == 200
    else:
        assert counts[CANCELLED] <= 2  # at most the node's 2 running jobs


def cut_link(lan: DispyLan, seconds: float, *args: str) -> ClientRun:
    """Run 40 jobs of 0.5 s with pulse_interval=1 and cut node1's link for ``seconds``."""
    client = Client(lan, "--jobs", "40", "--secs", "0.5", "--pulse", "1", *args)
    client.wait_line(lambda x: x == "ready")
    client.progress(4)
    node1 = lan.nodes["node1"]
    node1.host.link_down()
    time.sleep(seconds)  # the fault itself: the link stays down this long
    node1.host.link_up()
    run = client.finish()
    assert check(run, lan, 40, allow_cancelled=False)[FINISHED] == 40
    return run


def test_short_link_cut_loses_nothing(dispy_lan: DispyLan) -> None:
    run = cut_link(dispy_lan, 2)  # 2 x pulse_interval
    assert "presumed dead" not in run.stderr


def test_long_link_cut_drops_the_node_and_resubmits(dispy_lan: DispyLan) -> None:
    run = cut_link(dispy_lan, 10, "--reentrant")  # 10 x pulse_interval
    assert "presumed dead" in run.stderr


def recover(lan: DispyLan, path: str, *args: str) -> dict:
    code = ("import json, sys, dispy\n"
            f"jobs = dispy.recover_jobs({path!r}{''.join(', ' + a for a in args)})\n"
            "print(json.dumps(sorted([j.id, j.status, j.result] for j in jobs)))\n")
    res = lan.client.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=100, cwd=lan.workdir)
    assert res.returncode == 0, res.stderr + lan.node_logs()
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_client_killed_then_recover_jobs(dispy_lan: DispyLan) -> None:
    jobs = 20  # 4 run on the nodes' CPUs when the client dies; 16 are queued in it
    client = Client(dispy_lan, "--jobs", str(jobs), "--secs", "2", "--hold",
                    "--recover-file", "crash.rec")
    client.wait_line(lambda x: x == "all running")
    client.proc.send_signal(signal.SIGKILL)
    client.finish()
    got = recover(dispy_lan, "crash.rec")
    assert [(x, s) for x, s, _ in got] == [(i, FINISHED) for i in range(jobs)]
    assert all(r[0] == x * x for x, _, r in got)
    again = Client(dispy_lan, "--jobs", "8", "--secs", "0.05")  # the nodes serve a new client
    check(again.finish(), dispy_lan, 8, allow_cancelled=False)


def test_node_restarted_with_undelivered_results(dispy_lan: DispyLan) -> None:
    client = Client(dispy_lan, "--jobs", "4", "--secs", "1", "--hold",
                    "--recover-file", "restart.rec")
    client.wait_line(lambda x: x == "all running")
    client.proc.send_signal(signal.SIGKILL)
    client.finish()
    node1 = dispy_lan.nodes["node1"]
    deadline = time.monotonic() + 30
    while node1.output().count("kept on disk") < 2:
        assert time.monotonic() < deadline, node1.output()
        time.sleep(0.05)
    node1.stop(signal.SIGTERM)
    node1.start()
    node1.wait_for("kept 2 undelivered result(s)")
    got = recover(dispy_lan, "restart.rec")
    assert [(x, s) for x, s, _ in got] == [(i, FINISHED) for i in range(4)], got


def test_node_killed_just_after_its_results_left_keeps_them(dispy_lan: DispyLan) -> None:
    """Results go to disk before the node reports them: a node killed right after
    sending results that never arrived (the client's link is down) still has them."""
    client = Client(dispy_lan, "--jobs", "4", "--secs", "3", "--hold",
                    "--recover-file", "window.rec")
    client.wait_line(lambda x: x == "all running")
    dispy_lan.client.link_down()
    time.sleep(3.3)  # the fault: the jobs end and their results leave into a dead link
    node1 = dispy_lan.nodes["node1"]
    node1.stop(signal.SIGKILL)  # within a second of the results: before, they were lost
    client.proc.send_signal(signal.SIGKILL)
    client.finish()
    dispy_lan.client.link_up()
    node1.start()
    node1.wait_for("undelivered result(s)")
    got = recover(dispy_lan, "window.rec")
    assert [(x, s) for x, s, _ in got] == [(i, FINISHED) for i in range(4)], got
