"""Driver for Dask distributed (run with benchmarks/.envs/dask's python).

A ``dask scheduler`` process and one ``dask worker`` process per node (``--nworkers`` =
the node's CPUs, one thread each, since the jobs are pure Python), all on 127.0.0.1.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import distributed  # noqa: E402
from common import SYSTEMS_DIR, Adapter, driver_main, free_port, proc_cpu_seconds  # noqa: E402

BIN = Path(sys.executable).parent


class Dask(Adapter):
    name = "dask"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.address = ""
        self.scheduler_pid = 0
        self.client: Any = None

    def version(self) -> str:
        return f"distributed {distributed.__version__}"

    def start_nodes(self, cpus: list[int]) -> None:
        port = free_port()
        self.address = f"tcp://127.0.0.1:{port}"
        # workers import the computations' module by name
        env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(SYSTEMS_DIR),
                                                            os.environ.get("PYTHONPATH")]))}
        proc, log = self.procs.start(
            [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
             "--no-dashboard"], "scheduler", env)
        self.procs.wait_for(proc, log, "Scheduler at", 120)
        self.scheduler_pid = proc.pid
        workers = []
        for k, c in enumerate(cpus):
            proc, log = self.procs.start(
                [str(BIN / "dask"), "worker", self.address, "--host", "127.0.0.1",
                 "--nworkers", str(c), "--nthreads", "1", "--no-dashboard"], f"worker-{k}", env)
            workers.append((proc, log, c))
        deadline = time.monotonic() + 180
        for proc, log, c in workers:  # "node already running": every worker registered
            while log.read_text(errors="replace").count("Registered to") < c:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{log.name}: workers did not register:\n"
                                       + log.read_text(errors="replace")[-2000:])
                time.sleep(0.1)

    def open(self, fn: Callable) -> None:
        self.fn = fn
        self.client = distributed.Client(self.address)

    def wait_ready(self, nodes: int, cpus: int, timeout: float) -> None:
        self.client.wait_for_workers(cpus, timeout=timeout)

    def submit(self, *args: Any) -> Any:
        return self.client.submit(self.fn, *args, pure=False)

    def wait(self, handle: Any, timeout: float | None) -> bool:
        if timeout == 0:
            return handle.done()
        try:
            distributed.wait([handle], timeout=timeout)
        except TimeoutError:
            pass
        return handle.done()

    def outcome(self, handle: Any) -> tuple[bool, Any]:
        if handle.status != "finished":
            return False, None
        return True, handle.result()

    def gather(self, handles: list) -> list | None:
        return self.client.gather(handles)

    def scheduler_cpu(self) -> float | None:
        return proc_cpu_seconds(self.scheduler_pid)

    def close(self) -> None:
        if self.client is not None:
            self.client.close(timeout=30)


if __name__ == "__main__":
    driver_main(Dask)
