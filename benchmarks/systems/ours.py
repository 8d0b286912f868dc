"""Driver for this project's dispy (run with the project's .venv python)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Adapter, driver_main, free_port  # noqa: E402

import dispy  # noqa: E402

dispy.JobCluster  # noqa: B018 (load it now, before any clock, as the other systems' imports do)


class Ours(Adapter):
    name = "ours"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.ports: list[int] = []
        self.cluster: Any = None

    def version(self) -> str:
        return str(getattr(dispy, "__version__", "?"))

    def start_nodes(self, cpus: list[int]) -> None:
        started = []
        taken: set[int] = set()
        for c in cpus:
            port = free_port(taken=taken)
            prefix = self.workdir / f"node-{port}"
            prefix.mkdir(exist_ok=True)
            argv = [sys.executable, "-m", "dispy.dispynode", "-c", str(c), "-i", "127.0.0.1",
                    "-p", str(port), "--dest_path_prefix", str(prefix), "--daemon"]
            started.append(self.procs.start(argv, f"node-{port}"))
            self.ports.append(port)
        for proc, log in started:
            self.procs.wait_for(proc, log, "serving", 60)

    def open(self, fn: Callable) -> None:
        self.cluster = dispy.JobCluster(fn, nodes=[("127.0.0.1", p) for p in self.ports],
                                        port=0)

    def program_source(self) -> str:
        return PROGRAM.format(nodes=[("127.0.0.1", p) for p in self.ports])

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
        if self.cluster is not None:
            self.cluster.close(timeout=30, terminate=True)


PROGRAM = """
import dispy

def compute(x):
    return x

cluster = dispy.JobCluster(compute, nodes={nodes!r}, port=0)
job = cluster.submit(7)
print("result", job())
cluster.close()
"""


if __name__ == "__main__":
    driver_main(Ours)
