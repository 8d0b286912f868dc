"""Driver for concurrent.futures.ProcessPoolExecutor: the one-machine ceiling."""

from __future__ import annotations

import concurrent.futures as cf
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Adapter, Skip, driver_main  # noqa: E402


class Pool(Adapter):
    name = "pool"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.cpus = 0
        self.pool: cf.ProcessPoolExecutor | None = None

    def version(self) -> str:
        return f"ProcessPoolExecutor (Python {platform.python_version()})"

    def start_nodes(self, cpus: list[int]) -> None:
        if len(cpus) != 1:
            raise Skip("a process pool is one machine: many-nodes does not apply")
        self.cpus = cpus[0]

    def open(self, fn: Callable) -> None:
        self.fn = fn
        self.pool = cf.ProcessPoolExecutor(self.cpus)

    def program_source(self) -> str:
        return PROGRAM.format(cpus=self.cpus)

    def submit(self, *args: Any) -> Any:
        assert self.pool is not None
        return self.pool.submit(self.fn, *args)

    def wait(self, handle: Any, timeout: float | None) -> bool:
        cf.wait([handle], timeout=timeout)
        return handle.done()

    def outcome(self, handle: Any) -> tuple[bool, Any]:
        if handle.cancelled() or handle.exception() is not None:
            return False, None
        return True, handle.result()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


PROGRAM = """
import concurrent.futures

def compute(x):
    return x

if __name__ == "__main__":
    with concurrent.futures.ProcessPoolExecutor({cpus}) as pool:
        print("result", pool.submit(compute, 7).result())
"""


if __name__ == "__main__":
    driver_main(Pool)
