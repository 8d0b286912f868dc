"""Variables shared by all jobs of a node: ``setup`` creates multiprocessing shared values.

Jobs on a node run in several processes (one per CPU), all forked from the process
that ran ``setup``, so shared memory that ``setup`` creates is inherited by every one
of them. Here each job adds to a per-node counter (``multiprocessing.Value``, with its
own lock) and a running total (``multiprocessing.sharedctypes.Value``); the values each
job sees show that all of a node's jobs, in different processes, update the same memory.

Nodes: ``DISPY_NODES`` (comma-separated hosts, default ``*``) and ``DISPY_NODE_PORT``.
"""

import os
from collections import defaultdict

import dispy


def setup():
    """Runs once on each node; jobs are forked from this process afterwards."""
    import multiprocessing
    import multiprocessing.sharedctypes

    global jobs_seen, total
    jobs_seen = multiprocessing.Value("i", 0)  # a shared int with a lock
    total = multiprocessing.sharedctypes.Value("d", 0.0, lock=True)  # a shared double
    return 0


def cleanup():
    global jobs_seen, total
    del jobs_seen, total


def compute(x):
    """Runs on a node: update the node's shared values, report what this job saw."""
    import os
    import time

    with jobs_seen.get_lock():  # noqa: F821 (created by setup)
        jobs_seen.value += 1  # noqa: F821
        seen = jobs_seen.value  # noqa: F821
    with total.get_lock():  # noqa: F821
        total.value += x  # noqa: F821
        so_far = total.value  # noqa: F821
    time.sleep(0.1)  # let jobs overlap, so the node's CPUs all run some
    return dispy_node_name, os.getpid(), seen, so_far  # noqa: F821 (bound by dispynode)


if __name__ == "__main__":
    nodes = os.environ.get("DISPY_NODES", "*").split(",")
    node_port = int(os.environ.get("DISPY_NODE_PORT", "51348"))

    cluster = dispy.JobCluster(compute, nodes=nodes, node_port=node_port, port=0,
                               setup=setup, cleanup=cleanup)
    jobs = {x: cluster.submit(x) for x in range(1, 21)}
    seen = defaultdict(list)
    pids = defaultdict(set)
    totals = defaultdict(float)
    for x, job in jobs.items():
        name, pid, count, so_far = job()
        seen[name].append(count)
        pids[name].add(pid)
        totals[name] = max(totals[name], so_far)
        print(f"x={x} on {name} (process {pid}): job number {count} of that node,"
              f" total so far {so_far:g}")
    for name in sorted(seen):
        print(f"node {name}: {len(seen[name])} jobs in {len(pids[name])} processes,"
              f" counts {sorted(seen[name])}, total {totals[name]:g}")
    cluster.close()
