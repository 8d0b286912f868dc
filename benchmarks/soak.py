"""Soak test (issue 5): many jobs over a few nodes while a killer keeps restarting nodes.

    python benchmarks/soak.py                 # 20 000 jobs, 3 nodes (make soak)
    python benchmarks/soak.py --jobs 500      # a short smoke run

The cluster runs with ``reentrant=True, pulse_interval=1``. Every few seconds a random
node is killed with SIGKILL (the daemon and its job processes: a machine crash) and
started again on the same port. At the end it prints jobs submitted / finished /
cancelled / lost / duplicated; it exits 1 if any job was lost or duplicated.

- lost: no final status by the end (after no progress for --stall seconds);
- duplicated: the callback saw a final status of the job more than once, or a final
  status other than the job's own, or the job finished with a wrong result.
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
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "systems"))

from common import ancestors, ensure_tag, free_port, kill_tagged  # noqa: E402

import dispy  # noqa: E402

NODE_VAR = "DISPY_SOAK_NODE"
FINAL = {dispy.DispyJob.Finished, dispy.DispyJob.Cancelled, dispy.DispyJob.Terminated,
         dispy.DispyJob.Abandoned}


def compute(x, ms):
    import time

    if ms:
        time.sleep(ms / 1000)
    return x * x


class Node:
    """One dispynode on 127.0.0.1:port; ``kill`` takes its job processes down too."""

    READY = "serving"

    def __init__(self, port: int, cpus: int, workdir: Path) -> None:
        self.port = port
        self.cpus = cpus
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None
        self.tag = ""
        self.starts = 0

    def start(self, timeout: float = 60.0) -> None:
        self.starts += 1
        self.tag = uuid.uuid4().hex
        prefix = self.workdir / f"node-{self.port}"
        prefix.mkdir(exist_ok=True)
        log = self.workdir / f"node-{self.port}.{self.starts}.log"
        argv = self.argv(prefix)
        with open(log, "wb") as fh:
            self.proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         env={**os.environ, NODE_VAR: self.tag})
        deadline = time.monotonic() + timeout
        while self.READY not in log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"node {self.port} did not start:\n"
                                   + log.read_text(errors="replace")[-2000:])
            time.sleep(0.05)

    def argv(self, prefix: Path) -> list[str]:
        return [sys.executable, "-m", "dispy.dispynode", "-c", str(self.cpus), "-i",
                "127.0.0.1", "-p", str(self.port), "--dest_path_prefix", str(prefix),
                "--daemon"]

    def kill(self) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        if self.tag:
            kill_tagged(self.tag, exclude=ancestors(), var=NODE_VAR)


class Tracker:
    """What the callback saw: the final statuses of each job."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.finals: dict[Any, list[int]] = defaultdict(list)

    def callback(self, job: Any) -> None:
        if job.status in FINAL:
            with self.lock:
                self.finals[job.id].append(job.status)


