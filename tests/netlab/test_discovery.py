"""Clients find nodes on a real broadcast domain: by broadcast ('*' and subnet wildcards),
by explicit addresses, and when a node starts after the client (its own announcement)."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from .conftest import ClientRun, DispyLan, parse_run
from .lab import netlab_available

pytestmark = [pytest.mark.netlab, pytest.mark.timeout(120)]

_reason = netlab_available()
if _reason:
    pytestmark.append(pytest.mark.skip(reason=_reason))

JOBS = 40
CLIENT = "discovery_client.py"


def check_jobs(lan: DispyLan, report: dict, detail: str) -> set[str]:
    """Every job finished with the right result on a lab node; returns the nodes used."""
    node_ips = {n.ip for n in lan.nodes.values()}
    used = set()
    for job in report["jobs"]:
        x = job["x"]
        assert job["status"] == 11, f"job {x}: {job}\n{detail}"  # DispyJob.Finished
        assert job["result"] == [x * x, job["ip"]], f"job {x}: {job}\n{detail}"
        assert job["ip"] in node_ips, f"job {x} ran on unknown node {job['ip']}\n{detail}"
        used.add(job["ip"])
    return used


@pytest.mark.parametrize("form", ["star", "wildcard", "escaped_wildcard", "explicit",
                                  "explicit_tuples"])
def test_client_finds_and_uses_both_nodes(dispy_lan: DispyLan, form: str) -> None:
    node1, node2 = dispy_lan.nodes["node1"], dispy_lan.nodes["node2"]
    nodes = {
        "star": ["*"],
        "wildcard": [dispy_lan.wildcard],
        # published programs write '10.0.0.\\*' (a backslash before '*'), as the original's
        # reStructuredText docs did; the original accepted every 10.0.0.x node
        "escaped_wildcard": [dispy_lan.wildcard.replace("*", "\\*")],
        "explicit": [node1.ip, node2.ip],
        "explicit_tuples": [[node1.ip, dispy_lan.port], [node2.ip, dispy_lan.port]],
    }[form]
    run = dispy_lan.run_client(CLIENT, "--nodes", json.dumps(nodes),
                               "--node-port", str(dispy_lan.port), "--jobs", str(JOBS),
                               "--wait-nodes", "2", "--deadline", "60")
    detail = dispy_lan.diagnostics()
    print(run.stdout)  # progress and timings; shown with -s or on failure
    assert run.returncode == 0 and run.report is not None, detail
    report = run.report
    assert report["nodes_before_submit"] == sorted([node1.ip, node2.ip]), detail
    assert [j["x"] for j in report["jobs"]] == list(range(JOBS)), detail
    assert check_jobs(dispy_lan, report, detail) == {node1.ip, node2.ip}, detail
    assert report["closed"] is True, detail


def test_late_node_found_by_its_announcement(dispy_lan_idle: DispyLan) -> None:
    """node2 starts after the client's discovery broadcast and after node1 is in use, so
    the client (which re-broadcasts only while no node is usable) can learn of node2
    only from the announcement node2 broadcasts when it starts."""
    lan = dispy_lan_idle
    node1, node2 = lan.nodes["node1"], lan.nodes["node2"]
    node1.start()
    out_path, err_path = lan.workdir / "client.out", lan.workdir / "client.err"
    argv = lan.client_argv(CLIENT, "--nodes", json.dumps(["*"]), "--node-port", str(lan.port),
                           "--jobs", "8", "--until-ip", node2.ip, "--deadline", "45")
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = lan.client.popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                cwd=lan.workdir, text=True)

    def run() -> ClientRun:
        return parse_run(proc.poll(), out_path.read_text(), err_path.read_text())

    deadline = time.monotonic() + 45
    while "submitted" not in out_path.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, (
            f"client never reported its first batch\n{run().describe()}\n{lan.node_logs()}")
        time.sleep(0.05)
    node2.start()
    try:
        proc.wait(90)
    except subprocess.TimeoutExpired:
        pytest.fail(f"client did not finish\n{run().describe()}\n{lan.node_logs()}")
    result = run()
    lan.runs.append(result)
    detail = lan.diagnostics()
    print(result.stdout)
    assert result.returncode == 0 and result.report is not None, detail
    report = result.report
    first = report["jobs"][:8]
    assert {j["ip"] for j in first} == {node1.ip}, detail  # node2 did not exist yet
    assert "late_node_used" in report["timings"], f"node2 never ran a job\n{detail}"
    assert check_jobs(lan, report, detail) == {node1.ip, node2.ip}, detail
    assert sorted(report["nodes_at_end"]) == sorted([node1.ip, node2.ip]), detail
    assert report["closed"] is True, detail


def test_nodes_that_match_no_pattern_are_named(dispy_lan: DispyLan) -> None:
    """Nodes answer a broadcast but the program's pattern matches none of them: the log
    says which nodes answered and that they match nothing (not "no node answered")."""
    prefix, third, _ = dispy_lan.wildcard.rsplit(".", 2)
    # another subnet: not the lab's own, which is a random 10.77.N.0/24 (N = 254 too)
    other = f"{prefix}.{1 if third != '1' else 2}.\\*"
    run = dispy_lan.run_client(CLIENT, "--nodes", json.dumps([other]),
                               "--node-port", str(dispy_lan.port), "--jobs", "1",
                               "--deadline", "5")
    detail = run.describe() + dispy_lan.diagnostics()
    out = run.stdout + run.stderr
    for node in dispy_lan.nodes.values():
        assert f"node {node.ip}:{dispy_lan.port} answered but matches none of nodes=" in out, \
            detail
    assert "answered but match none of nodes=" in out, detail
    assert "no node answered at all" not in out, detail
