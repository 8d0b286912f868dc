"""cluster.stats(): a cluster's figures as a typed record (dispy.ClusterStats), the
program's side of what dispynode/dispyscheduler --metrics_port serve to Prometheus.

Nodes: ``DISPY_NODES`` (comma-separated hosts, default ``*``) and ``DISPY_NODE_PORT``.
"""

import os

import dispy


def square(x):
    import time

    if x < 0:
        raise ValueError(f"negative: {x}")
    time.sleep(0.05)
    return x * x


if __name__ == "__main__":
    nodes = os.environ.get("DISPY_NODES", "*").split(",")
    node_port = int(os.environ.get("DISPY_NODE_PORT", "51348"))

    with dispy.JobCluster(square, nodes=nodes, node_port=node_port, port=0) as cluster:
        for x in [*range(8), -1]:
            cluster.submit(x)
        cluster.wait()
        stats = cluster.stats(quiet=True)
        print(f"finished {stats.finished} of {stats.submitted}, failed {stats.failed}")
        print(f"{stats.mean_job_seconds:.2f} s per job on {stats.cpus} CPU(s) of"
              f" {stats.nodes} node(s); {stats.bytes_sent} bytes out,"
              f" {stats.bytes_received} bytes back")