def killer(nodes: list[Node], every: float, stop: threading.Event, rng: random.Random,
           kills: list[str]) -> None:
    while not stop.wait(rng.uniform(0.5, 1.5) * every):
        node = rng.choice(nodes)
        node.kill()
        kills.append(f"{time.strftime('%H:%M:%S')} node {node.port}")
        if stop.is_set():
            break
        try:
            node.start()
        except RuntimeError as exc:
            print(f"[soak] restart failed: {exc}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=20000)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--cpus", type=int, default=1, help="CPUs of each node")
    ap.add_argument("--job-ms", type=float, default=5.0, help="each job sleeps this long")
    ap.add_argument("--kill-every", type=float, default=4.0,
                    help="mean seconds between kills (uniform 0.5x..1.5x)")
    ap.add_argument("--pulse", type=float, default=1.0, help="pulse_interval of the cluster")
    ap.add_argument("--stall", type=float, default=120.0,
                    help="give up when no job finished for this many seconds")
    ap.add_argument("--timeout", type=float, default=1800.0, help="overall limit in seconds")
    ap.add_argument("--linger", type=float, default=5.0,
                    help="seconds to keep watching for late duplicates after the last job")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--workdir", type=Path, default=None,
                    help="logs and daemons' directories here (default: a new temp dir,"
                         " removed when the run is clean)")
    return ap.parse_args(argv)


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    taken: set[int] = set()
    nodes = [Node(free_port(taken=taken), args.cpus, workdir) for _ in range(args.nodes)]
    for node in nodes:
        node.start()
    tracker = Tracker()
    cluster = dispy.JobCluster(compute, nodes=[("127.0.0.1", n.port) for n in nodes], port=0,
                               reentrant=True, pulse_interval=args.pulse,
                               callback=tracker.callback)
    stop = threading.Event()
    kills: list[str] = []
    thread = threading.Thread(target=killer, args=(nodes, args.kill_every, stop, rng, kills),
                              daemon=True)
    t0 = time.monotonic()
    jobs = [cluster.submit_job_id(i, i, args.job_ms) for i in range(args.jobs)]
    submitted = [j for j in jobs if j is not None]
    thread.start()
    done, last_done, last_progress, last_print = 0, -1, time.monotonic(), 0.0
    while True:
        done = sum(1 for j in submitted if j.finish.is_set())
        now = time.monotonic()
        if done != last_done:
            last_done, last_progress = done, now
        if now - last_print >= 5:
            print(f"[soak] {now - t0:6.1f} s  {done}/{len(submitted)} done, "
                  f"{len(kills)} kills", flush=True)
            last_print = now
        if done == len(submitted) or now - last_progress > args.stall \
                or now - t0 > args.timeout:
            break
        time.sleep(0.2)
    elapsed = time.monotonic() - t0
    stop.set()
    thread.join(120)
    time.sleep(args.linger)  # late results of restarted nodes would show up as duplicates
    return {"elapsed": elapsed, "kills": kills, "cluster": cluster,
            "counts": count(submitted, tracker, args.jobs)}


def count(jobs: list, tracker: Tracker, wanted: int) -> dict[str, int]:
    counts = {"submitted": len(jobs), "not_submitted": wanted - len(jobs), "finished": 0,
              "cancelled": 0, "lost": 0, "duplicated": 0, "callback_missing": 0}
    with tracker.lock:
        finals = {k: list(v) for k, v in tracker.finals.items()}
    for job in jobs:
        seen = finals.get(job.id, [])
        if job.status not in FINAL:
            counts["lost"] += 1
        elif job.status == dispy.DispyJob.Finished and job.result == job.id * job.id:
            counts["finished"] += 1
        elif job.status == dispy.DispyJob.Finished:
            counts["duplicated"] += 1  # a result that is not this job's
            continue
        else:
            counts["cancelled"] += 1
        if len(seen) > 1 or (seen and job.status in FINAL and seen[0] != job.status):
            counts["duplicated"] += 1
        elif not seen and job.status in FINAL:
            counts["callback_missing"] += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tag = ensure_tag()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dispy-soak-"))
    os.chdir(workdir)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result: dict[str, Any] = {}
    try:
        result = run(args, workdir)
        try:
            result.pop("cluster").close(timeout=30, terminate=True)
        except Exception as exc:  # the counts are what matter; say why close failed
            print(f"[soak] close: {exc}", file=sys.stderr)
    finally:
        kill_tagged(tag, exclude=ancestors())
    c = result["counts"]
    ok = c["lost"] == 0 and c["duplicated"] == 0 and c["not_submitted"] == 0
    if ok and args.workdir is None:
        os.chdir(HERE)
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"[soak] {len(result['kills'])} node kills in {result['elapsed']:.1f} s"
          + ("" if ok else f" (node logs kept in {workdir})"))
    print("submitted {submitted}  finished {finished}  cancelled {cancelled}  lost {lost}  "
          "duplicated {duplicated}  (callback missing {callback_missing})".format(**c))
    print("SOAK-RESULT " + json.dumps({**c, "kills": len(result["kills"]),
                                       "elapsed_s": round(result["elapsed"], 1)}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
