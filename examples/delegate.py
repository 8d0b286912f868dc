"""Per-job functions: each job brings the function it needs with ``dispy_job_depends``.

The cluster's computation is a small dispatcher. Every ``submit`` names the function to
run and ships it with that job only (``dispy_job_depends=[func]``), so the nodes never
need all of them at once; the dispatcher finds it among its globals.

Nodes: ``DISPY_NODES`` (comma-separated hosts, default ``*``) and ``DISPY_NODE_PORT``.
"""

import os

import dispy


def factorial(n):
    result = 1
    for i in range(2, n + 1):
        result *= i
    return result


def fibonacci(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def collatz_steps(n):
    steps = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps


def delegate(func_name, n):
    """Runs on a node: call the function that came with this job."""
    func = globals()[func_name]
    return func_name, n, func(n)


if __name__ == "__main__":
    nodes = os.environ.get("DISPY_NODES", "*").split(",")
    node_port = int(os.environ.get("DISPY_NODE_PORT", "51348"))

    cluster = dispy.JobCluster(delegate, nodes=nodes, node_port=node_port, port=0)
    jobs = []
    for func in (factorial, fibonacci, collatz_steps):
        for n in (10, 20, 27):
            jobs.append(cluster.submit(func.__name__, n, dispy_job_depends=[func]))

    for job in jobs:
        result = job()
        if job.status != dispy.DispyJob.Finished:
            print(f"job {job.id} failed: {job.exception}")
            continue
        name, n, value = result
        print(f"{name}({n}) = {value}")
    cluster.close()
