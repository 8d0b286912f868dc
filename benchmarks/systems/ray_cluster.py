"""Driver for Ray (run with benchmarks/.envs/ray's python).

The node is a ``ray start --head`` on 127.0.0.1 started before the clock runs; the client
connects with ``ray.init(address=...)``. Ray is kept in its single-machine mode
(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0) so everything stays on loopback; in that mode it
refuses extra nodes, so many-nodes is skipped (its cluster mode binds the machine's
non-loopback address, and the benchmarks keep all traffic on loopback).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import ray  # noqa: E402
from common import SYSTEMS_DIR, Adapter, Skip, driver_main, free_port  # noqa: E402

BIN = Path(sys.executable).parent


class Ray(Adapter):
    name = "ray"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.address = ""
        self.cpus = 0
        self.env = {"RAY_TMPDIR": str(workdir / "ray"),
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(SYSTEMS_DIR),
                                                                os.environ.get("PYTHONPATH")]))}
        os.environ.update(self.env)

    def version(self) -> str:
        return f"ray {ray.__version__}"

    def start_nodes(self, cpus: list[int]) -> None:
        if len(cpus) != 1:
            raise Skip("Ray's multi-node mode needs a non-loopback address; loopback only here")
        self.cpus = cpus[0]
        port = free_port()
        self.address = f"127.0.0.1:{port}"
        (self.workdir / "ray").mkdir(exist_ok=True)
        argv = [str(BIN / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1",
                "--port", str(port), "--num-cpus", str(self.cpus), "--include-dashboard",
                "false", "--disable-usage-stats"]
        with open(self.workdir / "ray-start.log", "wb") as fh:
            subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, check=True, timeout=180,
                           stdin=subprocess.DEVNULL, env=os.environ.copy())

    def open(self, fn: Callable) -> None:
        ray.init(address=self.address, log_to_driver=False, logging_level="warning")
        self.remote = ray.remote(fn)

    def wait_ready(self, nodes: int, cpus: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while ray.cluster_resources().get("CPU", 0) < cpus:
            if time.monotonic() > deadline:
                raise RuntimeError(f"Ray shows {ray.cluster_resources()}")
            time.sleep(0.1)

    def submit(self, *args: Any) -> Any:
        return self.remote.remote(*args)

    def wait(self, handle: Any, timeout: float | None) -> bool:
        ready, _ = ray.wait([handle], timeout=timeout)
        return bool(ready)

    def outcome(self, handle: Any) -> tuple[bool, Any]:
        try:
            return True, ray.get(handle)
        except Exception:
            return False, None

    def gather(self, handles: list) -> list | None:
        return ray.get(handles)

    def close(self) -> None:
        ray.shutdown()


if __name__ == "__main__":
    driver_main(Ray)
