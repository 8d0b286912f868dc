"""The table ``print_status`` shows: per node jobs, time and traffic; overall speedup."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
