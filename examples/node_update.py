"""Run a program once on every node, e.g. to update software or data on all of them.

The computation is a program (``node_update_script.py``, shipped to the nodes and run
there with their Python), not a function. Nothing is submitted up front: whenever
``cluster_status`` reports a node as ``DispyNode.Initialized``, that node gets exactly
one job with ``submit_node``. A program job's result is its exit status, and its
``stdout``/``stderr`` are bytes.

The program stops when every node listed in ``DISPY_NODES`` (comma-separated hosts or
``host:port`` entries) has run the update; with the default ``*`` it keeps looking for
nodes (``discover_nodes``) for ``DISPY_UPDATE_WINDOW`` seconds (default 10).
``DISPY_NODE_PORT`` is the node port (default 51348).
"""

import os
import threading
import time

import dispy

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node_update_script.py")

lock = threading.Condition()
done_nodes = set()  # nodes that got their update job (a node may be set up again later)
updated = {}  # job id -> name of the node it updates
finished = []  # (node name, exit status, output) of each update


def cluster_status(status, node, job):
    """Runs in this program for every node and job status change."""
    with lock:
        if status == dispy.DispyNode.Initialized and node not in done_nodes:
            job = cluster.submit_node(node, node.name)
            if job is not None:
                done_nodes.add(node)
                updated[job.id] = node.name
                print(f"updating node {node.name} ({node.ip_addr})")
        elif status in (dispy.DispyJob.Finished, dispy.DispyJob.Terminated,
                        dispy.DispyJob.Cancelled, dispy.DispyJob.Abandoned):
            output = (job.stdout or b"").decode().strip()
            finished.append((updated[job.id], job.result, output or job.exception))
            lock.notify_all()


def node_list():
    """DISPY_NODES entries as NodeAllocate objects (``host`` or ``host:port``)."""
    default_port = int(os.environ.get("DISPY_NODE_PORT", "51348"))
    nodes = []
    for entry in os.environ.get("DISPY_NODES", "*").split(","):
        host, _, port = entry.partition(":")
        nodes.append(dispy.NodeAllocate(host, port=int(port) if port else default_port))
    return nodes


if __name__ == "__main__":
    nodes = node_list()
    listed = None if any("*" in n.host for n in nodes) else len(nodes)
    window = float(os.environ.get("DISPY_UPDATE_WINDOW", "10"))

    with lock:  # callbacks use ``cluster``: they wait until it is assigned
        cluster = dispy.JobCluster(SCRIPT, nodes=nodes, port=0, cluster_status=cluster_status)
    deadline = time.monotonic() + window
    while time.monotonic() < deadline:
        with lock:
            if listed is not None and len(finished) >= listed:
                break
            lock.wait(min(deadline - time.monotonic(), 2.0))
        if listed is None:
            cluster.discover_nodes(nodes)  # look again for nodes started meanwhile
    cluster.wait()  # updates still running
    cluster.close()

    for name, status, output in finished:
        print(f"{name}: exit status {status}: {output}")
    print(f"{len(updated)} node(s) updated")
