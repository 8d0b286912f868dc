"""Per-job time limits and priorities: ``dispy_job_timeout=S`` ends a job that runs
longer (Terminated, "timed out after S s"); ``dispy_job_priority=N`` runs higher
priorities first (FIFO within one priority).

Nodes: ``DISPY_NODES`` (comma-separated hosts, default ``*``) and ``DISPY_NODE_PORT``.
"""

import os

import dispy


def work(name, seconds):
    import time

    time.sleep(seconds)
    return name


if __name__ == "__main__":
    nodes = os.environ.get("DISPY_NODES", "*").split(",")
    node_port = int(os.environ.get("DISPY_NODE_PORT", "51348"))

    with dispy.JobCluster(work, nodes=nodes, node_port=node_port, port=0) as cluster:
        stuck = cluster.submit("stuck", 60, dispy_job_timeout=1)
        stuck()
        terminated = stuck.status == dispy.DispyJob.Terminated
        print(f"stuck: terminated={terminated}: {stuck.exception}")

        # the first jobs take the free CPUs; the rest wait, highest priority first
        jobs = [cluster.submit(f"p{prio}-{i}", 0.2, dispy_job_priority=prio)
                for i in range(2) for prio in (0, 5, 1)]
        dispy.wait(jobs)
        print("started in order:", " ".join(job.result for job in
                                           sorted(jobs, key=lambda job: job.start_time)))
