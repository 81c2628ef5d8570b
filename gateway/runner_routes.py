"""`/api/runners`: the registered runners and their state (coordinator mode).

In standalone mode sandboxes run in-process: the list is empty and there is
nothing to drain.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from gateway.context import Gateway
from gateway.coordinator import Coordinator
from gateway.http import ApiError, Request, Response, json_response
from gateway.registry import RunnerState


def runner_json(runner: RunnerState, sessions: int) -> dict[str, Any]:
    return {
        "id": runner.id,
        "address": runner.address,
        "state": runner.status,
        "connected": runner.link is not None,
        "capacity": {"active": runner.active, "warming": runner.warming,
                     "max": runner.max_sandboxes},
        "sessions": sessions,
        "heartbeatIntervalMs": round(runner.interval * 1000),
        "lastHeartbeat": runner.last_heartbeat,
        "registeredAt": runner.registered_at,
    }


def _coordinator(gw: Gateway) -> Coordinator | None:
    return gw.backend if isinstance(gw.backend, Coordinator) else None


async def list_runners(gw: Gateway, req: Request) -> Response:
    coordinator = _coordinator(gw)
    if coordinator is None:
        return json_response({"runners": []})
    return json_response({"runners": [
        runner_json(runner, coordinator.runner_sessions(runner.id))
        for runner in coordinator.registry.runners()
    ]})


async def drain_runner(gw: Gateway, req: Request) -> Response:
    """Place no new sessions on the runner; its sessions go on until they end."""
    coordinator = _coordinator(gw)
    if coordinator is None:
        raise ApiError(409, "no runners to drain: the gateway runs in standalone mode")
    runner_id = req.path_params["id"]
    runner = coordinator.registry.drain(runner_id, "drained through the API")
    if runner is None:
        raise ApiError(404, f"runner not found: {runner_id}")
    return json_response({"runner": runner_json(runner, coordinator.runner_sessions(runner.id))})


ROUTES: list[tuple[str, str, Callable[[Gateway, Request], Awaitable[Response]]]] = [
    ("GET", r"/api/runners", list_runners),
    ("POST", r"/api/runners/(?P<id>[^/]+)/drain", drain_runner),
]
