"""Prometheus metrics of one gateway: `GET /metrics` (behind the API key) and, when
configured, a port of its own (no auth).

One registry per `Gateway`, so several gateways in one process keep apart. State gauges
(sessions, sandboxes, pool, runners) and the counters kept as plain ints on the hot path
(`StreamCounters`, the registry's heartbeats) are read at scrape time by a collector:
a streamed event costs an integer add. Only the once-per-turn latencies are
prometheus_client histograms. Every metric is listed in docs/metrics.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0, 60.0, float("inf"))


@dataclass
class StreamCounters:
    """What the SSE writers count, as plain ints (read at scrape time)."""

    events: int = 0
    bytes: int = 0
    open: int = 0
    write_timeout_cuts: int = 0


@dataclass
class GatewayMetrics:
    coordinator_id: str
    state: Callable[[], dict[str, Any]]
    """The gateway's state at scrape time (`gateway.api.health.metric_state`)."""
    streams: StreamCounters = field(default_factory=StreamCounters)
    registry: CollectorRegistry = field(init=False)
    first_event: Histogram = field(init=False)
    turn: Histogram = field(init=False)

    def __post_init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_StateCollector(self))

        def histogram(name: str, doc: str) -> Histogram:
            return Histogram(name, doc, registry=self.registry, buckets=LATENCY_BUCKETS)

        self.first_event = histogram(
            "ash_first_event_seconds",
            "message request in -> the turn's first agent frame written to the client")
        self.turn = histogram("ash_turn_duration_seconds",
                              "message request in -> the turn's done written")

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics
        self.started = time.time()

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        s = m.state()
        up = GaugeMetricFamily("ash_up", "1 while this process serves", labels=["coordinator"])
        up.add_metric([m.coordinator_id], 1)
        yield up
        yield GaugeMetricFamily("ash_uptime_seconds", "seconds since the gateway started",
                                value=time.time() - self.started)
        yield GaugeMetricFamily("ash_active_sessions", "sessions in status active",
                                value=s["active_sessions"])
        yield GaugeMetricFamily("ash_active_sandboxes", "sandboxes holding a session",
                                value=s["active_sandboxes"])
        pool = GaugeMetricFamily("ash_pool_sandboxes", "sandboxes by state", labels=["state"])
        for state, value in s["pool"].items():
            pool.add_metric([state], value)
        yield pool
        yield GaugeMetricFamily("ash_pool_max_capacity", "most live sandboxes at once",
                                value=s["max_capacity"])
        resume = CounterMetricFamily("ash_resume", "resumes by path", labels=["path"])
        resume.add_metric(["warm"], s["resume_warm"])
        resume.add_metric(["cold"], s["resume_cold"])
        yield resume
        cold = CounterMetricFamily("ash_resume_cold", "cold resumes by where the state came from",
                                   labels=["source"])
        cold.add_metric(["local"], s["resume_cold"])
        yield cold
        st = m.streams
        yield CounterMetricFamily("ash_events_streamed", "SSE event frames written to clients",
                                  value=st.events)
        yield CounterMetricFamily("ash_bytes_streamed", "SSE bytes written to clients",
                                  value=st.bytes)
        yield GaugeMetricFamily("ash_sse_streams_open", "SSE responses open now", value=st.open)
        yield CounterMetricFamily("ash_write_timeout_cuts",
                                  "clients cut after reading nothing for the write timeout",
                                  value=st.write_timeout_cuts)
        if (runners := s.get("runners")) is not None:
            yield GaugeMetricFamily("ash_runners", "runners registered and connected",
                                    value=runners["connected"])
            yield CounterMetricFamily("ash_runner_heartbeats", "heartbeats received from runners",
                                      value=runners["heartbeats"])
            yield CounterMetricFamily("ash_runners_lost",
                                      "runners lost (missed heartbeats or a broken stream)",
                                      value=runners["lost"])
