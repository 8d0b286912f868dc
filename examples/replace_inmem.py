"""Swapping a node's in-memory data with ``resetup_node``.

``setup`` loads a data file into memory; jobs use it. After the first round of jobs,
the program points every node's ``NodeAllocate`` at a different file (``depends`` and
``setup_args``) and calls ``resetup_node``: the node closes the computation, gets the
new file and runs ``setup`` again; once ``cluster_status`` reports the node
``Initialized`` again, the second round works on the new data. The
``NodeAllocate`` subclass also shows how ``allocate`` can choose nodes, here by platform.

Nodes: ``DISPY_NODES``, comma-separated hosts or ``host:port`` entries (default ``*``),
and ``DISPY_NODE_PORT`` (default 51348).
"""

import os
import re
import tempfile
import threading

import dispy


def setup(data_file):
    """Runs on each node: load the data set into memory for the jobs."""
    global table, table_name
    with open(data_file) as fh:
        table = [int(line) for line in fh]
    table_name = data_file
    return 0


def cleanup(data_file):
    global table, table_name
    del table, table_name


def lookup(i):
    """Runs on a node: entry ``i`` of the data set that is in memory now."""
    return dispy_node_name, table_name, table[i]  # noqa: F821 (set by dispynode and setup)


class LinuxNodes(dispy.NodeAllocate):
    """Use only Linux nodes (in-memory data shared with forked jobs needs fork) that
    have memory to spare."""

    def allocate(self, cluster, ip_addr, name, cpus, avail_info=None, platform=""):
        if not re.match("Linux", platform):
            print(f"not using node {name} ({ip_addr}): platform {platform}")
            return 0
        if avail_info is not None and avail_info.memory < 100 * 1024 ** 2:
            print(f"not using node {name} ({ip_addr}): only {avail_info.memory} bytes free")
            return 0
        print(f"using node {name} ({ip_addr}): {platform}")
        return super().allocate(cluster, ip_addr, name, cpus, avail_info, platform)


def node_list():
    """DISPY_NODES entries (``host`` or ``host:port``) as LinuxNodes."""
    default_port = int(os.environ.get("DISPY_NODE_PORT", "51348"))
    nodes = []
    for entry in os.environ.get("DISPY_NODES", "*").split(","):
        host, _, port = entry.partition(":")
        nodes.append(LinuxNodes(host, port=int(port) if port else default_port))
    return nodes


nodes_ready = threading.Semaphore(0)


def cluster_status(status, node, job):
    """Runs in this program; a node is Initialized after each (re)setup."""
    if status == dispy.DispyNode.Initialized:
        print(f"node {node.name} ({node.ip_addr}) is set up")
        nodes_ready.release()


def write_table(directory, name, values):
    path = os.path.join(directory, name)
    with open(path, "w") as fh:
        fh.writelines(f"{v}\n" for v in values)
    return path


def run_round(cluster, label):
    jobs = {i: cluster.submit(i) for i in range(10)}
    for i, job in jobs.items():
        result = job()
        if job.status != dispy.DispyJob.Finished:
            print(f"{label}: job {i} failed: {job.exception}")
            continue
        name, table_name, value = result
        print(f"{label}: lookup({i}) = {value} from {table_name} on {name}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        squares = write_table(tmp, "squares.txt", (i * i for i in range(10)))
        cubes = write_table(tmp, "cubes.txt", (i ** 3 for i in range(10)))

        nodes = node_list()
        for alloc in nodes:
            alloc.depends, alloc.setup_args = [squares], ("squares.txt",)
        cluster = dispy.JobCluster(lookup, nodes=nodes, port=0, setup=setup, cleanup=cleanup,
                                   cluster_status=cluster_status)
        # Wait for the listed nodes (with "*": the first one) so that all get round 1's data
        # and the resetup below; a node found later would be set up with whatever is current.
        for _ in nodes:
            nodes_ready.acquire()
        run_round(cluster, "round 1")

        # New data for every node: the next setup of each node gets cubes.txt.
        for alloc in nodes:
            alloc.depends, alloc.setup_args = [cubes], ("cubes.txt",)
        resetup = cluster.status().nodes
        for node in resetup:
            print(f"setting up node {node.name} ({node.ip_addr}) again")
            cluster.resetup_node(node)
        # resetup_node returns at once; a node says Initialized again once its setup is done.
        for _ in resetup:
            nodes_ready.acquire()
        run_round(cluster, "round 2")
        cluster.close()
