"""The client at 10, 100 and 1 000 nodes, against the node simulator (nodesim.py).

    python benchmarks/scale.py [--nodes 10,100,1000] [--cpus 64] [--jobs 20000]

For each size, in a process of its own: time from ``JobCluster()`` until every node is
set up, client memory per node (RSS growth over that time / nodes), jobs/s for
``--jobs`` no-op jobs and the client's CPU microseconds per job; then ``--vanish`` (10%)
of the nodes disappear at once while jobs run, and every job must end exactly once
(Finished, resubmitted elsewhere as the cluster is reentrant).
Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

import dispy  # noqa: E402

FINAL = {dispy.DispyJob.Finished, dispy.DispyJob.Cancelled, dispy.DispyJob.Terminated,
         dispy.DispyJob.Abandoned}


def noop(x):
    return x


class Sim:
    def __init__(self, nodes: int, cpus: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "nodesim.py"), "--nodes", str(nodes), "--cpus",
             str(cpus)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            start_new_session=True)
        assert self.proc.stdout is not None
        words = self.proc.stdout.readline().split()
        if not words or words[0] != "PORTS":
            raise SystemExit(f"nodesim did not start: {words}")
        self.ports = list(range(int(words[1]), int(words[2]) + 1))

    def command(self, text: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def stop(self) -> None:
        try:
            self.command("quit")
        except (BrokenPipeError, OSError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run(nodes: int, cpus: int, jobs: int, vanish: float) -> dict:
    sim = Sim(nodes, cpus)
    me = psutil.Process()
    finals: dict[int, int] = {}
    lock = threading.Lock()

    def callback(job: dispy.DispyJob) -> None:
        if job.status in FINAL:
            with lock:
                finals[job.id] = finals.get(job.id, 0) + 1

    try:
        rss0 = me.memory_info().rss
        t0 = time.monotonic()
        cluster = dispy.JobCluster(
            noop, nodes=[dispy.NodeAllocate("127.0.0.1", port=p) for p in sim.ports],
            port=0, reentrant=True, callback=callback, loglevel=dispy.logger.WARNING,
            pulse_interval=1)  # a vanished node is presumed dead after 5 s of silence
        ready = cluster.wait_nodes(nodes, timeout=120) if hasattr(cluster, "wait_nodes") \
            else None
        setup_s = time.monotonic() - t0
        rss_per_node = (me.memory_info().rss - rss0) / nodes
        cpu0, t1 = time.process_time(), time.monotonic()
        submitted = [cluster.submit_job_id(i, i) for i in range(jobs)]
        cluster.wait(timeout=300)
        elapsed = time.monotonic() - t1
        cpu = time.process_time() - cpu0
        ok = sum(job.status == dispy.DispyJob.Finished for job in submitted)
        # nodes vanishing at once while jobs run
        finals.clear()
        lost = max(1, int(nodes * vanish))
        second = [cluster.submit_job_id(jobs + i, i) for i in range(jobs)]
        time.sleep(0.05)
        sim.command(f"vanish {lost}")
        cpu1, t2 = time.process_time(), time.monotonic()
        cluster.wait(timeout=300)
        loss_s, loss_cpu_s = time.monotonic() - t2, time.process_time() - cpu1
        twice = sum(1 for n in finals.values() if n > 1)
        ended = sum(job.status in FINAL for job in second)
        cluster.close(timeout=30, terminate=True)
        return {"nodes": nodes, "cpus": cpus, "ready_nodes": ready, "setup_s": setup_s,
                "rss_per_node_kb": rss_per_node / 1024, "jobs": jobs, "ok": ok,
                "jobs_per_s": jobs / elapsed, "client_cpu_us_per_job": 1e6 * cpu / jobs,
                "vanished": lost, "loss_s": loss_s, "loss_cpu_s": loss_cpu_s,
                "ended_once": ended - twice, "ended_twice": twice,
                "not_ended": jobs - ended}
    finally:
        sim.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", default="10,100,1000")
    ap.add_argument("--cpus", type=int, default=64)
    ap.add_argument("--jobs", type=int, default=20000)
    ap.add_argument("--vanish", type=float, default=0.1)
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sizes = [int(x) for x in a.nodes.split(",")]
    if len(sizes) == 1:
        print(json.dumps(run(sizes[0], a.cpus, a.jobs, a.vanish)), flush=True)
        return 0
    # each size in a process of its own, as a program has one cluster: a size measured
    # after another in the same process inherits its heap and collector state (the
    # client's CPU per job at 1 000 nodes read 79 after a 10-node run, 60-67 alone)
    for n in sizes:
        proc = subprocess.run(
            [sys.executable, __file__, "--nodes", str(n), "--cpus", str(a.cpus), "--jobs",
             str(a.jobs), "--vanish", str(a.vanish)], stdout=subprocess.PIPE, text=True)
        sys.stdout.write(proc.stdout)
        sys.stdout.flush()
        if proc.returncode:
            return proc.returncode
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
