"""The scheduling core alone: what a dispatch costs, with no sockets and no engine.

    python benchmarks/core.py [--nodes 10,1000] [--cpus 64] [--runs 5]

For each size: nodes of ``--cpus`` CPUs, 10 jobs running on each, then (1) one job
submitted and dispatched at a time (a program that submits jobs one by one; every node
has free CPUs) and (2) batches of 1 000 jobs per dispatch. Prints microseconds per
dispatch and per job, medians of ``--runs``. Pure Python work only: what the CPU's
cache does at 1 000 nodes shows in ``scale.py``, not here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from dispy.scheduling import SchedulerCore  # noqa: E402


def one_size(nodes: int, cpus: int) -> dict[str, float]:
    core = SchedulerCore()
    core.add_cluster("A")
    for key in range(nodes):
        core.set_node(key, cpus)
        core.node_ready("A", key, cpus)
    for j in range(nodes * 10):  # every node busy with 10 jobs
        core.submit("A", ("running", j))
    core.dispatch()
    singles = 2000
    start = time.perf_counter()
    for job in range(singles):
        core.submit("A", job)
        for done, _, _ in core.dispatch():
            core.finished(done)
    single_us = (time.perf_counter() - start) / singles * 1e6
    batches, size = 20, 1000
    start = time.perf_counter()
    for b in range(batches):
        for j in range(size):
            core.submit("A", (b, j))
        for done, _, _ in core.dispatch():
            core.finished(done)
    batch_us = (time.perf_counter() - start) / (batches * size) * 1e6
    return {"one_job_per_dispatch_us": single_us, "batch_of_1000_us_per_job": batch_us}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", default="10,1000")
    ap.add_argument("--cpus", type=int, default=64)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    for nodes in (int(n) for n in a.nodes.split(",")):
        runs = [one_size(nodes, a.cpus) for _ in range(a.runs)]
        out = {key: round(statistics.median(r[key] for r in runs), 2) for key in runs[0]}
        print(json.dumps({"nodes": nodes, "cpus": a.cpus, "runs": a.runs, **out}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
