"""Driver for this project through dispyscheduler: SharedJobCluster, one scheduler, the
same nodes as ``ours.py`` (issue 17: shared tiny jobs/s against JobCluster direct)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import driver_main, free_port  # noqa: E402
from ours import Ours  # noqa: E402

import dispy  # noqa: E402

dispy.SharedJobCluster  # noqa: B018 (load it now, before any clock)


class OursShared(Ours):
    name = "shared"

    def start_nodes(self, cpus: list[int]) -> None:
        super().start_nodes(cpus)
        self.sched_port = free_port()
        prefix = self.workdir / "scheduler"
        prefix.mkdir(exist_ok=True)
        argv = [sys.executable, "-m", "dispy.dispyscheduler", "-i", "127.0.0.1",
                "--scheduler_port", str(self.sched_port), "-p", str(free_port()),
                "--dest_path_prefix", str(prefix), "--daemon"]
        proc, log = self.procs.start(argv, "scheduler")
        self.procs.wait_for(proc, log, "clients connect to", 60)

    def open(self, fn: Callable) -> None:
        self.cluster = dispy.SharedJobCluster(
            fn, nodes=[dispy.NodeAllocate("127.0.0.1", p) for p in self.ports],
            scheduler_node="127.0.0.1", scheduler_port=self.sched_port)

    def program_source(self) -> str:
        return PROGRAM.format(nodes=self.ports, sched=self.sched_port)


PROGRAM = """
import dispy

def compute(x):
    return x

cluster = dispy.SharedJobCluster(
    compute, nodes=[dispy.NodeAllocate("127.0.0.1", p) for p in {nodes!r}],
    scheduler_node="127.0.0.1", scheduler_port={sched})
job = cluster.submit(7)
print("result", job())
cluster.close()
"""


if __name__ == "__main__":
    driver_main(OursShared)
