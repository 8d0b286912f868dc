"""The measuring tools of benchmarks/ still run against the code (they reach into it:
hops.py wraps named functions, scale.py speaks the protocol as many nodes,
direct_path.py builds a round trip from the wire parts, handoff.py chains jobs on the
engine's loop, core.py drives the scheduling core alone). Tiny sizes; no time is
asserted, only that each completes and reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

BENCH = Path(__file__).parents[2] / "benchmarks"


def _run(*args: str) -> str:
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=100, cwd=BENCH.parent)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_direct_path_reports_both_floors_beside_the_pool():
    out = _run(str(BENCH / "direct_path.py"), "--jobs", "20", "--runs", "1")
    assert "floor of a direct path" in out and "floor of today's path" in out
    assert "ProcessPoolExecutor(2)" in out


def test_hops_follows_a_round_trip_through_every_process():
    out = _run(str(BENCH / "hops.py"), "--jobs", "100")
    assert "program -> node daemon" in out and "job process" in out
    assert "round trip" in out


def test_handoff_runs_both_ways_and_counts_switches():
    out = _run(str(BENCH / "handoff.py"), "--jobs", "30", "--runs", "2")
    assert "program  p50" in out and "loop     p50" in out
    assert "context switches per job" in out and "the two hand-overs" in out


def test_scale_ends_every_job_once_against_simulated_nodes():
    out = _run(str(BENCH / "scale.py"), "--nodes", "10", "--jobs", "200")
    row = json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])
    assert row["ready_nodes"] == 10 and row["ok"] == 200
    assert (row["ended_twice"], row["not_ended"]) == (0, 0)


def test_scale_ratio_runs_rounds_of_two_programs_in_turn():
    pin = ["--pin"] if len(os.sched_getaffinity(0)) >= 2 else []
    out = _run(str(BENCH / "scale.py"), "--nodes", "2,5", "--jobs", "100", "--ratio", "2",
               *pin)
    row = json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])
    assert row["ratio_of"] == [5, 2] and row["pairs"] == 2 and len(row["ratios"]) == 2
    assert row["pinned"] == bool(pin)
    assert all(len(row["cpu_us_per_job"][n]) == 2 for n in ("2", "5"))


def test_nodesim_pulses_as_dispynode_so_a_long_job_keeps_its_node(tmp_path):
    """A client that asked for pulses cuts off a node silent for 5 intervals while its
    jobs run: the simulator pulses as dispynode does, so a job of 6 s at
    ``pulse_interval=1`` ends normally, and the node's pulses fill its availability."""
    import dispy

    sim = subprocess.Popen([sys.executable, str(BENCH / "nodesim.py"), "--nodes", "1",
                            "--cpus", "2", "--service", "6"], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True, start_new_session=True)
    cluster = None
    try:
        assert sim.stdout is not None
        words = sim.stdout.readline().split()
        assert words[0] == "PORTS", words
        cluster = dispy.JobCluster(lambda: None, nodes=[("127.0.0.1", int(words[1]))],
                                   port=0, pulse_interval=1, recover_file=str(tmp_path / "rf"))
        assert cluster.wait_nodes(1, timeout=30) == 1
        job = cluster.submit()
        job()
        assert job.status == dispy.DispyJob.Finished, (job.status, job.exception)
        (node,) = cluster.status().nodes
        assert node.avail_info is not None and node.avail_info.cpu == 100.0
    finally:
        if cluster is not None:
            cluster.close(timeout=10, terminate=True)
        sim.kill()
        sim.wait(10)


def test_core_reports_both_dispatch_costs_per_size():
    out = _run(str(BENCH / "core.py"), "--nodes", "3,20", "--cpus", "4", "--runs", "1")
    rows = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
    assert [row["nodes"] for row in rows] == [3, 20]
    assert all(row["one_job_per_dispatch_us"] > 0 and row["batch_of_1000_us_per_job"] > 0
               for row in rows)


def test_bench_program_runs_a_whole_program_per_system(tmp_path):
    """The program workload: a user's whole one-job program, ours and the pool's."""
    out_json = tmp_path / "bench.json"
    _run(str(BENCH / "bench.py"), "--quick", "--systems", "ours,pool", "--workloads",
         "program", "--json", str(out_json))
    summary = json.loads(out_json.read_text())["summary"]["program"]
    assert summary["status"] == {"ours": {"ok": 1}, "pool": {"ok": 1}}
    assert set(summary["metrics"]["seconds"]["systems"]) == {"ours", "pool"}
