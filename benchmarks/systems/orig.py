"""Driver for the original dispy 4.15.2 from PyPI (run with benchmarks/.envs/orig's python).

Loopback needs ``host='127.0.0.1'`` on the client and ``-i 127.0.0.1`` on the node; ports
follow its base-port scheme (``-p B``: the node listens on B+1; the client's
``dispy_port=C`` is where it listens). The original keys nodes by IP address, so several
nodes on one host need distinct addresses: node k runs on 127.0.0.(k+1).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Adapter, driver_main, free_port  # noqa: E402

import dispy  # noqa: E402


class Original(Adapter):
    name = "orig"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.nodes: list[Any] = []
        self.cluster: Any = None

    def version(self) -> str:
        return str(dispy._dispy_version)

    def start_nodes(self, cpus: list[int]) -> None:
        started = []
        taken: set[int] = set()
        for k, c in enumerate(cpus):
            addr = f"127.0.0.{k + 1}"
            base = free_port(addr, span=2, taken=taken)
            prefix = self.workdir / f"node-{k + 1}"
            prefix.mkdir(exist_ok=True)
            argv = [sys.executable, "-m", "dispy.dispynode", "-c", str(c), "-i", addr,
                    "-p", str(base), "--dest_path_prefix", str(prefix), "--clean", "--daemon"]
            started.append(self.procs.start(argv, f"node-{k + 1}"))
            self.nodes.append(dispy.NodeAllocate(addr, port=base + 1))
        for proc, log in started:
            self.procs.wait_for(proc, log, "serving", 60)

    def open(self, fn: Callable) -> None:
        port = free_port("127.0.0.1")
        self.cluster = dispy.JobCluster(fn, nodes=self.nodes, host="127.0.0.1",
                                        dispy_port=port, loglevel=dispy.logger.WARNING)

    def program_source(self) -> str:
        nodes = [(n.ip_addr, n.port) for n in self.nodes]
        return PROGRAM.format(nodes=nodes, port=free_port("127.0.0.1"))

    def wait_ready(self, nodes: int, cpus: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.cluster.status().nodes) < nodes:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(self.cluster.status().nodes)} of {nodes} nodes")
            time.sleep(0.05)

    def submit(self, *args: Any) -> Any:
        return self.cluster.submit(*args)

    def wait(self, handle: Any, timeout: float | None) -> bool:
        return handle.finish.wait(timeout)

    def outcome(self, handle: Any) -> tuple[bool, Any]:
        return handle.status == dispy.DispyJob.Finished, handle.result

    def close(self) -> None:
        pass  # its close() waits without bound; the driver exits and kills the nodes


PROGRAM = """
import dispy

def compute(x):
    return x

cluster = dispy.JobCluster(compute, host="127.0.0.1", dispy_port={port},
                           nodes=[dispy.NodeAllocate(ip, port=p) for ip, p in {nodes!r}],
                           loglevel=dispy.logger.WARNING)
job = cluster.submit(7)
print("result", job())
cluster.close()
"""


if __name__ == "__main__":
    driver_main(Original)
