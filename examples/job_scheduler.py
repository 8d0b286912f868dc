"""A scheduler in the client: ``cluster_status`` + ``submit_node``, one job per node at a time.

dispy normally spreads jobs over all CPUs of all nodes. Here the program decides
instead: when a node is ready (``DispyNode.Initialized``) it gets one job with
``submit_node``; when that job ends, the same node gets the next one. Each job also
carries its own data file (``dispy_job_depends``), removed from the node after the job.

Nodes: ``DISPY_NODES``, comma-separated hosts or ``host:port`` entries (default ``*``),
and ``DISPY_NODE_PORT`` (default 51348).
"""

import os
import tempfile
import threading

import dispy


def compute(path):
    """Runs on a node: add up the numbers in the job's own data file."""
    import time

    start = time.time()
    with open(path) as fh:
        total = sum(int(line) for line in fh)
    time.sleep(0.2)  # pretend this takes a while
    return dispy_node_name, path, total, start, time.time()  # noqa: F821 (bound by dispynode)


def node_list():
    """DISPY_NODES entries as NodeAllocate objects (``host`` or ``host:port``)."""
    default_port = int(os.environ.get("DISPY_NODE_PORT", "51348"))
    nodes = []
    for entry in os.environ.get("DISPY_NODES", "*").split(","):
        host, _, port = entry.partition(":")
        nodes.append(dispy.NodeAllocate(host, port=int(port) if port else default_port))
    return nodes


lock = threading.Lock()
todo = []  # data files not yet given to a node
results = {}  # data file -> (node name, total, start, end), or the error
job_file = {}  # job id -> its data file
all_done = threading.Event()


def give_work(node):
    """Submit the next data file to ``node``, if any is left (called with ``lock`` held)."""
    if not todo:
        return
    path = todo.pop()
    job = cluster.submit_node(node, os.path.basename(path), dispy_job_depends=[path])
    if job is None:
        todo.append(path)  # the node went away; another one will take this file
        return
    job_file[job.id] = path


def cluster_status(status, node, job):
    """Runs in this program for every node and job status change."""
    with lock:
        if status == dispy.DispyNode.Initialized:
            print(f"node {node.name} ({node.ip_addr}) is ready")
            give_work(node)
        elif status == dispy.DispyJob.Finished:
            name, path, total, start, end = job.result
            results[job_file.pop(job.id)] = (name, total, start, end)
            print(f"{path}: total {total} on {name} ({start:.3f} .. {end:.3f})")
            give_work(node)
        elif status in (dispy.DispyJob.Terminated, dispy.DispyJob.Cancelled,
                        dispy.DispyJob.Abandoned):
            results[job_file.pop(job.id)] = job.exception
            print(f"job {job.id} failed: {job.exception}")
            give_work(node)
        elif status == dispy.DispyNode.Closed:
            print(f"node {node.name} ({node.ip_addr}) closed")
        if len(results) == len(files):
            all_done.set()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i in range(8):
            path = os.path.join(tmp, f"data-{i}.txt")
            with open(path, "w") as fh:
                fh.write("\n".join(str(i * 100 + k) for k in range(10)) + "\n")
            files.append(path)
        todo.extend(reversed(files))

        with lock:  # callbacks use ``cluster``: they wait until it is assigned
            cluster = dispy.JobCluster(compute, nodes=node_list(), port=0,
                                       cluster_status=cluster_status)
        all_done.wait()
        cluster.close()

    print(f"{len(results)} files done")
