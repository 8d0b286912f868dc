"""``dispy ssh start|stop`` against real sshd servers in lab hosts, and the SSH tunnel
recipe of README (a client that reaches the nodes only through ``ssh -L``)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import NODE_PORT, DispyLan, LabNode
from .lab import Lab, netlab_available
from .sshd import SSHServer, available, client_options, keypair

pytestmark = [pytest.mark.netlab, pytest.mark.timeout(150)]

_reason = netlab_available() or available()
if _reason:
    pytestmark.append(pytest.mark.skip(reason=_reason))

SECRET = "ssh-lab-secret"


class SSHLan:
    def __init__(self, lab: Lab, tmp: Path) -> None:
        self.lab, self.tmp = lab, tmp
        self.client = lab.add_host("client")
        self.key = keypair(tmp / "client_key")
        self.hosts = [lab.add_host(name) for name in ("node1", "node2")]
        self.servers = [SSHServer(h, tmp / f"sshd-{h.name}", self.key) for h in self.hosts]

    def dispy_ssh(self, *words: str, node_args: tuple[str, ...] = ()) -> \
            subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "dispy", "ssh", *words, *client_options(self.key),
                "--python", sys.executable, "--timeout", "40"]
        if node_args:
            argv += ["--", *node_args]
        return self.client.run(argv, capture_output=True, text=True, timeout=120)

    def home(self, i: int) -> Path:
        return self.tmp / f"sshd-{self.hosts[i].name}" / "home"


@pytest.fixture
def ssh_lan(tmp_path: Path) -> Iterator[SSHLan]:
    with Lab() as lab:
        yield SSHLan(lab, tmp_path)


def _pid(lan: SSHLan, i: int) -> int:
    return int((lan.home(i) / ".dispy" / f"ssh-dispynode-{NODE_PORT}.pid").read_text())


def _alive(pid: int) -> bool:
    try:
        return "dispy.dispynode" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(
            errors="replace")
    except OSError:
        return False


def test_dispy_ssh_starts_nodes_that_run_jobs_and_stops_them(ssh_lan: SSHLan) -> None:
    lan = ssh_lan
    ips = [h.ip for h in lan.hosts]
    node_args = ("-c", "1", "-p", str(NODE_PORT), "-s", SECRET, "--dest_path_prefix",
                 "nodefiles")
    started = lan.dispy_ssh("start", *ips, node_args=node_args)
    assert started.returncode == 0, started
    for ip in ips:
        assert f"{ip}: dispynode" in started.stdout and "serves 1 CPUs" in started.stdout
    pids = [_pid(lan, 0), _pid(lan, 1)]
    assert all(_alive(p) for p in pids)
    log = lan.home(0) / ".dispy" / f"ssh-dispynode-{NODE_PORT}.log"
    assert log.stat().st_mode & 0o077 == 0  # the node's log is private
    # a second start on the same hosts says so and leaves the running nodes alone
    again = lan.dispy_ssh("start", ips[0], node_args=node_args)
    assert again.returncode == 1 and "runs there" in again.stderr, again
    # a real computation on both
    workdir = lan.tmp / "client"
    workdir.mkdir()
    dlan = DispyLan(lan.lab, lan.client, {
        h.name: LabNode(h, NODE_PORT, lan.tmp / h.name, lan.tmp / f"{h.name}.log")
        for h in lan.hosts}, workdir)
    run = dlan.run_client("discovery_client.py", "--nodes", json.dumps(ips), "--node-port",
                          str(NODE_PORT), "--jobs", "10", "--wait-nodes", "2", "--deadline",
                          "40", "--secret", SECRET)
    assert run.returncode == 0 and run.report is not None, run.describe()
    assert {j["ip"] for j in run.report["jobs"]} == set(ips), run.describe()
    assert all(j["status"] == 11 for j in run.report["jobs"]), run.describe()
    stopped = lan.dispy_ssh("stop", *ips, node_args=("-p", str(NODE_PORT)))
    assert stopped.returncode == 0, stopped
    assert stopped.stdout.count("stopped") == 2, stopped
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in pids):
        assert time.monotonic() < deadline, "dispynode still running after dispy ssh stop"
        time.sleep(0.1)


def test_dispy_ssh_reports_each_failure_in_one_line(ssh_lan: SSHLan) -> None:
    lan = ssh_lan
    dead = lan.lab.add_host("nossh")  # no sshd there
    res = lan.dispy_ssh("start", dead.ip, lan.hosts[0].ip, node_args=(
        "-c", "1", "-p", str(NODE_PORT), "--bogus-option"))
    assert res.returncode == 1, res
    assert "Traceback" not in res.stderr, res.stderr
    assert f"{dead.ip}: ssh failed" in res.stderr, res.stderr
    # the node with a bad option died at once: its log says why
    assert f"{lan.hosts[0].ip}: dispynode exited at once" in res.stderr, res.stderr
    assert "bogus" in res.stderr, res.stderr


def test_ssh_start_quotes_hostile_options(ssh_lan: SSHLan) -> None:
    lan = ssh_lan
    canary = lan.tmp / "canary"
    res = lan.dispy_ssh("start", lan.hosts[0].ip, node_args=(
        "-p", str(NODE_PORT), "--dest_path_prefix", "nodefiles",  # not /tmp/dispy
        "--name", f"x; touch {canary}; echo $(touch {canary})"))
    assert not canary.exists(), res
    lan.dispy_ssh("stop", lan.hosts[0].ip, node_args=("-p", str(NODE_PORT)))


def test_ssh_tunnel_recipe(tmp_path: Path) -> None:
    """README's recipe: the client reaches two nodes only through ``ssh -L`` to a
    gateway on their network (the client has no route to it)."""
    with Lab() as outside, Lab() as inside:
        router = inside.add_router(outside, route_there=False)
        client = outside.add_host("client")
        key = keypair(tmp_path / "client_key")
        gateway = inside.add_host("gateway")
        SSHServer(gateway, tmp_path / "sshd-gw", key)
        # the gateway's sshd listens on its inside address; the router forwards port 22
        router.run(["iptables", "-t", "nat", "-A", "PREROUTING", "-d", router.outer_ip, "-p",
                    "tcp", "--dport", "22", "-j", "DNAT", "--to-destination", gateway.ip],
                   check=True, timeout=30)
        router.run(["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "eth1", "-j",
                    "MASQUERADE"], check=True, timeout=30)
        nodes = {}
        for name in ("node1", "node2"):
            nodes[name] = LabNode(inside.add_host(name), NODE_PORT, tmp_path / name,
                                  tmp_path / f"{name}.log").start("-s", SECRET)
        local = {"node1": 51358, "node2": 51368}
        forwards = [a for name, n in nodes.items()
                    for a in ("-L", f"127.0.0.1:{local[name]}:{n.ip}:{NODE_PORT}")]
        tunnel = client.popen(["ssh", "-N", "-i", str(key), "-o", "StrictHostKeyChecking=no",
                               "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
                               "-o", "ExitOnForwardFailure=yes", *forwards, router.outer_ip],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        probe = ("import socket, sys, time\nend = time.monotonic() + 20\n"
                 "while time.monotonic() < end:\n    try:\n"
                 "        socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1).close()\n"
                 "        sys.exit(0)\n    except OSError:\n        time.sleep(0.1)\n"
                 "sys.exit(1)\n")
        for port in local.values():
            assert client.run([sys.executable, "-c", probe, str(port)], timeout=60,
                              capture_output=True).returncode == 0, tunnel.poll()
        workdir = tmp_path / "client"
        workdir.mkdir()
        dlan = DispyLan(inside, client, nodes, workdir)
        spec = [["127.0.0.1", p] for p in local.values()]
        run = dlan.run_client("discovery_client.py", "--nodes", json.dumps(spec),
                              "--node-port", str(NODE_PORT), "--jobs", "10", "--wait-nodes",
                              "2", "--deadline", "40", "--secret", SECRET)
        assert run.returncode == 0 and run.report is not None, dlan.diagnostics()
        jobs = run.report["jobs"]
        assert all(j["status"] == 11 and j["ip"] == "127.0.0.1" for j in jobs), run.describe()
        assert {j["result"][1] for j in jobs} == {n.ip for n in nodes.values()}, run.describe()
