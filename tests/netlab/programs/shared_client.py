"""A SharedJobCluster client program: runs jobs through a dispyscheduler.

Prints ``ready`` once the cluster has a node, ``progress N`` as jobs finish, then
``RESULT <json>``: per job its argument, result, status, node and when it ran (node
clock). Every wait is bounded.

    --scheduler IP --scheduler-port P --nodes SPEC[,SPEC] (IP, IP:PORT or *)
    [--tag T] [--jobs N] [--secs S] [--exclusive] [--secret S] [--certfile F]
    [--recover-file F] [--wait-nodes N] [--hold] (never exit; the test kills the program)
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import dispy


def compute(tag, x, secs):
    import time

    start = time.time()
    time.sleep(secs)
    return tag, x * x, dispy_node_ip_addr, start, time.time()  # noqa: F821 (node builtin)


def node_spec(text: str):
    if ":" in text:
        host, port = text.rsplit(":", 1)
        return dispy.NodeAllocate(host, int(port))
    return text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scheduler", required=True)
    ap.add_argument("--scheduler-port", type=int, required=True)
    ap.add_argument("--nodes", default="*")
    ap.add_argument("--tag", default="A")
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--secs", type=float, default=0.1)
    ap.add_argument("--exclusive", action="store_true")
    ap.add_argument("--reentrant", action="store_true")
    ap.add_argument("--secret", default="")
    ap.add_argument("--certfile", default=None)
    ap.add_argument("--hold", action="store_true")
    ap.add_argument("--recover-file", default=None)
    ap.add_argument("--wait-nodes", type=int, default=0,
                    help="submit only once this many nodes are set up")
    ap.add_argument("--deadline", type=float, default=100)
    a = ap.parse_args()
    try:
        cluster = dispy.SharedJobCluster(
            compute, nodes=[node_spec(n) for n in a.nodes.split(",")],
            scheduler_node=a.scheduler, scheduler_port=a.scheduler_port,
            exclusive=a.exclusive, reentrant=a.reentrant, secret=a.secret,
            certfile=a.certfile, recover_file=a.recover_file)
    except ConnectionError as exc:
        print(f"REFUSED {exc}", flush=True)
        sys.exit(3)
    created = time.time()
    deadline = time.monotonic() + a.deadline
    while (len(cluster.status().nodes) < a.wait_nodes and time.monotonic() < deadline):
        time.sleep(0.05)
    jobs = [cluster.submit(a.tag, i, a.secs) for i in range(a.jobs)]
    while not cluster.status().nodes and time.monotonic() < deadline:
        time.sleep(0.05)
    print(f"ready {time.time() - created:.3f}", flush=True)
    done = 0
    for job in jobs:
        job.finish.wait(max(0.0, deadline - time.monotonic()))
        done += 1
        print(f"progress {done}", flush=True)
    if a.hold:
        while True:
            time.sleep(1)
    out = []
    for i, job in enumerate(jobs):
        res = job.result if job.status == dispy.DispyJob.Finished else None
        out.append({"x": i, "status": job.status, "exception": job.exception,
                    "result": list(res) if isinstance(res, tuple) else res,
                    "ip": job.ip_addr})
    cluster.close(timeout=10, terminate=True)
    print("RESULT " + json.dumps({"jobs": out, "created": created}), flush=True)


if __name__ == "__main__":
    main()
