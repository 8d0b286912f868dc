"""Watch a cluster in a web browser: dispy.httpd.DispyHTTPServer (as in dispy 4.15).

While it runs, open the address it prints (http://localhost:8181/) to see the nodes, the
jobs finishing, each node's running jobs with their arguments (shown with the
arguments' ``__str__``) and the controls. ``shutdown()`` sends the pages the final state.

Nodes: ``DISPY_NODES`` (comma-separated hosts, default ``*``), ``DISPY_NODE_PORT``
(default 51348); ``DISPY_HTTP_PORT`` (default 8181).
"""

import os
import random

import dispy
import dispy.httpd


class Work:
    """An argument with a readable text on the node page."""

    def __init__(self, n, seconds):
        self.n = n
        self.seconds = seconds

    def __str__(self):
        return f"work {self.n} ({self.seconds:.1f} s)"


def compute(work):
    import time

    time.sleep(work.seconds)
    return work.n * work.n


if __name__ == "__main__":
    nodes = os.environ.get("DISPY_NODES", "*").split(",")
    node_port = int(os.environ.get("DISPY_NODE_PORT", "51348"))
    http_port = int(os.environ.get("DISPY_HTTP_PORT", "8181"))

    cluster = dispy.JobCluster(compute, nodes=nodes, node_port=node_port, port=0,
                               depends=[Work], pulse_interval=2)
    http_server = dispy.httpd.DispyHTTPServer(cluster, port=http_port)
    jobs = []
    for i in range(8):
        job = cluster.submit(Work(i, random.uniform(0.1, 0.5)))
        job.id = i
        jobs.append(job)
    cluster.wait()  # the browser shows progress meanwhile
    for job in jobs:
        print(f"job {job.id} computed {job.result} on {job.ip_addr}")
    http_server.shutdown()  # pages get the final state first
    cluster.close()
