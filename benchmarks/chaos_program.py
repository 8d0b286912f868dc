"""One client program of the chaos soak (benchmarks/chaos.py).

It submits its share of jobs to a SharedJobCluster and writes each final status to its
log, one line per job: ``id status result instance source`` (``instance`` counts its
restarts; ``source`` is C for the callback, R for ``recover_jobs``). It prints
``journaled`` once every job is in its recover file (the killer may kill it from then
on) and ``done`` at the end. Started with ``--resume`` (after it was killed), it only
calls ``recover_jobs`` on its recover file until the file is gone.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import dispy

FINAL = {dispy.DispyJob.Finished, dispy.DispyJob.Cancelled, dispy.DispyJob.Terminated,
         dispy.DispyJob.Abandoned}


def compute(x, ms):
    import time

    if ms:
        time.sleep(ms / 1000)
    return x * x


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scheduler-port", type=int, required=True)
    ap.add_argument("--nodes", required=True, help="comma-separated node ports")
    ap.add_argument("--first", type=int, required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--job-ms", type=float, default=5.0)
    ap.add_argument("--log", required=True)
    ap.add_argument("--recover", required=True)
    ap.add_argument("--instance", type=int, default=0)
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args()
    log = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def record(job, source: str = "C") -> None:
        if job.status in FINAL:  # one write per line: whole lines, even when killed
            os.write(log, f"{job.id} {job.status} {job.result!r} {args.instance}"
                          f" {source}\n".encode())

    if args.resume:
        while os.path.exists(args.recover):
            try:
                jobs = dispy.recover_jobs(args.recover)
            except ValueError as exc:  # gone meanwhile
                print(f"recover_jobs: {exc}", file=sys.stderr)
                break
            for job in jobs:
                record(job, "R")
            if os.path.exists(args.recover):
                time.sleep(1)  # its scheduler or a node is down: ask again
        print("done", flush=True)
        return 0
    nodes = [dispy.NodeAllocate("127.0.0.1", int(p)) for p in args.nodes.split(",")]
    cluster = dispy.SharedJobCluster(compute, nodes=nodes, scheduler_node="127.0.0.1",
                                     scheduler_port=args.scheduler_port, reentrant=True,
                                     callback=record, recover_file=args.recover)
    for i in range(args.first, args.first + args.count):
        cluster.submit_job_id(i, i, args.job_ms)
    cluster.status()  # after the engine took every submitted job (and journaled it)
    print("journaled", flush=True)
    cluster.wait()
    cluster.close()
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
