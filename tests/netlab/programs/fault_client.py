"""A dispy client for fault tests: runs jobs while the test breaks nodes and links.

Prints ``ready`` once both nodes are set up, ``progress N`` as jobs finish (the test
acts on these), then ``RESULT <json>`` with every job's final state and how often its
callback saw a final status. Every wait is bounded.

    --nodes IP,IP  --node-port P  --jobs N  --secs S  --pulse P  [--reentrant]
    [--recover-file F] [--hold]   (--hold: never exit; the test kills the program)
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

import dispy


def compute(x, secs):
    import time

    time.sleep(secs)
    return x * x, dispy_node_ip_addr  # noqa: F821 (bound by the node)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", required=True)
    ap.add_argument("--node-port", type=int, required=True)
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--secs", type=float, default=0.05)
    ap.add_argument("--pulse", type=float, default=1)
    ap.add_argument("--reentrant", action="store_true")
    ap.add_argument("--recover-file", default=None)
    ap.add_argument("--hold", action="store_true")
    ap.add_argument("--deadline", type=float, default=100)
    a = ap.parse_args()
    finals: dict[int, int] = {}
    lock = threading.Lock()
    done = [0]

    def callback(job):
        if job.status in (dispy.DispyJob.Finished, dispy.DispyJob.Cancelled,
                          dispy.DispyJob.Terminated, dispy.DispyJob.Abandoned):
            with lock:
                finals[job.id] = finals.get(job.id, 0) + 1
                done[0] += 1
                print(f"progress {done[0]}", flush=True)

    cluster = dispy.JobCluster(compute, nodes=a.nodes.split(","), node_port=a.node_port,
                               callback=callback, pulse_interval=a.pulse,
                               reentrant=a.reentrant, recover_file=a.recover_file)
    deadline = time.monotonic() + 30
    while len(cluster.status().nodes) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    print("ready", flush=True)
    jobs = []
    for i in range(a.jobs):
        jobs.append(cluster.submit_job_id(i, i, a.secs))  # the id is journaled with it
    if a.hold:
        cpus = sum(n.cpus for n in cluster.status().nodes)
        while sum(job.status == dispy.DispyJob.Running for job in jobs) < min(cpus, a.jobs):
            time.sleep(0.02)
        print("all running", flush=True)
        sys.stdin.read()
    finished = cluster.wait(timeout=a.deadline)
    report = {"waited": finished, "jobs": [], "finals": finals}
    for job in jobs:
        res = job.result if job.status == dispy.DispyJob.Finished else None
        report["jobs"].append({"x": job.id, "status": job.status, "result": res,
                               "exception": (job.exception or "")[-300:]})
    cluster.close(timeout=10, terminate=True)
    print("RESULT " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
