"""The client (or dispyscheduler) at 10, 100 and 1 000 nodes, against the node simulator
(nodesim.py).

    python benchmarks/scale.py [--nodes 10,100,1000] [--cpus 64] [--jobs 20000]
                               [--via scheduler]

For each size, in a process of its own: time from ``JobCluster()`` until every node is
set up, client memory per node (RSS growth over that time / nodes), jobs/s for
``--jobs`` no-op jobs and the client's CPU microseconds per job; then ``--vanish`` (10%)
of the nodes disappear at once while jobs run, and every job must end exactly once
(Finished, resubmitted elsewhere as the cluster is reentrant).
``--via scheduler``: the same through a dispyscheduler that holds the node links (the
program is a SharedJobCluster); the scheduler's CPU per job and memory per node are
reported beside the program's.
Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
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


def pinned() -> tuple[set[int], set[int]]:
    """(``--pin``) The CPUs for the simulator (the last one) and for the program (the
    others): nodes run on machines of their own, and a simulator that shares the
    program's CPU preempts it and evicts its caches, more so with more nodes."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("--pin needs 2 CPUs or more")
    return {cpus[-1]}, set(cpus[:-1])


class Sim:
    def __init__(self, nodes: int, cpus: int, on: set[int] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "nodesim.py"), "--nodes", str(nodes), "--cpus",
             str(cpus)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            start_new_session=True,
            preexec_fn=None if on is None else lambda: os.sched_setaffinity(0, on))
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Scheduler:
    """A dispyscheduler of its own (private directory, free ports), stopped with it."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="dispy-scale-")
        self.port = _free_port()
        self.log = open(os.path.join(self.dir, "log"), "w+")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dispy.dispyscheduler", "-i", "127.0.0.1",
             "--scheduler_port", str(self.port), "-p", str(_free_port()),
             "--dest_path_prefix", os.path.join(self.dir, "prefix"), "--pulse_interval", "1",
             "--daemon"], stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(HERE.parent / "src")})
        try:
            deadline = time.monotonic() + 60
            while "clients connect to" not in self._text():
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"dispyscheduler did not start:\n{self._text()}")
                time.sleep(0.05)
            self.ps = psutil.Process(self.proc.pid)
        except BaseException:  # (Ctrl-C too) nothing is left behind
            self.stop()
            raise

    def _text(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def run(nodes: int, cpus: int, jobs: int, vanish: float, via: str = "client") -> dict:
    sim = Sim(nodes, cpus)
    sched: Scheduler | None = None
    me = psutil.Process()
    finals: dict[int, int] = {}
    lock = threading.Lock()

    def callback(job: dispy.DispyJob) -> None:
        if job.status in FINAL:
            with lock:
                finals[job.id] = finals.get(job.id, 0) + 1

    try:
        allocs = [dispy.NodeAllocate("127.0.0.1", port=p) for p in sim.ports]
        if via == "scheduler":
            sched = Scheduler()
            srss0 = sched.rss()
        rss0 = me.memory_info().rss
        t0 = time.monotonic()
        if sched is not None:
            cluster = dispy.SharedJobCluster(
                noop, nodes=allocs, scheduler_node="127.0.0.1", scheduler_port=sched.port,
                reentrant=True, callback=callback, loglevel=dispy.logger.WARNING)
        else:
            cluster = dispy.JobCluster(
                noop, nodes=allocs, port=0, reentrant=True, callback=callback,
                loglevel=dispy.logger.WARNING,
                pulse_interval=1)  # a vanished node is presumed dead after 5 s of silence
        ready = cluster.wait_nodes(nodes, timeout=120)
        setup_s = time.monotonic() - t0
        rss_per_node = (me.memory_info().rss - rss0) / nodes
        extra: dict = {}
        if sched is not None:
            extra["scheduler_rss_per_node_kb"] = (sched.rss() - srss0) / nodes / 1024
            scpu0 = sched.cpu()
        cpu0, t1 = time.process_time(), time.monotonic()
        submitted = [cluster.submit_job_id(i, i) for i in range(jobs)]
        cluster.wait(timeout=300)
        elapsed = time.monotonic() - t1
        cpu = time.process_time() - cpu0
        if sched is not None:
            extra["scheduler_cpu_us_per_job"] = 1e6 * (sched.cpu() - scpu0) / jobs
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
        return {"via": via, "nodes": nodes, "cpus": cpus, "ready_nodes": ready,
                "setup_s": setup_s,
                "rss_per_node_kb": rss_per_node / 1024, "jobs": jobs, "ok": ok,
                "jobs_per_s": jobs / elapsed, "client_cpu_us_per_job": 1e6 * cpu / jobs,
                "vanished": lost, "loss_s": loss_s, "loss_cpu_s": loss_cpu_s,
                "ended_once": ended - twice, "ended_twice": twice,
                "not_ended": jobs - ended, **extra}
    finally:
        if sched is not None:
            sched.stop()
        sim.stop()


def serve_rounds(nodes: int, cpus: int, jobs: int, pin: bool) -> int:
    """(``--serve``) Set up once, then run a round of ``jobs`` jobs for each "round" line
    on stdin and print the client's CPU microseconds per job of it."""
    sim_cpus, own_cpus = pinned() if pin else (None, None)
    sim = Sim(nodes, cpus, sim_cpus)
    if own_cpus is not None:
        os.sched_setaffinity(0, own_cpus)
    try:
        allocs = [dispy.NodeAllocate("127.0.0.1", port=p) for p in sim.ports]
        cluster = dispy.JobCluster(noop, nodes=allocs, port=0, reentrant=True,
                                   callback=lambda job: None, loglevel=dispy.logger.WARNING,
                                   pulse_interval=1)  # as run(): pulses are part of the cost
        if cluster.wait_nodes(nodes, timeout=120) < nodes:
            raise SystemExit(f"only some of the {nodes} simulated nodes were set up")
        print("READY", flush=True)
        for line in sys.stdin:
            if line.strip() != "round":
                break
            cpu0 = time.process_time()
            submitted = [cluster.submit_job_id(i, i) for i in range(jobs)]
            cluster.wait(timeout=300)
            cpu = time.process_time() - cpu0
            ok = sum(job.status == dispy.DispyJob.Finished for job in submitted)
            print(json.dumps({"cpu_us_per_job": 1e6 * cpu / jobs, "ok": ok}), flush=True)
        cluster.close(timeout=30, terminate=True)
    finally:
        sim.stop()
    return 0


