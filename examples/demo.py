"""`make demo`: start a local dispynode, run a real computation over it, stop the node.

The jobs take long enough (about 0.4 s of CPU each) for the node's two CPUs to pay off,
so the speedup printed at the end is close to 2. Nothing is left behind: the node's
directory is a temporary one, removed at the end (also after Ctrl-C or an error).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time

import dispy

JOB_SECONDS = 0.4
JOBS = 10


def compute(n, seconds):
    """Runs on the node: CPU work for about ``seconds``, and where it ran."""
    import time

    end = time.process_time() + seconds
    total = 0
    while time.process_time() < end:
        total += sum(i * i for i in range(1000))
    return dispy_node_name, n, total  # noqa: F821  (bound by dispynode)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, node: subprocess.Popen, timeout: float = 15.0) -> None:
    """Wait until the node accepts connections (it started), at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node.poll() is not None:
            raise SystemExit(f"dispynode exited with code {node.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("dispynode did not start")


def main() -> None:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="dispy-demo-") as prefix:
        log_path = os.path.join(prefix, "dispynode.log")
        with open(log_path, "wb") as log:
            node = subprocess.Popen(
                [sys.executable, "-m", "dispy.dispynode", "-i", "127.0.0.1", "-p", str(port),
                 "-c", "2", "--dest_path_prefix", prefix, "--daemon", "-s", "demo-secret"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        try:
            try:
                wait_listening(port, node)
            except SystemExit:
                with open(log_path) as fh:
                    print(fh.read(), file=sys.stderr)
                raise
            print(f"dispynode started on 127.0.0.1:{port} (PID {node.pid}), 2 CPUs\n")
            cluster = dispy.JobCluster(compute, nodes=["127.0.0.1"], node_port=port, port=0,
                                       secret="demo-secret")
            jobs = [cluster.submit(n, JOB_SECONDS) for n in range(1, JOBS + 1)]
            for job in jobs:
                name, n, total = job()
                print(f"job {job.id:2}: compute({n:2}) = {total:>14,} on {name}"
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
