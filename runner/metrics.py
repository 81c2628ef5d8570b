"""Prometheus metrics of one runner process, computed at scrape time from its state.

The gauges read the backend and the gRPC servicer when Prometheus asks (a collector),
so serving turns costs nothing extra. Served by prometheus_client's own HTTP server on
`--metrics-port` (ASH_METRICS_PORT), without auth: bind it to loopback or a private
network. Every metric is listed in docs/metrics.md.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from runner.backend import Backend

METRICS_PORT_ENV = "ASH_METRICS_PORT"


class RunnerCollector(Collector):
    """`ash_up{runner}`, uptime, sandboxes, pool and open gRPC session streams."""

    def __init__(self, runner_id: str, backend: Backend, service: Any) -> None:
        self.runner_id = runner_id
        self.backend = backend
        self.service = service
        self.started = time.time()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats = self.backend.stats()
        up = GaugeMetricFamily("ash_up", "1 while this process serves", labels=["runner"])
        up.add_metric([self.runner_id], 1)
        yield up
        yield GaugeMetricFamily("ash_uptime_seconds", "seconds since the runner started",
                                value=time.time() - self.started)
        yield GaugeMetricFamily("ash_active_sandboxes", "sandboxes holding a session",
                                value=stats.sandboxes)
        yield GaugeMetricFamily("ash_pool_max_capacity", "most live sandboxes at once",
                                value=stats.capacity)
        pool = GaugeMetricFamily("ash_pool_sandboxes", "sandboxes by state", labels=["state"])
        ready, starting = ((stats.pool.ready, stats.pool.starting)
                           if stats.pool is not None else (0, 0))
        for state, value in (("warm", ready), ("warming", starting),
                             ("running", stats.busy), ("waiting", stats.sandboxes - stats.busy)):
            pool.add_metric([state], value)
        yield pool
        yield GaugeMetricFamily("ash_grpc_session_streams",
                                "open gRPC Session streams (one per attached session)",
                                value=len(getattr(self.service, "_inboxes", {})))


def serve_metrics(port: int, host: str, runner_id: str, backend: Backend,
                  service: Any) -> CollectorRegistry:
    """Start the /metrics HTTP server (a thread of prometheus_client's) on `host:port`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RunnerCollector(runner_id, backend, service))
    start_http_server(port, addr=host, registry=registry)
    return registry
