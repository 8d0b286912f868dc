"""``--metrics_port``: a daemon's figures in Prometheus text, served on its own loop.

The figures are read from the daemon's state when Prometheus scrapes (a collector),
so counting costs nothing per job but the job-duration histogram's ``observe``. Each
daemon has a registry of its own (not prometheus_client's global one). The page binds
to localhost unless ``--metrics_host`` says otherwise; it shows counts, never jobs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ..wire.connection import Traffic

log = logging.getLogger("dispy")

#: Job durations (seconds) the histogram counts in.
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 300, 1800, 3600)


class Figures(Collector):
    """Metric families made by ``read()`` at each scrape."""

    def __init__(self, read: Callable[[], Iterable[Any]]) -> None:
        self.read = read

    def collect(self) -> Iterator[Any]:
        yield from self.read()


def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def by_label(name: str, doc: str, label: str, values: dict[str, float],
             kind: type = CounterMetricFamily) -> Any:
    family = kind(name, doc, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def traffic(prefix: str) -> list[Any]:
    return [counter(f"{prefix}_received_bytes", "Bytes received on its connections",
                    Traffic.received),
            counter(f"{prefix}_sent_bytes", "Bytes sent on its connections", Traffic.sent)]


class Metrics:
    """A daemon's registry, its job-duration histogram and its page."""

    def __init__(self, prefix: str, read: Callable[[], Iterable[Any]]) -> None:
        self.registry = CollectorRegistry()
        self.durations = Histogram(f"{prefix}_job_duration_seconds",
                                   "How long jobs ran (start to end on the node)",
                                   buckets=DURATION_BUCKETS, registry=self.registry)
        self.registry.register(Figures(read))
        self.runner: web.AppRunner | None = None

    def job_ran(self, seconds: float) -> None:
        self.durations.observe(max(0.0, seconds))

    async def serve_or_exit(self, program: str, host: str, port: int) -> None:
        """``serve``, or exit with one line naming the option when the port is taken."""
        try:
            await self.serve(host, port)
        except OSError as exc:
            raise SystemExit(f"{program}: --metrics_port {port} cannot be used on {host}:"
                             f" {exc.strerror or exc}") from None

    async def serve(self, host: str, port: int) -> None:
        """Serve ``/metrics`` (OSError when the port cannot be used)."""
        app = web.Application()
        app.router.add_get("/metrics", self._page)
        app.router.add_get("/", self._page)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError:
            await runner.cleanup()
            raise
        self.runner = runner
        log.info("metrics (Prometheus) on http://%s:%d/metrics", host, port)

    async def _page(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def stop(self) -> None:
        if self.runner is not None:
            runner, self.runner = self.runner, None
            await runner.cleanup()
