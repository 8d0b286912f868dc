"""Fixtures for dispy-on-a-virtual-LAN tests: a Lab with a client host and node hosts.

``dispy_lan`` gives a Lab whose hosts ``node1`` and ``node2`` each run a dispynode (on
NODE_PORT, with 2 CPUs), plus a host ``client`` with no node to run client programs in.
``dispy_lan_idle`` is the same LAN with no node started yet (tests start them with
``lan.start_node(name)``, e.g. to start one late). Cleanup is the Lab context manager's
job, so every process and namespace goes away even when a test fails; a failed test
also gets every node's log printed with its report.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .lab import Host, Lab, netlab_available

#: Port of every dispynode in the lab (deliberately not the default 51348, so a product
#: that ignores ``-p``/``node_port`` somewhere fails). Clients keep the default 51347,
#: which is where nodes send their announcements.
NODE_PORT = 51448
PROGRAMS = Path(__file__).parent / "programs"
NODE_HOSTS = ("node1", "node2")
#: the client program most lab tests run (programs/discovery_client.py)
CLIENT_PROGRAM = "discovery_client.py"


def wait_for_output(output: Callable[[], str], proc: subprocess.Popen | None, text: str,
                    what: str, timeout: float = 30.0) -> None:
    """Until ``text`` is in ``output()``; fails early when ``proc`` has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in output():
            return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"{what} never logged {text!r}; output:\n{output()}")


@dataclass
class LabNode:
    """A dispynode running (or to be run) in one lab host; output goes to ``log``."""

    host: Host
    port: int
    prefix: Path
    log: Path
    proc: subprocess.Popen | None = None

    @property
    def ip(self) -> str:
        return self.host.ip

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self, *extra: str, wait: bool = True, timeout: float = 30.0) -> LabNode:
        self.prefix.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "dispy.dispynode", "-c", "2", "--daemon",
                "-p", str(self.port), "--dest_path_prefix", str(self.prefix), *extra]
        with open(self.log, "ab") as fh:
            self.proc = self.host.popen(argv, stdout=fh, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        if wait:
            self.wait_for("serving", timeout)
        return self

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        wait_for_output(self.output, self.proc, text, f"dispynode on {self.host.name}",
                        timeout)

    def stop(self, sig: int = signal.SIGKILL, timeout: float = 20.0) -> None:
        """Signal the node's process group and reap it (the Lab would anyway, at exit)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout)


@dataclass
class ClientRun:
    """What a client program did: its exit code, output and parsed ``RESULT`` report."""

    returncode: int | None
    stdout: str
    stderr: str
    report: dict[str, Any] | None

    def describe(self) -> str:
        return (f"client exit code {self.returncode}\n--- client stdout ---\n{self.stdout}"
                f"\n--- client stderr ---\n{self.stderr}")


def parse_run(returncode: int | None, stdout: str, stderr: str) -> ClientRun:
    report = None
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            report = json.loads(line[len("RESULT "):])
    return ClientRun(returncode, stdout, stderr, report)


@dataclass
class DispyLan:
    lab: Lab
    client: Host
    nodes: dict[str, LabNode]
    workdir: Path
    port: int = NODE_PORT
    runs: list[ClientRun] = field(default_factory=list)

    @property
    def wildcard(self) -> str:
        """The lab's subnet as a dispy wildcard, e.g. '10.77.5.*'."""
        net = str(self.lab.subnet.network_address)
        return net.rsplit(".", 1)[0] + ".*"

    def start_node(self, name: str, *extra: str, wait: bool = True) -> LabNode:
        return self.nodes[name].start(*extra, wait=wait)

    def client_argv(self, program: str, *args: str) -> list[str]:
        return [sys.executable, str(PROGRAMS / program), *args]

    def run_client(self, program: str, *args: str, timeout: float = 90.0) -> ClientRun:
        """Run a program from programs/ in the client host and wait for it."""
        try:
            res = self.client.run(self.client_argv(program, *args), capture_output=True,
                                  timeout=timeout, text=True, cwd=self.workdir)
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
            raise AssertionError(f"client program did not finish in {timeout}s\n{out}\n"
                                 f"{self.node_logs()}") from None
        run = parse_run(res.returncode, res.stdout, res.stderr)
        self.runs.append(run)
        return run

    def start_until_submitted(self, name: str, *args: str) -> tuple[subprocess.Popen,
                                                                     Path, Path]:
        """Start a client program (``--until-ip`` style) and wait until it printed
        "submitted"; (process, stdout file, stderr file)."""
        out, err = self.workdir / f"{name}.out", self.workdir / f"{name}.err"
        with open(out, "w") as o, open(err, "w") as e:
            proc = self.client.popen(self.client_argv(CLIENT_PROGRAM, *args), stdout=o,
                                     stderr=e, stdin=subprocess.DEVNULL, cwd=self.workdir,
                                     text=True)
        deadline = time.monotonic() + 60
        while "submitted" not in out.read_text() and proc.poll() is None:
            assert time.monotonic() < deadline, out.read_text() + err.read_text()
            time.sleep(0.05)
        return proc, out, err

    def node_logs(self) -> str:
        return "\n".join(f"--- dispynode {name} ({node.ip}) ---\n{node.output()}"
                         for name, node in self.nodes.items())

    def diagnostics(self) -> str:
        return "\n".join([*(r.describe() for r in self.runs), self.node_logs()])


def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> None:
    """Remember each phase's outcome so fixtures can tell whether the test failed."""
    if call.when == "call":
        item.stash[_FAILED] = call.excinfo is not None


_FAILED = pytest.StashKey[bool]()


def _skip_unless_netlab() -> None:
    reason = netlab_available()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def dispy_lan_idle(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DispyLan]:
    """A LAN with hosts client, node1, node2 and no dispynode running yet."""
    _skip_unless_netlab()
    with Lab() as lab:
        client = lab.add_host("client")
        nodes = {}
        for name in NODE_HOSTS:
            host = lab.add_host(name)
            nodes[name] = LabNode(host, NODE_PORT, tmp_path / name, tmp_path / f"{name}.log")
        workdir = tmp_path / "client"
        workdir.mkdir()
        lan = DispyLan(lab, client, nodes, workdir)
        yield lan
        if request.node.stash.get(_FAILED, False):
            print(f"lab subnet {lab.subnet}\n{lan.node_logs()}")


@pytest.fixture
def dispy_lan(dispy_lan_idle: DispyLan) -> DispyLan:
    """A LAN whose node hosts each run a dispynode that has logged 'serving'."""
    for name in NODE_HOSTS:
        dispy_lan_idle.start_node(name, wait=False)
    for node in dispy_lan_idle.nodes.values():
        node.wait_for("serving")
    return dispy_lan_idle
