"""The table ``print_status`` shows: per node jobs, time and traffic; overall speedup."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..wire.records import Plain


@dataclass
class NodeStats:
    """One cluster's work on one node (a row of ``print_status``)."""

    ip_addr: str
    name: str
    cpus: int = 0
    jobs_done: int = 0
    cpu_time: float = 0.0
    tx: int = 0
    rx: int = 0

    def count(self, ran: float, tx: int, rx: int) -> None:
        self.jobs_done += 1
        self.cpu_time += ran
        self.tx += tx
        self.rx += rx


def _size(n: float) -> str:
    for unit in ("B", "K", "M", "G"):
        if n < 1024 or unit == "G":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n}"


def format_status(nodes: list[Any], pending: int, wall_time: float) -> str:
    lines = [
        "",
        "                           Node |  CPUs |    Jobs |    Sec/Job | Node Time Sec |"
        "    Sent |    Rcvd",
        "-" * 105,
    ]
    total_jobs, total_time = 0, 0.0
    for n in sorted(nodes, key=lambda n: n.ip_addr):
        name = f"{n.ip_addr} ({n.name})" if n.name else n.ip_addr
        per = n.cpu_time / n.jobs_done if n.jobs_done else 0.0
        lines.append(f" {name[:30]:>30} | {n.cpus:5} | {n.jobs_done:7} | {per:10.3f} |"
                     f" {n.cpu_time:13.3f} | {_size(n.tx):>7} | {_size(n.rx):>7}")
        total_jobs += n.jobs_done
        total_time += n.cpu_time
    lines.append("")
    if pending:
        lines.append(f"Jobs pending: {pending}")
    speedup = total_time / wall_time if wall_time > 0 else 0.0
    lines.append(f"Total job time: {total_time:.3f} sec, wall time: {wall_time:.3f} sec,"
                 f" speedup: {speedup:.3f}")
    lines.append("")
    return "\n".join(lines)


@dataclass(frozen=True, repr=False, eq=False)
class ClusterStats(Plain):
    """A cluster's figures (``cluster.stats()``): the client's side of what the nodes'
    and dispyscheduler's ``--metrics_port`` pages show."""

    #: jobs submitted so far
    submitted: int
    #: jobs waiting for a CPU (status Created)
    queued: int
    #: jobs sent to a node and not ended
    running: int
    #: jobs ended Finished
    finished: int
    #: jobs ended otherwise (Cancelled, Terminated, Abandoned)
    failed: int
    #: nodes set up for the cluster, the CPUs it may use there, and how many are busy
    nodes: int
    cpus: int
    busy: int
    #: run time of its ended jobs as the nodes measured it (seconds), and per job
    job_seconds: float
    mean_job_seconds: float
    #: bytes of arguments sent and results received
    bytes_sent: int
    bytes_received: int


def cluster_stats(state: Any, submitted: int, pending: int) -> ClusterStats:
    """(engine thread) The figures of one cluster."""
    from .job import DispyJob

    running = sum(1 for job in state.jobs.values() if job.status != DispyJob.Created)
    rows = list(state.stats.values())
    done = sum(row.jobs_done for row in rows)
    seconds = sum(row.cpu_time for row in rows)
    failed = min(getattr(state, "failed", 0), max(0, submitted - pending))
    nodes = list(state.nodes.items())
    return ClusterStats(
        submitted=submitted, queued=max(0, pending - running), running=running,
        finished=max(0, submitted - pending - failed), failed=failed, nodes=len(nodes),
        cpus=sum(state.node_cpus.get(key, node.cpus) for key, node in nodes),
        busy=sum(node.busy for _, node in nodes), job_seconds=seconds,
        mean_job_seconds=seconds / done if done else 0.0,
        bytes_sent=sum(row.tx for row in rows), bytes_received=sum(row.rx for row in rows))
