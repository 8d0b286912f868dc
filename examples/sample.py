"""The canonical dispy program: ship a function to the nodes, submit jobs, collect results.

Each job computes the sum of squares below ``n`` and says which node ran it
(``dispy_node_name`` is bound on the node). At the end ``print_status`` shows how the
jobs were spread over the nodes.

Nodes: ``DISPY_NODES`` (comma-separated hosts, default ``*`` = find them by broadcast)
and ``DISPY_NODE_PORT`` (default 51348).
"""

import os

import dispy


def compute(n):
    """Runs on a node."""
    import time

    time.sleep(0.1)  # pretend this takes a while
    return dispy_node_name, sum(i * i for i in range(n))  # noqa: F821 (bound by dispynode)


if __name__ == "__main__":
    nodes = os.environ.get("DISPY_NODES", "*").split(",")
    node_port = int(os.environ.get("DISPY_NODE_PORT", "51348"))

    cluster = dispy.JobCluster(compute, nodes=nodes, node_port=node_port, port=0)
    jobs = []
    for i in range(10):
        job = cluster.submit(1000 + i)
        job.id = i  # any value the program likes
        jobs.append(job)

    for job in jobs:
        host, total = job()  # waits for the job to finish
        print(f"job {job.id}: compute({1000 + job.id}) = {total} on {host}"
              f" in {job.end_time - job.start_time:.2f} s")
    cluster.print_status()
    cluster.close()