def ratio(small: int, large: int, cpus: int, jobs: int, pairs: int, pin: bool) -> dict:
    """The client's CPU per job at ``large`` nodes over ``small`` nodes, from rounds run in
    turn (ABBA) by two programs set up side by side. This VM's speed drifts by 20 % from
    one minute to the next; rounds a second apart share it, whole runs a minute apart
    (``run``) do not."""
    procs: dict[int, subprocess.Popen] = {}
    try:
        for n in (small, large):  # one after the other: each simulator finds its ports
            proc = procs[n] = subprocess.Popen(
                [sys.executable, __file__, "--serve", "--nodes", str(n), "--cpus", str(cpus),
                 "--jobs", str(jobs), *(["--pin"] if pin else [])], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, text=True)
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "READY":
                raise SystemExit(f"the {n}-node program did not start")

        def one(n: int) -> float:
            proc = procs[n]
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write("round\n")
            proc.stdin.flush()
            out = json.loads(proc.stdout.readline())
            if out["ok"] != jobs:
                raise SystemExit(f"{n} nodes: only {out['ok']} of {jobs} jobs finished")
            return float(out["cpu_us_per_job"])

        one(small), one(large)  # warm-up rounds, not counted
        cpu: dict[int, list[float]] = {small: [], large: []}
        for i in range(pairs):
            for n in ((small, large) if i % 2 == 0 else (large, small)):
                cpu[n].append(one(n))
        ratios = [b / a for a, b in zip(cpu[small], cpu[large], strict=True)]
        return {"ratio_of": [large, small], "cpus": cpus, "jobs": jobs, "pairs": pairs,
                "pinned": pin,
                "cpu_us_per_job": {str(n): cpu[n] for n in cpu},
                "ratios": ratios, "median_ratio": statistics.median(ratios)}
    finally:
        for proc in procs.values():
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
        for proc in procs.values():
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", default="10,100,1000")
    ap.add_argument("--cpus", type=int, default=64)
    ap.add_argument("--jobs", type=int, default=20000)
    ap.add_argument("--vanish", type=float, default=0.1)
    ap.add_argument("--via", choices=["client", "scheduler"], default="client",
                    help="the program's own JobCluster, or a SharedJobCluster through "
                         "dispyscheduler")
    ap.add_argument("--ratio", type=int, metavar="PAIRS", default=0,
                    help="instead: the client's CPU per job at the largest of --nodes over "
                         "the smallest, in PAIRS rounds run in turn")
    ap.add_argument("--pin", action="store_true",
                    help="with --ratio: the simulators on the last CPU, the programs on "
                         "the others")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sizes = [int(x) for x in a.nodes.split(",")]
    if a.serve:
        return serve_rounds(sizes[0], a.cpus, a.jobs, a.pin)
    if a.ratio:
        print(json.dumps(ratio(min(sizes), max(sizes), a.cpus, a.jobs, a.ratio, a.pin)),
              flush=True)
        return 0
    if len(sizes) == 1:
        print(json.dumps(run(sizes[0], a.cpus, a.jobs, a.vanish, a.via)), flush=True)
        return 0
    # each size in a process of its own, as a program has one cluster: a size measured
    # after another in the same process inherits its heap and collector state (the
    # client's CPU per job at 1 000 nodes read 79 after a 10-node run, 60-67 alone)
    for n in sizes:
        proc = subprocess.run(
            [sys.executable, __file__, "--nodes", str(n), "--cpus", str(a.cpus), "--jobs",
             str(a.jobs), "--vanish", str(a.vanish), "--via", a.via], stdout=subprocess.PIPE,
            text=True)
        sys.stdout.write(proc.stdout)
        sys.stdout.flush()
        if proc.returncode:
            return proc.returncode
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
