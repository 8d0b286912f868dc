"""In-memory data on each node: ``setup`` loads it once, every job of that node uses it.

The numbers 1..N are split into one shard per node entry. Each entry is a
``NodeAllocate`` with its own ``depends`` (the shard's file, copied to that node only)
and ``setup_args`` (the file name and a label, passed to ``setup`` and ``cleanup``).
``setup`` reads the file into a global; jobs run in processes forked after ``setup``,
so they see it without reading anything. ``cleanup`` frees it when the cluster closes.

Nodes: ``DISPY_NODES``, comma-separated hosts or ``host:port`` entries (default ``*``:
then every node gets all the numbers), and ``DISPY_NODE_PORT`` (default 51348).
"""

import os
import tempfile

import dispy

N = 10000


def setup(shard_file, label):
    """Runs once on each node, in the computation's directory, before any job."""
    global numbers, shard
    with open(shard_file) as fh:
        numbers = [int(line) for line in fh]
    shard = label
    return 0  # anything else means: don't use this node


def cleanup(shard_file, label):
    """Runs on each node when the cluster closes."""
    global numbers, shard
    del numbers, shard


def compute(divisor):
    """Runs on a node: uses the shard that setup loaded into memory."""
    multiples = [x for x in numbers if x % divisor == 0]  # noqa: F821 (set by setup)
    return dispy_node_name, shard, len(multiples), sum(multiples)  # noqa: F821


class ShardNode(dispy.NodeAllocate):
    """A node entry with its own shard; says which node got it."""

    def allocate(self, cluster, ip_addr, name, cpus, avail_info=None, platform=""):
        cpus = super().allocate(cluster, ip_addr, name, cpus, avail_info, platform)
        if cpus:
            print(f"node {name} ({ip_addr}) gets {self.setup_args[1]}")
        return cpus


def node_entries():
    """DISPY_NODES as (host, port) pairs (``host`` or ``host:port``)."""
    default_port = int(os.environ.get("DISPY_NODE_PORT", "51348"))
    entries = []
    for entry in os.environ.get("DISPY_NODES", "*").split(","):
        host, _, port = entry.partition(":")
        entries.append((host, int(port) if port else default_port))
    return entries


if __name__ == "__main__":
    entries = node_entries()
    with tempfile.TemporaryDirectory() as tmp:
        nodes = []
        size = -(-N // len(entries))
        for i, (host, port) in enumerate(entries):
            path = os.path.join(tmp, f"shard-{i}.txt")
            with open(path, "w") as fh:
                for x in range(1 + i * size, min(N, (i + 1) * size) + 1):
                    fh.write(f"{x}\n")
            nodes.append(ShardNode(host, port=port, depends=[path],
                                   setup_args=(os.path.basename(path), f"shard-{i}")))

        cluster = dispy.JobCluster(compute, nodes=nodes, port=0, setup=setup, cleanup=cleanup)
        jobs = [cluster.submit(divisor) for divisor in range(2, 10)]
        for divisor, job in zip(range(2, 10), jobs, strict=True):
            result = job()
            if job.status != dispy.DispyJob.Finished:
                print(f"divisor {divisor}: job failed: {job.exception}")
                continue
            name, label, count, total = result
            print(f"divisor {divisor}: {count} multiples, sum {total} in {label} on {name}")
        cluster.close()
