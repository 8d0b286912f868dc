"""Bounded submission: never more than UPPER jobs pending, however many there are to do.

Submitting a million jobs at once keeps a million argument sets in the client's memory.
Here the program submits until UPPER jobs are pending, then waits on a
``threading.Condition`` until the callback, which sees jobs finish, has brought the
number down to LOWER; then it submits again. Finished jobs are dropped at once, so
memory stays bounded too.

Nodes: ``DISPY_NODES`` (comma-separated hosts, default ``*``) and ``DISPY_NODE_PORT``.
"""

import os
import threading

import dispy

TOTAL = 60
LOWER, UPPER = 4, 10


def compute(n):
    """Runs on a node."""
    import time

    time.sleep(0.02)
    return n * n


pending = {}  # job id -> job, for submitted jobs that have not ended yet
cond = threading.Condition()
results = {}
max_pending = 0


def job_status(job):
    """Runs in this program when a job ends (and for each provisional result)."""
    if job.status in (dispy.DispyJob.Finished, dispy.DispyJob.Terminated,
                      dispy.DispyJob.Cancelled, dispy.DispyJob.Abandoned):
        with cond:
            pending.pop(job.id)
            results[job.id] = job.result if job.status == dispy.DispyJob.Finished else None
            if len(pending) <= LOWER:
                cond.notify()


if __name__ == "__main__":
    nodes = os.environ.get("DISPY_NODES", "*").split(",")
    node_port = int(os.environ.get("DISPY_NODE_PORT", "51348"))

    cluster = dispy.JobCluster(compute, nodes=nodes, node_port=node_port, port=0,
                               callback=job_status)
    waits = 0
    for n in range(TOTAL):
        with cond:  # held while submitting, so the callback can't see a job before we do
            job = cluster.submit_job_id(n, n)
            pending[job.id] = job
            max_pending = max(max_pending, len(pending))
            if len(pending) >= UPPER:
                waits += 1
                cond.wait_for(lambda: len(pending) <= LOWER)
    cluster.wait()

    wrong = [n for n in range(TOTAL) if results.get(n) != n * n]
    print(f"{len(results)} jobs done, {len(wrong)} wrong results")
    print(f"at most {max_pending} jobs pending (bound {UPPER}); waited {waits} times")
    cluster.close()
