"""`GET /health`: the reference's fields and ours beside them (public)."""

from __future__ import annotations

import importlib.metadata
import os
import socket
import time

from gateway.api.operation import Operation
from gateway.api.schemas import ANY_OBJECT, INTEGER, NUMBER, STRING, obj
from gateway.context import Gateway
from gateway.http import Request, Response, json_response

COORDINATOR_ID = f"{socket.gethostname()}-{os.getpid()}"
"""Which gateway process answered (the reference's `coordinatorId`: host and pid)."""
try:
    GATEWAY_VERSION = importlib.metadata.version("ash-gateway")
except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
    GATEWAY_VERSION = "0+unknown"

POOL_FIELDS = ("total", "cold", "warming", "warm", "waiting", "running", "maxCapacity",
               "resumeWarmHits", "resumeColdHits", "preWarmHits")


async def health(gw: Gateway, req: Request) -> Response:
    """The reference's health fields (`activeSessions`, `uptime` in whole seconds,
    `pool{…}`, …) and ours beside them (`mode`, `uptimeSeconds`, `sessions`, …)."""
    stats = gw.backend.stats()
    sessions = gw.store.count_sessions_by_status()
    uptime = time.time() - gw.started_at
    pool = stats.pool
    warm, warming = (pool.ready, pool.starting) if pool is not None else (0, 0)
    return json_response({
        "status": "ok",
        "version": GATEWAY_VERSION,
        "coordinatorId": COORDINATOR_ID,
        "activeSessions": sessions.get("active", 0),
        "activeSandboxes": stats.sandboxes,
        "remoteRunners": len(gw.store.list_runners()),
        "uptime": int(uptime),
        "pool": {
            "total": stats.sandboxes + warm + warming,
            "cold": 0,
            "warming": warming,
            "warm": warm,
            "waiting": stats.sandboxes - stats.busy,
            "running": stats.busy,
            "maxCapacity": stats.capacity,
            "resumeWarmHits": gw.sessions.resume_warm_hits,
            "resumeColdHits": gw.sessions.resume_cold_hits,
            "preWarmHits": pool.served if pool is not None else 0,
        },
        "mode": gw.mode,
        "uptimeSeconds": round(uptime, 3),
        "sessions": sessions,
        "sandboxes": {"live": stats.sandboxes, "busy": stats.busy},
        **({"warmPool": {"size": pool.size, "ready": pool.ready,
                         "starting": pool.starting, "served": pool.served}}
           if pool is not None else {}),
        **({"sandbox": gw.sandbox} if gw.sandbox is not None else {}),
    })


HEALTH = obj({
    "status": {"type": "string", "const": "ok"},
    "version": STRING,
    "coordinatorId": STRING,
    "activeSessions": INTEGER,
    "activeSandboxes": INTEGER,
    "remoteRunners": INTEGER,
    "uptime": INTEGER,
    "pool": obj({name: INTEGER for name in POOL_FIELDS}, *POOL_FIELDS),
    "mode": {"type": "string", "enum": ["standalone", "coordinator"]},
    "uptimeSeconds": NUMBER,
    "sessions": {"type": "object", "additionalProperties": INTEGER},
    "sandboxes": obj({"live": INTEGER, "busy": INTEGER}, "live", "busy"),
    "warmPool": obj({"size": INTEGER, "ready": INTEGER, "starting": INTEGER, "served": INTEGER}),
    "sandbox": ANY_OBJECT,
}, "status", "version", "coordinatorId", "activeSessions", "activeSandboxes",
    "remoteRunners", "uptime", "pool", "mode")

OPERATIONS = [
    Operation("GET", "/health", health, "Health, capacity and pool counts", {200: HEALTH},
              public=True),
]
