"""Chaos soak (issue 15): jobs of two programs through dispyscheduler and three nodes,
while a killer ``kill -9``s and restarts a random component every few seconds.

    python benchmarks/chaos.py                       # 20 000 jobs (make soak)
    python benchmarks/chaos.py --jobs 600 --kill-every 1.5   # a short run

Components: the nodes (each killed with its job processes: a machine crash, then
started again on its port), the scheduler (started again with the same ports and
directory: its journal), and the programs (each killed at most ``--program-kills``
times after all its jobs are in its recover file; started again, it calls
``recover_jobs`` until its recover file is gone). Every program writes each final
status it sees to its log (benchmarks/chaos_program.py). At the end it counts, over the
logs, for every job id: lost (no final status), duplicated (two final statuses seen by
one program instance), wrong (a result that is not the job's) and redelivered (seen by
a killed instance and again by ``recover_jobs``: a program that dies before dispy
learns it took a result gets it again, by design). It exits 1 unless lost, duplicated
and wrong are all 0.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "systems"))
sys.path.insert(0, str(HERE))

from common import ancestors, ensure_tag, free_port, kill_tagged  # noqa: E402
from soak import Node  # noqa: E402

FINISHED = 11  # dispy.DispyJob.Finished


class Scheduler(Node):
    """dispyscheduler on fixed ports; its directory (and journal) survives restarts."""

    READY = "clients connect to"

    def __init__(self, port: int, node_udp: int, workdir: Path) -> None:
        super().__init__(port, 0, workdir)
        self.node_udp = node_udp

    def argv(self, prefix: Path) -> list[str]:
        return [sys.executable, "-m", "dispy.dispyscheduler", "-i", "127.0.0.1",
                "--scheduler_port", str(self.port), "-p", str(self.node_udp),
                "--pulse_interval", "1", "--dest_path_prefix", str(prefix), "--daemon"]


class Program:
    """One client program (chaos_program.py); restarted with --resume after a kill."""

    def __init__(self, name: str, first: int, count: int, args: argparse.Namespace,
                 sched: Scheduler, nodes: list[Node], workdir: Path) -> None:
        self.name = name
        self.log = workdir / f"{name}.log"
        self.recover = workdir / f"{name}.rec"
        self.base = [sys.executable, str(HERE / "chaos_program.py"),
                     "--scheduler-port", str(sched.port),
                     "--nodes", ",".join(str(n.port) for n in nodes),
                     "--first", str(first), "--count", str(count),
                     "--job-ms", str(args.job_ms), "--log", str(self.log),
                     "--recover", str(self.recover)]
        self.workdir = workdir
        self.instance = 0
        self.kills = 0
        self.proc: subprocess.Popen | None = None
        self.killable = threading.Event()
        self.done = threading.Event()

    def start(self, resume: bool = False) -> None:
        self.killable.clear()
        argv = self.base + ["--instance", str(self.instance)] + (["--resume"] if resume
                                                                 else [])
        err = open(self.workdir / f"{self.name}.{self.instance}.err", "wb")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err,
                                     stdin=subprocess.DEVNULL, text=True,
                                     start_new_session=True, cwd=self.workdir)
        err.close()
        threading.Thread(target=self._watch, args=(self.proc,), daemon=True).start()

    def _watch(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip() == "journaled":
                self.killable.set()
            elif line.strip() == "done" and proc is self.proc:
                self.done.set()
                self.killable.clear()

    def kill(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.kills += 1
        self.instance += 1
        self.start(resume=True)


def killer(nodes: list[Node], sched: Scheduler, programs: list[Program], args: argparse.Namespace,
           stop: threading.Event, rng: random.Random, kills: list[str]) -> None:
    while not stop.wait(rng.uniform(0.5, 1.5) * args.kill_every):
        targets: list[Any] = [*nodes, sched]
        targets += [p for p in programs if p.killable.is_set() and not p.done.is_set()
                    and p.kills < args.program_kills]
        victim = rng.choice(targets)
        stamp = time.strftime("%H:%M:%S")
        if isinstance(victim, Program):
            victim.kill()
            kills.append(f"{stamp} program {victim.name}")
            continue
        victim.kill()
        kills.append(f"{stamp} {'scheduler' if victim is sched else 'node'} {victim.port}")
        try:
            victim.start()
        except RuntimeError as exc:
            print(f"[chaos] restart failed: {exc}", file=sys.stderr, flush=True)


def count(programs: list[Program], jobs: int) -> dict[str, int]:
    seen: dict[int, list[tuple[int, str, int]]] = defaultdict(list)
    for program in programs:
        if not program.log.exists():
            continue
        for line in program.log.read_text().splitlines():
            job_id, status, result, instance, _source = line.split(" ", 4)
            seen[int(job_id)].append((int(status), result, int(instance)))
    c = {"jobs": jobs, "finished": 0, "other_status": 0, "lost": 0, "duplicated": 0,
         "wrong": 0, "redelivered": 0}
    for job_id in range(jobs):
        lines = seen.get(job_id, [])
        if not lines:
            c["lost"] += 1
            continue
        instances = [i for _, _, i in lines]
        if len(set(instances)) < len(instances):
            c["duplicated"] += 1
        elif len(instances) > 1:
            c["redelivered"] += 1
        if any(s == FINISHED and r != repr(job_id * job_id) for s, r, _ in lines):
            c["wrong"] += 1
        elif all(s == FINISHED for s, _, _ in lines):
            c["finished"] += 1
        else:
            c["other_status"] += 1
    return c


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=20000)
    ap.add_argument("--programs", type=int, default=2)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of each node")
    ap.add_argument("--job-ms", type=float, default=5.0, help="each job sleeps this long")
    ap.add_argument("--kill-every", type=float, default=4.0,
                    help="mean seconds between kills (uniform 0.5x..1.5x)")
    ap.add_argument("--program-kills", type=int, default=1,
                    help="kill each program at most this many times")
    ap.add_argument("--stall", type=float, default=180.0,
                    help="give up when no program finished for this many seconds")
    ap.add_argument("--timeout", type=float, default=3600.0, help="overall limit in seconds")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--workdir", type=Path, default=None,
                    help="logs and daemons' directories here (default: a new temp dir,"
                         " removed when the run is clean)")
    ap.add_argument("--json", action="store_true", help="print only the result as JSON")
    return ap.parse_args(argv)


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    taken: set[int] = set()
    nodes = [Node(free_port(taken=taken), args.cpus, workdir) for _ in range(args.nodes)]
    sched = Scheduler(free_port(taken=taken), free_port(taken=taken), workdir)
    for daemon in [*nodes, sched]:
        daemon.start()
    share = args.jobs // args.programs
    programs = [Program(chr(ord("A") + i), i * share,
                        share if i < args.programs - 1 else args.jobs - i * share,
                        args, sched, nodes, workdir) for i in range(args.programs)]
    t0 = time.monotonic()
    for program in programs:
        program.start()
    for program in programs:  # the killer starts once every job is journaled
        if not program.killable.wait(120) and not program.done.is_set():
            raise RuntimeError(f"program {program.name} did not start")
    stop = threading.Event()
    kills: list[str] = []
    thread = threading.Thread(target=killer, args=(nodes, sched, programs, args, stop, rng,
                                                   kills), daemon=True)
    thread.start()
    last_lines, last_progress, last_print = -1, time.monotonic(), 0.0
    while not all(p.done.is_set() for p in programs):
        now = time.monotonic()
        lines = sum(len(p.log.read_bytes().splitlines()) for p in programs if p.log.exists())
        if lines != last_lines:
            last_lines, last_progress = lines, now
        if not args.json and now - last_print >= 5:
            print(f"[chaos] {now - t0:6.1f} s  {lines}/{args.jobs} results, {len(kills)}"
                  " kills", flush=True)
            last_print = now
        if now - last_progress > args.stall or now - t0 > args.timeout:
            break
        time.sleep(0.2)
    elapsed = time.monotonic() - t0
    stop.set()
    thread.join(120)
    return {"elapsed": elapsed, "kills": kills, "counts": count(programs, args.jobs)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tag = ensure_tag()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dispy-chaos-"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result: dict[str, Any] = {}
    try:
        result = run(args, workdir)
    finally:
        kill_tagged(tag, exclude=ancestors())
    c = result["counts"]
    ok = c["lost"] == 0 and c["duplicated"] == 0 and c["wrong"] == 0
    summary = {**c, "kills": len(result["kills"]), "elapsed_s": round(result["elapsed"], 1),
               "jobs_per_s": round(args.jobs / result["elapsed"], 1)}
    if ok and args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(summary if ok else {**summary, "workdir": str(workdir),
                                             "kill_log": result["kills"]}))
        return 0 if ok else 1
    print(f"[chaos] {len(result['kills'])} kills in {result['elapsed']:.1f} s: "
          + ", ".join(k.split(" ", 1)[1] for k in result["kills"])
          + ("" if ok else f" (logs kept in {workdir})"))
    print("jobs {jobs}  finished {finished}  other status {other_status}  lost {lost}  "
          "duplicated {duplicated}  wrong {wrong}  (redelivered after a program kill "
          "{redelivered})".format(**c))
    print("CHAOS-RESULT " + json.dumps(summary))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
