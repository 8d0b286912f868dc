"""A dispy client run inside a netlab host: submits short jobs, reports where they ran.

Output (stdout): progress lines, then one line ``RESULT <json>`` with every job's input,
result, status and node. Every wait is bounded, so a broken product fails the test with
a report instead of hanging it.

    --nodes JSON       the ``nodes=`` argument (lists inside become tuples)
    --wait-nodes K     before submitting, wait (bounded) until K nodes are set up
    --secret S         the cluster's secret
    --multicast        ipv4_udp_multicast=True
    --until-ip IP      after the first batch, print "submitted" and keep running batches
                       until a job finished on IP (or --deadline passes)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

import dispy


def compute(x, delay):
    import time

    time.sleep(delay)
    return x * x, dispy_node_ip_addr  # noqa: F821 (bound by the node)


def node_ips(cluster) -> list[str]:
    return sorted(n.ip_addr for n in cluster.status().nodes)


def wait_nodes(cluster, count: int, timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        ips = node_ips(cluster)
        if len(ips) >= count or time.monotonic() >= deadline:
            return ips
        time.sleep(0.05)


def run_batch(cluster, xs: range, delay: float, timeout: float) -> list[dict]:
    jobs = [(x, cluster.submit(x, delay)) for x in xs]
    deadline = time.monotonic() + timeout
    out = []
    for x, job in jobs:
        if job is None:
            out.append({"x": x, "status": None, "error": "submit returned None"})
            continue
        done = job.finish.wait(max(0.0, deadline - time.monotonic()))
        result = job.result if done else None
        out.append({"x": x, "result": list(result) if isinstance(result, tuple) else result,
                    "ip": job.ip_addr, "status": job.status if done else "not finished",
                    "exception": job.exception})
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--nodes", required=True)
    p.add_argument("--node-port", type=int, required=True)
    p.add_argument("--jobs", type=int, default=40)
    p.add_argument("--delay", type=float, default=0.05)
    p.add_argument("--wait-nodes", type=int, default=0)
    p.add_argument("--until-ip", default=None)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--deadline", type=float, default=60.0)
    p.add_argument("--secret", default="")
    p.add_argument("--multicast", action="store_true", help="ipv4_udp_multicast=True")
    a = p.parse_args()
    nodes = [tuple(n) if isinstance(n, list) else n for n in json.loads(a.nodes)]
    t0 = time.monotonic()
    report: dict = {"timings": {}}

    def mark(name: str) -> None:
        report["timings"][name] = round(time.monotonic() - t0, 3)
        print(f"{name} at {report['timings'][name]:.3f}s", flush=True)

    cluster = dispy.JobCluster(compute, nodes=nodes, node_port=a.node_port,
                               loglevel=logging.INFO, secret=a.secret,
                               ipv4_udp_multicast=a.multicast)
    mark("cluster_created")
    try:
        if a.wait_nodes:
            report["nodes_before_submit"] = wait_nodes(cluster, a.wait_nodes, a.deadline / 2)
            mark("nodes_ready")
        report["jobs"] = run_batch(cluster, range(a.jobs), a.delay, a.deadline)
        mark("first_batch_done")
        if a.until_ip:
            print("submitted", flush=True)
            deadline = time.monotonic() + a.deadline
            x = a.jobs
            while time.monotonic() < deadline:
                batch = run_batch(cluster, range(x, x + a.batch), a.delay, a.deadline)
                report["jobs"] += batch
                x += a.batch
                if any(j.get("ip") == a.until_ip for j in batch):
                    mark("late_node_used")
                    break
        report["nodes_at_end"] = node_ips(cluster)
    finally:
        report["closed"] = cluster.close(timeout=a.deadline, terminate=True)
        mark("closed")
        print("RESULT " + json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
