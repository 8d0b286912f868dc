"""Short versions of the soaks (issue 15; the long ones are ``make soak``): real nodes,
dispyscheduler and programs killed with ``kill -9`` and restarted at random while jobs
run. Whatever the timing, no job may be lost, ended twice or given a wrong result."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(240)

BENCH = Path(__file__).parents[2] / "benchmarks"


def _run(script: str, tmp_path: Path, *args: str) -> dict:
    proc = subprocess.run([sys.executable, str(BENCH / script), "--workdir", str(tmp_path),
                           *args], capture_output=True, text=True, timeout=220)
    tagged = [ln for ln in proc.stdout.splitlines() if ln.startswith(("CHAOS-RESULT",
                                                                      "SOAK-RESULT"))]
    assert tagged, f"rc {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(tagged[-1].split(" ", 1)[1])


def test_chaos_two_programs_scheduler_and_nodes_killed(tmp_path):
    c = _run("chaos.py", tmp_path, "--jobs", "800", "--job-ms", "20", "--kill-every", "1",
             "--seed", "7")
    assert c["kills"] >= 1, c  # the killer starts once every job is journaled
    assert (c["lost"], c["duplicated"], c["wrong"]) == (0, 0, 0), c
    assert c["finished"] + c["other_status"] == 800


def test_soak_jobcluster_nodes_killed(tmp_path):
    c = _run("soak.py", tmp_path, "--jobs", "400", "--job-ms", "20", "--kill-every", "1.5",
             "--seed", "7", "--linger", "1")
    assert (c["lost"], c["duplicated"], c["not_submitted"]) == (0, 0, 0), c
