"""IPv6: nodes found by the IPv6 multicast group (global and link-local addresses), named
by address, shared through a dispyscheduler, and relayed; on LANs with no IPv4 at all."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import NODE_PORT, DispyLan, LabNode
from .lab import Lab, netlab_available
from .test_remote import RelayProc
from .test_shared import Scheduler, finish, start_client

pytestmark = [pytest.mark.netlab, pytest.mark.timeout(120)]

_reason = netlab_available()
if _reason:
    pytestmark.append(pytest.mark.skip(reason=_reason))

CLIENT = "discovery_client.py"


def v6_lan(lab: Lab, tmp: Path) -> DispyLan:
    client = lab.add_host("client")
    nodes = {name: LabNode(lab.add_host(name), NODE_PORT, tmp / name, tmp / f"{name}.log")
             for name in ("node1", "node2")}
    workdir = tmp / "client"
    workdir.mkdir()
    return DispyLan(lab, client, nodes, workdir)


@pytest.fixture(params=["global", "link-local"])
def lan6(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[DispyLan, str]]:
    with Lab(ipv4=False, ipv6=True if request.param == "global" else "link-local") as lab:
        lan = v6_lan(lab, tmp_path)
        for node in lan.nodes.values():
            node.start(wait=False)
        for node in lan.nodes.values():
            node.wait_for("serving")
        yield lan, request.param


def addr(node: LabNode, kind: str) -> str:
    out = node.host.ip6 if kind == "global" else node.host.link6
    assert out is not None
    return out


def test_ipv6_nodes_found_by_multicast_run_jobs(lan6: tuple[DispyLan, str]) -> None:
    lan, kind = lan6
    expected = sorted(addr(n, kind) for n in lan.nodes.values())
    run = lan.run_client(CLIENT, "--nodes", json.dumps(["*"]), "--node-port", str(NODE_PORT),
                         "--jobs", "20", "--wait-nodes", "2", "--deadline", "40")
    detail = lan.diagnostics()
    assert run.returncode == 0 and run.report is not None, detail
    assert run.report["nodes_before_submit"] == expected, detail
    for job in run.report["jobs"]:
        assert job["status"] == 11 and job["ip"] in expected, detail
        assert job["result"][1] == job["ip"], detail  # dispy_node_ip_addr, as we know it
    assert {j["ip"] for j in run.report["jobs"]} == set(expected), detail


def test_ipv6_node_named_by_address(lan6: tuple[DispyLan, str]) -> None:
    lan, kind = lan6
    target = addr(lan.nodes["node1"], kind)
    run = lan.run_client(CLIENT, "--nodes", json.dumps([target]), "--node-port",
                         str(NODE_PORT), "--jobs", "5", "--wait-nodes", "1", "--deadline", "40")
    detail = lan.diagnostics()
    assert run.returncode == 0 and run.report is not None, detail
    assert run.report["nodes_before_submit"] == [target], detail
    assert all(j["status"] == 11 and j["ip"] == target for j in run.report["jobs"]), detail


@pytest.mark.parametrize("lan6", ["global"], indirect=True)
def test_ipv6_node_named_by_a_host_name(lan6: tuple[DispyLan, str]) -> None:
    """A name with IPv6 addresses only (here from the client's own /etc/hosts) is the
    node at that address: asked by datagram and connected to, as an IPv4 name is."""
    lan, kind = lan6
    target = addr(lan.nodes["node1"], kind)
    lan.client.name_hosts({"node1.lab": target})
    run = lan.run_client(CLIENT, "--nodes", json.dumps(["node1.lab"]), "--node-port",
                         str(NODE_PORT), "--jobs", "5", "--wait-nodes", "1", "--deadline", "40")
    detail = lan.diagnostics()
    assert run.returncode == 0 and run.report is not None, detail
    assert run.report["nodes_before_submit"] == [target], detail
    assert all(j["status"] == 11 and j["ip"] == target for j in run.report["jobs"]), detail


def test_ipv6_dispy_status_lists_each_node_once(lan6: tuple[DispyLan, str]) -> None:
    lan, kind = lan6
    res = lan.client.run([sys.executable, "-m", "dispy", "status", "--node_port",
                          str(NODE_PORT), "--json"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    found = sorted(n["ip_addr"] for n in json.loads(res.stdout))
    assert found == sorted(addr(n, kind) for n in lan.nodes.values()), res.stdout


def test_ipv6_shared_scheduler(tmp_path: Path) -> None:
    with Lab(ipv4=False, ipv6=True) as lab:
        lan = v6_lan(lab, tmp_path)
        for node in lan.nodes.values():
            node.start()
        sched = Scheduler(lan, tmp_path)
        assert sched.host.ip6 is not None
        sched.host.ip = sched.host.ip6  # clients reach it by its IPv6 address
        proc = start_client(lan, sched, "--jobs", "10", "--wait-nodes", "2", "--nodes", "*")
        report = finish(proc, sched)
        ips = {j["result"][2] for j in report["jobs"]}
        assert ips == {n.host.ip6 for n in lan.nodes.values()}, sched.output()


def test_ipv6_relay(tmp_path: Path) -> None:
    """A client on another IPv6 network finds the nodes through a relay."""
    with Lab(ipv4=False, ipv6=True) as near, Lab(ipv4=False, ipv6=True) as far:
        near.add_router(far)
        lan = v6_lan(far, tmp_path)
        client = near.add_host("client6")
        lan.client = client
        for node in lan.nodes.values():
            node.start()
        relay = RelayProc(far.add_host("relay"), tmp_path / "relay.log").start()
        assert relay.host.ip6 is not None
        wildcard = str(far.subnet6.network_address).rstrip(":") + ":*"
        run = lan.run_client(CLIENT, "--nodes", json.dumps([relay.host.ip6, wildcard]),
                             "--node-port", str(NODE_PORT), "--jobs", "10", "--wait-nodes",
                             "2", "--deadline", "40")
        detail = f"{lan.diagnostics()}\n--- relay ---\n{relay.output()}"
        assert run.returncode == 0 and run.report is not None, detail
        expected = sorted(n.host.ip6 for n in lan.nodes.values() if n.host.ip6)
        assert run.report["nodes_before_submit"] == expected, detail
        assert all(j["status"] == 11 for j in run.report["jobs"]), detail


def test_unusable_addresses_are_clear_errors(tmp_path: Path) -> None:
    with Lab(ipv4=False, ipv6=True) as lab:
        host = lab.add_host("node1")
        for bad in ("fd99::1", "no-such-host.invalid", "10.1.2.3"):
            res = host.run([sys.executable, "-m", "dispy.dispynode", "--daemon", "-i", bad,
                            "-p", str(NODE_PORT), "--dest_path_prefix", str(tmp_path)],
                           capture_output=True, text=True, timeout=60)
            assert res.returncode != 0, res
            assert "Traceback" not in res.stderr, res.stderr
            assert bad in res.stderr, res.stderr
        code = ("import dispy\ntry:\n dispy.JobCluster(lambda x: x, ip_addr='fd99::1',"
                " loglevel=dispy.logger.CRITICAL)\nexcept ValueError as e:\n print('ERR', e)")
        res = host.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL)
        assert res.stdout.startswith("ERR") and "fd99::1" in res.stdout, res


def admin_sees(lan: DispyLan, log: Path, *extra: str) -> list[str]:
    """Start dispyadmin (admin secret "adm") in the client host and wait until it has
    details of both nodes; the addresses it shows them at."""
    argv = [sys.executable, "-m", "dispy.dispyadmin", "--daemon", "--secret", "adm",
            "--node_port", str(NODE_PORT), "--http_port", "8181", "--poll_interval", "5",
            *extra]
    with open(log, "wb") as fh:
        lan.client.popen(argv, stdout=fh, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    probe = (
        "import json, sys, time, urllib.request\n"
        "end = time.monotonic() + 40\n"
        "while time.monotonic() < end:\n"
        "    try:\n"
        "        s = json.load(urllib.request.urlopen('http://127.0.0.1:8181/api/state'))\n"
        "    except OSError:\n"
        "        time.sleep(0.2); continue\n"
        "    ok = sorted(n['ip_addr'] for n in s['nodes'] if n['admin'] and n['cpus'])\n"
        "    if len(ok) == 2:\n"
        "        print(json.dumps(ok)); sys.exit(0)\n"
        "    time.sleep(0.2)\n"
        "print(json.dumps(s)); sys.exit(1)\n")
    res = lan.client.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=90)
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr}\n{log.read_text()}"
    return list(json.loads(res.stdout))


def test_ipv6_dispyadmin_finds_and_administers_nodes(tmp_path: Path) -> None:
    with Lab(ipv4=False, ipv6=True) as lab:
        lan = v6_lan(lab, tmp_path)
        for node in lan.nodes.values():
            node.start("--admin_secret", "adm")
        seen = admin_sees(lan, tmp_path / "admin.log")
        assert seen == sorted(n.host.ip6 for n in lan.nodes.values() if n.host.ip6)


def test_dual_stack_nodes_are_met_once(tmp_path: Path) -> None:
    """On a LAN with IPv4 and IPv6, a node answers the broadcast and the multicast at
    one address of each family: the client meets it once (at the first answer), sets
    its computation up there once, runs its jobs there, and lists it once, as does
    ``dispy status``."""
    with Lab(ipv4=True, ipv6=True) as lab:
        lan = v6_lan(lab, tmp_path)
        for node in lan.nodes.values():
            node.start(wait=False)
        for node in lan.nodes.values():
            node.wait_for("serving")
        owner: dict[str, str] = {}
        for name, node in lan.nodes.items():
            assert node.host.ip and node.host.ip6
            owner[node.host.ip] = owner[node.host.ip6] = name

        def names(ips: list[str]) -> list[str]:
            return sorted(owner.get(ip, ip) for ip in ips)

        # both families answer here: the nodes are found by their IPv6 addresses alone
        wildcard6 = str(lab.subnet6.network_address).rstrip(":") + ":*"
        run6 = lan.run_client(CLIENT, "--nodes", json.dumps([wildcard6]), "--node-port",
                              str(NODE_PORT), "--jobs", "2", "--wait-nodes", "2",
                              "--deadline", "40")
        assert run6.report is not None, lan.diagnostics()
        assert run6.report["nodes_before_submit"] == sorted(
            n.host.ip6 for n in lan.nodes.values() if n.host.ip6), lan.diagnostics()
        logged = {name: len(node.output()) for name, node in lan.nodes.items()}
        # a second of jobs: answers of both families keep coming while they run
        run = lan.run_client(CLIENT, "--nodes", json.dumps(["*"]), "--node-port",
                             str(NODE_PORT), "--jobs", "40", "--delay", "0.1",
                             "--wait-nodes", "2", "--deadline", "40")
        detail = lan.diagnostics()
        assert run.returncode == 0 and run.report is not None, detail
        for listed in (run.report["nodes_before_submit"], run.report["nodes_at_end"]):
            assert names(listed) == ["node1", "node2"], detail
        assert all(j["status"] == 11 for j in run.report["jobs"]), detail
        assert set(names([j["ip"] for j in run.report["jobs"]])) == {"node1", "node2"}, detail
        for name, node in lan.nodes.items():  # met at both addresses, two links would
            # take the session from each other, each setting the computation up again
            setups = [line for line in node.output()[logged[name]:].splitlines()
                      if "computation 'compute' from" in line and not line.endswith("closed")]
            assert len(setups) == 1, detail
        res = lan.client.run([sys.executable, "-m", "dispy", "status", "--node_port",
                              str(NODE_PORT), "--json"], capture_output=True, text=True,
                             timeout=60)
        assert res.returncode == 0, res.stderr
        assert names([n["ip_addr"] for n in json.loads(res.stdout)]) == ["node1", "node2"], \
            res.stdout
