"""`make demo`: start a local dispynode, run a real computation over it, stop the node."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time

import dispy


def compute(n):
    """Runs on the node: a little CPU work, and where it ran."""
    total = sum(i * i for i in range(n * 20000))
    return dispy_node_name, n, total  # noqa: F821  (bound by dispynode)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    port = free_port()
    prefix = tempfile.mkdtemp(prefix="dispy-demo-")
    node = subprocess.Popen(
        [sys.executable, "-m", "dispy.dispynode", "-i", "127.0.0.1", "-p", str(port),
         "--dest_path_prefix", prefix, "--daemon", "-s", "demo-secret"],
        start_new_session=True,
    )
    try:
        time.sleep(1.0)
        print(f"dispynode started on 127.0.0.1:{port} (PID {node.pid})\n")
        cluster = dispy.JobCluster(compute, nodes=["127.0.0.1"], node_port=port, port=0,
                                   secret="demo-secret")
        jobs = [cluster.submit(n) for n in range(1, 11)]
        for job in jobs:
            name, n, total = job()
            print(f"job {job.id:2}: compute({n:2}) = {total:>16,} on {name}"
                  f" ({job.end_time - job.start_time:.3f} s)")
        cluster.print_status()
        cluster.close()
    finally:
        node.terminate()
        node.wait(30)
        print("dispynode stopped")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
