"""Clients reaching nodes on other networks: through a dispynetrelay, and through NAT.

Two subnets joined by a router namespace: broadcasts stay on their own subnet, so a
client on one finds the nodes on the other only through the relay (or by address).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import NODE_PORT, DispyLan, LabNode, wait_for_output
from .lab import Host, Lab, Router, netlab_available
from .test_shared import Scheduler, finish, start_client

pytestmark = [pytest.mark.netlab, pytest.mark.timeout(120)]

_reason = netlab_available()
if _reason:
    pytestmark.append(pytest.mark.skip(reason=_reason))

SECRET = "relay-lab-secret"
CLIENT = "discovery_client.py"


class RelayProc:
    """A dispynetrelay in a lab host, its output in ``log``."""

    def __init__(self, host: Host, log: Path) -> None:
        self.host, self.log = host, log
        self.proc: subprocess.Popen | None = None

    def start(self, *extra: str) -> RelayProc:
        argv = [sys.executable, "-m", "dispy.dispynetrelay", "--daemon", "-d",
                "--node_port", str(NODE_PORT), *extra]
        with open(self.log, "ab") as fh:
            self.proc = self.host.popen(argv, stdout=fh, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        self.wait_for("relaying requests")
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        wait_for_output(self.output, self.proc, text, "dispynetrelay", timeout)


class RoutedLan:
    """``near`` (the client) and ``far`` (node1, node2, relay) joined by ``router``."""

    def __init__(self, near: Lab, far: Lab, router: Router, tmp: Path) -> None:
        self.near, self.far, self.router, self.tmp = near, far, router, tmp
        client = near.add_host("client")
        nodes = {name: LabNode(far.add_host(name), NODE_PORT, tmp / name, tmp / f"{name}.log")
                 for name in ("node1", "node2")}
        workdir = tmp / "client"
        workdir.mkdir()
        self.lan = DispyLan(far, client, nodes, workdir)
        self.relay = RelayProc(far.add_host("relay"), tmp / "relay.log")

    def client_run(self, nodes: list, *extra: str, wait_nodes: int = 2,
                   deadline: float = 40.0) -> dict:
        run = self.lan.run_client(
            CLIENT, "--nodes", json.dumps(nodes), "--node-port", str(NODE_PORT),
            "--jobs", "20", "--wait-nodes", str(wait_nodes), "--deadline", str(deadline),
            *extra, timeout=deadline * 2 + 30)
        detail = f"{self.lan.diagnostics()}\n--- relay ---\n{self.relay.output()}"
        assert run.returncode == 0 and run.report is not None, detail
        run.report["detail"] = detail
        return run.report


@pytest.fixture
def routed(tmp_path: Path) -> Iterator[RoutedLan]:
    with Lab() as near, Lab() as far:
        router = near.add_router(far)
        yield RoutedLan(near, far, router, tmp_path)


def test_client_finds_nodes_on_another_subnet_only_through_the_relay(
        routed: RoutedLan) -> None:
    lan = routed.lan
    for node in lan.nodes.values():
        node.start("-s", SECRET, wait=False)
    for node in lan.nodes.values():
        node.wait_for("serving")
    node_ips = sorted(n.ip for n in lan.nodes.values())
    # the far subnet's wildcard alone: broadcasts do not cross the router
    alone = routed.client_run([lan.wildcard], "--secret", SECRET, deadline=6)
    assert alone["nodes_before_submit"] == [], alone["detail"]
    routed.relay.start("-s", SECRET)
    report = routed.client_run([routed.relay.host.ip, lan.wildcard], "--secret", SECRET)
    detail = report["detail"]
    assert report["nodes_before_submit"] == node_ips, detail
    assert all(j["status"] == 11 for j in report["jobs"]), detail
    assert {j["ip"] for j in report["jobs"]} == set(node_ips), detail
    assert "is a dispynetrelay" in lan.runs[-1].stderr, detail
    assert "Traceback" not in routed.relay.output(), detail


def test_relay_with_a_secret_ignores_unsigned_requests(routed: RoutedLan) -> None:
    lan = routed.lan
    lan.nodes["node1"].start("-s", SECRET)
    routed.relay.start("-s", SECRET)
    report = routed.client_run([routed.relay.host.ip, lan.wildcard], "--secret", "wrong",
                               wait_nodes=1, deadline=6)
    assert report["nodes_before_submit"] == [], report["detail"]
    routed.relay.wait_for("not signed with the relay's secret")


def test_relay_forwards_a_late_nodes_announcement(routed: RoutedLan) -> None:
    """node2 starts after the client asked: its own announcement reaches the client
    through the relay, which remembers who asked."""
    lan = routed.lan
    lan.nodes["node1"].start()
    routed.relay.start()
    proc, out, err = lan.start_until_submitted(
        "late", "--nodes", json.dumps([routed.relay.host.ip, lan.wildcard]), "--node-port",
        str(NODE_PORT), "--jobs", "8", "--wait-nodes", "1", "--until-ip",
        lan.nodes["node2"].ip, "--deadline", "45")
    lan.nodes["node2"].start()
    proc.wait(timeout=90)
    text = out.read_text()
    assert "late_node_used" in text, f"{text}\n{err.read_text()}\n{routed.relay.output()}"


def test_scheduler_asks_a_node_named_with_n_on_another_subnet(routed: RoutedLan,
                                                             tmp_path: Path) -> None:
    """dispyscheduler -n NAME: the name of a node on another network (no broadcast of
    ours reaches it) is looked up and the node asked; it used to be dropped unsent."""
    lan = routed.lan
    node = lan.nodes["node1"]
    node.start()
    sched_host = routed.near.add_host("sched")
    sched_host.name_hosts({"node1.far": node.ip})
    sched = Scheduler(lan, tmp_path, "-n", "node1.far", host=sched_host)
    proc = start_client(lan, sched, "--jobs", "4", "--wait-nodes", "1")
    report = finish(proc, sched)
    assert {j["result"][2] for j in report["jobs"]} == {node.ip}, sched.output()


@pytest.fixture
def natted(tmp_path: Path) -> Iterator[tuple[Lab, Lab, Router]]:
    """``inside`` (routes out through the router) and ``outside`` (no route in)."""
    with Lab() as outside, Lab() as inside:
        router = inside.add_router(outside, route_there=False)
        yield inside, outside, router


def _forward(router: Router, port: int, to: str, snat: str | None = None) -> None:
    """Port forwarding on the router: ``port`` of its outer address goes to ``to``;
    what goes out leaves from the outer address, or from ``snat`` (a NAT whose
    outgoing address is not the one it forwards on, as with an address pool)."""
    for proto in ("tcp", "udp"):
        router.run(["iptables", "-t", "nat", "-A", "PREROUTING", "-d", router.outer_ip, "-p",
                    proto, "--dport", str(port), "-j", "DNAT", "--to-destination", to],
                   check=True, timeout=30)
    if snat:
        router.run(["ip", "addr", "add", f"{snat}/24", "dev", "eth1"], check=True, timeout=30)
        rule = ["-j", "SNAT", "--to-source", snat]
    else:
        rule = ["-j", "MASQUERADE"]
    router.run(["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "eth1", *rule],
               check=True, timeout=30)


def test_node_behind_nat_serves_a_client_outside(natted, tmp_path: Path) -> None:
    inside, outside, router = natted
    node = LabNode(inside.add_host("node1"), NODE_PORT, tmp_path / "n1", tmp_path / "n1.log")
    client = outside.add_host("client")
    _forward(router, NODE_PORT, node.host.ip)
    node.start("-s", SECRET, "--ext_ip_addr", router.outer_ip)
    workdir = tmp_path / "client"
    workdir.mkdir()
    lan = DispyLan(inside, client, {"node1": node}, workdir)
    # the client cannot reach the inside subnet at all: only the router's outer address
    probe = ("import socket, sys\ntry:\n socket.create_connection((sys.argv[1], int(sys.argv[2])),"
             " 2)\nexcept OSError as e:\n print(e.errno)\nelse:\n print('reached')")
    direct = client.run([sys.executable, "-c", probe, node.host.ip, str(NODE_PORT)],
                        capture_output=True, text=True, timeout=30)
    assert direct.returncode == 0 and direct.stdout.strip() != "reached", direct
    via = client.run([sys.executable, "-c", probe, router.outer_ip, str(NODE_PORT)],
                     capture_output=True, text=True, timeout=30)
    assert via.stdout.strip() == "reached", via  # the port forwarding works
    run = lan.run_client(CLIENT, "--nodes", json.dumps([router.outer_ip]), "--node-port",
                         str(NODE_PORT), "--jobs", "10", "--wait-nodes", "1", "--deadline",
                         "40", "--secret", SECRET, timeout=120)
    detail = lan.diagnostics()
    assert run.returncode == 0 and run.report is not None, detail
    assert run.report["nodes_before_submit"] == [router.outer_ip], detail
    assert all(j["status"] == 11 and j["result"][1] == router.outer_ip
               for j in run.report["jobs"]), detail


def _dnat_packets(router: Router, port: int) -> int:
    out = router.run(["iptables", "-t", "nat", "-L", "PREROUTING", "-v", "-n", "-x"],
                     capture_output=True, text=True, timeout=30, check=True).stdout
    return sum(int(line.split()[0]) for line in out.splitlines()
               if "udp" in line and f"dpt:{port}" in line)


@pytest.mark.parametrize("ext", [True, False])
def test_scheduler_behind_nat_hears_nodes_outside(natted, tmp_path: Path, ext: bool) -> None:
    """dispyscheduler inside a NAT uses nodes outside: it connects out, and with
    --ext_ip_addr the nodes that know its secret send their announcements to the
    gateway's public address, whose port forwarding brings them in. The gateway sends
    from another address than it forwards on: without --ext_ip_addr the announcements
    go there and are lost (the scheduler still finds the node by asking)."""
    inside, outside, router = natted
    client = inside.add_host("client")
    node = LabNode(outside.add_host("node1"), NODE_PORT, tmp_path / "n1", tmp_path / "n1.log")
    node.start("-s", SECRET, "--ping_interval", "1", "-d")
    lan = DispyLan(inside, client, {"node1": node}, tmp_path)
    sched_host = inside.add_host("sched")
    pool = str(outside.subnet.broadcast_address - 2)
    _forward(router, 51347, sched_host.ip, snat=pool)  # the scheduler's --port
    named = ["--ext_ip_addr", router.outer_ip] if ext else []
    sched = Scheduler(lan, tmp_path, "-n", node.ip, *named, "--node_secret", SECRET, "-d",
                      host=sched_host)
    target = router.outer_ip if ext else pool
    deadline = time.monotonic() + 30
    # two announcements seen: the first one has certainly been through the gateway
    while node.output().count(f"announced to {target}:51347") < 2:
        assert time.monotonic() < deadline, f"{node.output()}\n{sched.output()}"
        time.sleep(0.2)
    assert (_dnat_packets(router, 51347) > 0) == ext, node.output()
    proc = start_client(lan, sched, "--jobs", "6", "--wait-nodes", "1", "--nodes", node.ip)
    report = finish(proc, sched)
    assert {j["result"][2] for j in report["jobs"]} == {node.ip}, sched.output()


def test_relay_menu_port_in_use_and_bad_options(tmp_path: Path) -> None:
    """dispynetrelay's stdin menu (status, quit), a port already in use and a bad
    option: one line each, never a traceback."""
    import os
    import pty

    with Lab() as lab:
        host = lab.add_host("relay")
        master, slave = pty.openpty()
        log = tmp_path / "relay.log"
        with open(log, "wb") as fh:
            proc = host.popen([sys.executable, "-m", "dispy.dispynetrelay", "--relay_port",
                               "51500"], stdin=slave, stdout=fh, stderr=subprocess.STDOUT,
                              start_new_session=True)
        os.close(slave)
        try:
            wait_for_output(lambda: log.read_text(errors="replace"), proc, "Enter", "relay")
            os.write(master, b"status\n")
            wait_for_output(lambda: log.read_text(errors="replace"), proc,
                            "dispynetrelay: 0 requester(s)", "relay")
            taken = host.run([sys.executable, "-m", "dispy.dispynetrelay", "--daemon",
                              "--relay_port", "51500"], capture_output=True, text=True,
                             timeout=60)
            assert taken.returncode == 1 and "cannot use UDP port 51500" in taken.stderr
            assert "Traceback" not in taken.stderr, taken.stderr
            os.write(master, b"quit\n")
            assert proc.wait(20) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            os.close(master)
        bad = host.run([sys.executable, "-m", "dispy.dispynetrelay", "--relay_port", "0x"],
                       capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr
        alone = host.run([sys.executable, "-m", "dispy.dispynetrelay", "-i", "10.9.9.9"],
                         capture_output=True, text=True, timeout=60)
        assert alone.returncode == 2 and "10.9.9.9" in alone.stderr, alone.stderr
        assert "Traceback" not in alone.stderr, alone.stderr
