"""dispynode's Prometheus figures (``--metrics_port``): read from the daemon at scrape."""

from __future__ import annotations

from typing import Any

from ..daemon.metrics import Metrics, by_label, counter, gauge, traffic
from .avail import avail_info

PREFIX = "dispy_node"
#: Final job statuses as the wire numbers them (DispyJob's constants)
STATUS_NAMES = {8: "Cancelled", 9: "Terminated", 10: "Abandoned", 11: "Finished"}


def node_metrics(daemon: Any) -> Metrics:
    """The metrics of ``daemon`` (a NodeDaemon)."""

    def read() -> list[Any]:
        clients = sum(1 for s in daemon.sessions.values() if s.conn is not None)
        ended = {STATUS_NAMES.get(k, str(k)): v for k, v in daemon.jobs.ended.items()}
        failed = sum(v for k, v in ended.items() if k != "Finished")
        figures = [
            gauge(f"{PREFIX}_cpus", "CPUs this node serves", daemon.cpus),
            gauge(f"{PREFIX}_cpus_busy", "CPUs running a job", daemon.jobs.busy),
            gauge(f"{PREFIX}_jobs_running", "Jobs running now", daemon.jobs.busy),
            gauge(f"{PREFIX}_jobs_waiting", "Jobs waiting here for a CPU",
                  len(daemon.jobs.waiting)),
            by_label(f"{PREFIX}_jobs_ended", "Jobs ended, by final status", "status", ended),
            counter(f"{PREFIX}_jobs_finished", "Jobs that ended Finished",
                    ended.get("Finished", 0)),
            counter(f"{PREFIX}_jobs_failed", "Jobs that ended otherwise", failed),
            counter(f"{PREFIX}_cpu_seconds", "Seconds jobs ran", daemon.jobs.cpu_time),
            gauge(f"{PREFIX}_clients", "Client programs connected now", clients),
            counter(f"{PREFIX}_clients_served", "Clients served since start", daemon.served),
            *traffic(PREFIX),
        ]
        avail = avail_info(daemon.opts.dest_path_prefix)
        figures += [
            gauge(f"{PREFIX}_available_cpu_percent", "CPU percent free", avail["cpu"]),
            gauge(f"{PREFIX}_available_memory_bytes", "Memory available", avail["memory"]),
            gauge(f"{PREFIX}_available_disk_bytes", "Disk free under --dest_path_prefix",
                  avail["disk"]),
            gauge(f"{PREFIX}_available_swap_percent", "Swap percent free", avail["swap"]),
        ]
        return figures

    return Metrics(PREFIX, read)

