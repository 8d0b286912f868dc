"""Instances of your own classes as job arguments and results.

``depends=[Rectangle]`` ships the class to the nodes so they can unpickle the
arguments and pickle the results; what a job prints comes back in ``job.stdout``.

Nodes: ``DISPY_NODES`` (comma-separated hosts, default ``*``) and ``DISPY_NODE_PORT``.
"""

import os

import dispy


class Rectangle:
    def __init__(self, width, height):
        self.width, self.height = width, height

    def area(self):
        return self.width * self.height

    def __repr__(self):
        return f"Rectangle({self.width}, {self.height})"


def scale(rect, factor):
    """Runs on a node: gets a Rectangle, returns a new one."""
    print(f"scaling {rect} (area {rect.area()}) by {factor}")
    return Rectangle(rect.width * factor, rect.height * factor)


if __name__ == "__main__":
    nodes = os.environ.get("DISPY_NODES", "*").split(",")
    node_port = int(os.environ.get("DISPY_NODE_PORT", "51348"))

    cluster = dispy.JobCluster(scale, nodes=nodes, node_port=node_port, port=0,
                               depends=[Rectangle])
    jobs = [cluster.submit(Rectangle(w, w + 1), 3) for w in range(1, 6)]
    for job in jobs:
        bigger = job()
        if job.status != dispy.DispyJob.Finished:
            print(f"job {job.id} failed: {job.exception}")
            continue
        assert isinstance(bigger, Rectangle)
        print(f"result: {bigger!r} area {bigger.area()}; node said: {job.stdout.strip()}")
    cluster.close()
