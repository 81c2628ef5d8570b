"""`/api/runners`: the registered runners and their state (coordinator mode).

In standalone mode sandboxes run in-process: the list is empty and there is
nothing to drain. Runners are shared infrastructure, not any tenant's: only the
default tenant (the operator) sees and drains them; another tenant's key gets 403.
"""

from __future__ import annotations

from typing import Any

from gateway.api.operation import Operation
from gateway.api.schemas import BOOLEAN, INTEGER, NUMBER, STRING, array, obj
from gateway.context import Gateway
from gateway.coordinator import Coordinator
from gateway.http import ApiError, Request, Response, json_response
from gateway.registry import RunnerState
from gateway.store import DEFAULT_TENANT


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


def _operator_only(req: Request) -> None:
    """Runners are shared by every tenant: only the operator (the default tenant) sees
    and drains them."""
    if req.tenant_id != DEFAULT_TENANT:
        raise ApiError(403, "runners are shared infrastructure: only the default tenant's "
                            "keys see and drain them")


async def list_runners(gw: Gateway, req: Request) -> Response:
    _operator_only(req)
    coordinator = _coordinator(gw)
    if coordinator is None:
        return json_response({"runners": []})
    return json_response({"runners": [
        runner_json(runner, coordinator.runner_sessions(runner.id))
        for runner in coordinator.registry.runners()
    ]})


async def drain_runner(gw: Gateway, req: Request) -> Response:
    """Place no new sessions on the runner; its sessions go on until they end."""
    _operator_only(req)
    coordinator = _coordinator(gw)
    if coordinator is None:
        raise ApiError(409, "no runners to drain: the gateway runs in standalone mode")
    runner_id = req.path_params["id"]
    runner = coordinator.registry.drain(runner_id, "drained through the API")
    if runner is None:
        raise ApiError(404, f"runner not found: {runner_id}")
    return json_response({"runner": runner_json(runner, coordinator.runner_sessions(runner.id))})


RUNNER = obj({
    "id": STRING, "address": STRING, "state": STRING, "connected": BOOLEAN,
    "capacity": obj({"active": INTEGER, "warming": INTEGER, "max": INTEGER}),
    "sessions": INTEGER, "heartbeatIntervalMs": INTEGER,
    "lastHeartbeat": NUMBER, "registeredAt": NUMBER,
}, "id", "address", "state", "connected", "capacity", "sessions")

OPERATIONS = [
    Operation("GET", "/api/runners", list_runners, "List the registered runners",
              {200: obj({"runners": array(RUNNER)}, "runners")}),
    Operation("POST", "/api/runners/{id}/drain", drain_runner,
              "Drain a runner: no new sessions are placed on it",
              {200: obj({"runner": RUNNER}, "runner")}),
]
