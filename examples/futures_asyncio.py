"""Jobs as futures: job.future, dispy.as_completed, dispy.wait, cluster.map,
job(timeout=...) and ``await job`` in asyncio code.

Nodes: ``DISPY_NODES`` (comma-separated hosts, default ``*``) and ``DISPY_NODE_PORT``.
"""

import asyncio
import os

import dispy


def square(n):
    """Runs on a node."""
    import time

    time.sleep(0.05 * (5 - n % 5))  # later jobs finish first
    if n < 0:
        raise ValueError(f"negative: {n}")
    return n * n


if __name__ == "__main__":
    nodes = os.environ.get("DISPY_NODES", "*").split(",")
    node_port = int(os.environ.get("DISPY_NODE_PORT", "51348"))

    with dispy.JobCluster(square, nodes=nodes, node_port=node_port, port=0) as cluster:
        # results in order, like the built-in map
        print("map:", list(cluster.map(range(6))))

        # jobs as they end
        jobs = [cluster.submit(n) for n in range(5)]
        print("as completed:", [job.result for job in dispy.as_completed(jobs, timeout=60)])

        # a job that fails: the future raises dispy.JobError (status and traceback)
        bad = cluster.submit(-1)
        done, _ = dispy.wait([bad], timeout=60, return_when=dispy.FIRST_EXCEPTION)
        error = bad.future.exception()
        print("failed:", error.status_name, error.exception.strip().splitlines()[-1])

        # job() as before, now with a timeout
        slow = cluster.submit(4)
        try:
            slow(timeout=0.001)
        except TimeoutError:
            print("not yet; then:", slow())

        # asyncio: await a job, or gather several
        async def main():
            first = await cluster.submit(7)
            rest = await asyncio.gather(*(cluster.submit(n) for n in (8, 9)))
            return [first, *rest]

        print("awaited:", asyncio.run(main()))
