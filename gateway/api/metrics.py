"""`GET /metrics`: Prometheus text exposition, behind the API key as in the reference."""

from __future__ import annotations

from typing import Any

from gateway.api.health import COORDINATOR_ID
from gateway.api.operation import Operation
from gateway.api.schemas import STRING
from gateway.context import Gateway
from gateway.http import Request, Response
from gateway.metrics import CONTENT_TYPE, GatewayMetrics


def metric_state(gw: Gateway) -> dict[str, Any]:
    """What the scrape-time gauges read: the same sources as /health."""
    stats = gw.backend.stats()
    pool = stats.pool
    warm, warming = (pool.ready, pool.starting) if pool is not None else (0, 0)
    state: dict[str, Any] = {
        "active_sessions": gw.store.count_sessions_by_status().get("active", 0),
        "active_sandboxes": stats.sandboxes,
        "max_capacity": stats.capacity,
        "pool": {"warm": warm, "warming": warming, "running": stats.busy,
                 "waiting": stats.sandboxes - stats.busy},
        "resume_warm": gw.sessions.resume_warm_hits,
        "resume_cold": gw.sessions.resume_cold_hits,
    }
    registry = getattr(gw.backend, "registry", None)
    if registry is not None:
        state["runners"] = {"connected": len(registry.runners()),
                            "heartbeats": registry.heartbeats, "lost": registry.lost}
    return state


def gateway_metrics(gw: Gateway) -> GatewayMetrics:
    """The gateway's metrics, made at first use."""
    if gw.metrics is None:
        gw.metrics = GatewayMetrics(COORDINATOR_ID, lambda: metric_state(gw))
    return gw.metrics


async def metrics(gw: Gateway, req: Request) -> Response:
    return Response(200, gateway_metrics(gw).render(), CONTENT_TYPE)


OPERATIONS = [
    Operation("GET", "/metrics", metrics, "Prometheus metrics (docs/metrics.md)", {200: STRING}),
]
