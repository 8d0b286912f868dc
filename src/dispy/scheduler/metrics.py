"""dispyscheduler's Prometheus figures (``--metrics_port``): read at scrape time."""

from __future__ import annotations

from typing import Any

from ..client.job import STATUS_NAMES
from ..daemon.metrics import Metrics, by_label, counter, gauge, traffic

PREFIX = "dispy_scheduler"


def scheduler_metrics(daemon: Any) -> Metrics:
    """The metrics of ``daemon`` (a SchedulerDaemon, started)."""

    def read() -> list[Any]:
        engine, service = daemon.engine, daemon.service
        nodes = [link for link in engine.links.values()
                 if link.node is not None and link.state == "connected"]
        ended = {STATUS_NAMES.get(k, str(k)): v for k, v in daemon.programs.ended.items()}
        running = sum(engine.core.running(cid) for cid in service.computations)
        queued = sum(len(cs.jobs) for cs in service.computations.values()) - running
        return [
            gauge(f"{PREFIX}_nodes", "Nodes connected", len(nodes)),
            gauge(f"{PREFIX}_cpus", "CPUs of the connected nodes",
                  sum(link.node.cpus for link in nodes)),
            gauge(f"{PREFIX}_cpus_busy", "CPUs running a job of a program",
                  sum(engine.core.node_busy(link.key) for link in nodes)),
            gauge(f"{PREFIX}_jobs_running", "Jobs running on nodes", running),
            gauge(f"{PREFIX}_jobs_queued", "Jobs waiting for a CPU", max(0, queued)),
            by_label(f"{PREFIX}_jobs_ended", "Jobs ended, by final status", "status", ended),
            counter(f"{PREFIX}_jobs_finished", "Jobs that ended Finished",
                    ended.get("Finished", 0)),
            counter(f"{PREFIX}_jobs_failed", "Jobs that ended otherwise",
                    sum(v for k, v in ended.items() if k != "Finished")),
            gauge(f"{PREFIX}_clients", "Client programs connected now",
                  sum(1 for s in daemon.sessions.values() if s.conn is not None)),
            gauge(f"{PREFIX}_programs", "Client programs known (connected or away)",
                  len(daemon.sessions)),
            gauge(f"{PREFIX}_computations", "Computations of the programs",
                  len(service.computations)),
            *traffic(PREFIX),
        ]

    return Metrics(PREFIX, read)
