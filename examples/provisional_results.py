"""Provisional results: jobs report progress, and the client stops them early.

Each job is a random search for a small number. Whenever it improves, it sends the
improvement with ``dispy_provisional_result`` and keeps going. The client's callback
sees every provisional result; as soon as one is good enough it cancels every job
still queued or running (running ones get ``KeyboardInterrupt`` on the node).

Nodes: ``DISPY_NODES`` (comma-separated hosts, default ``*``) and ``DISPY_NODE_PORT``.
"""

import os
import threading
import time

import dispy

GOOD_ENOUGH = 0.001
STEPS = 3000  # a full search takes STEPS * 2 ms; a good result usually comes much sooner


def search(seed, steps):
    """Runs on a node: random search; every improvement goes to the client at once."""
    import random
    import time

    rng = random.Random(seed)
    best = 1.0
    for _ in range(steps):
        time.sleep(0.002)  # pretend each guess takes some work
        guess = rng.random()
        if guess < best:
            best = guess
            dispy_provisional_result((seed, best))  # noqa: F821 (bound by dispynode)
    return seed, best


STATUS = {dispy.DispyJob.Finished: "Finished", dispy.DispyJob.Cancelled: "Cancelled",
          dispy.DispyJob.Terminated: "Terminated", dispy.DispyJob.Abandoned: "Abandoned"}

lock = threading.Lock()
jobs = []
found = None  # (seed, value) of the first good-enough result


def job_status(job):
    """Runs in this program (a dispy thread) for each provisional result and each job's end."""
    global found
    if job.status != dispy.DispyJob.ProvisionalResult:
        return
    seed, value = job.result
    print(f"job {job.id} (seed {seed}): provisional best {value:.5f}")
    if value >= GOOD_ENOUGH:
        return
    with lock:
        if found is not None:
            return
        found = (seed, value)
        print(f"good enough: {value:.5f} from job {job.id} (seed {seed});"
              " cancelling the remaining jobs")
        # Queued jobs first, so none of them starts on a CPU freed by a cancelled one.
        for j in sorted(jobs, key=lambda j: j.status != dispy.DispyJob.Created):
            if j.status in (dispy.DispyJob.Created, dispy.DispyJob.Running,
                            dispy.DispyJob.ProvisionalResult):
                cluster.cancel(j)


if __name__ == "__main__":
    nodes = os.environ.get("DISPY_NODES", "*").split(",")
    node_port = int(os.environ.get("DISPY_NODE_PORT", "51348"))

    start = time.time()
    cluster = dispy.JobCluster(search, nodes=nodes, node_port=node_port, port=0,
                               callback=job_status)
    for seed in range(6):
        with lock:  # the callback must see every job it may have to cancel
            if found is None:
                jobs.append(cluster.submit(seed, STEPS))
    cluster.wait()

    for job in jobs:
        when = "never started" if job.start_time is None else "ran"
        print(f"job {job.id}: {STATUS.get(job.status, job.status)} ({when})")
    print(f"best: {found}; elapsed {time.time() - start:.1f} s"
          f" (a full search would take {STEPS * 0.002:.0f} s per job)")
    cluster.close()
