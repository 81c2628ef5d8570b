"""The route table: every resource module's operations, compiled for matching."""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.api import (
    agent_files,
    agent_versions,
    agents,
    api_keys,
    attachments,
    credentials,
    docs,
    events,
    files,
    health,
    logs,
    messages,
    metrics,
    queue,
    runners,
    sessions,
    usage,
)
from gateway.api.operation import Handler, Operation, path_regex

OPERATIONS: list[Operation] = [
    *health.OPERATIONS,
    *metrics.OPERATIONS,
    *agents.OPERATIONS,
    *agent_files.OPERATIONS,
    *agent_versions.OPERATIONS,
    *sessions.OPERATIONS,
    *messages.OPERATIONS,
    *events.OPERATIONS,
    *logs.OPERATIONS,
    *files.OPERATIONS,
    *queue.OPERATIONS,
    *attachments.OPERATIONS,
    *usage.OPERATIONS,
    *runners.OPERATIONS,
    *api_keys.OPERATIONS,
    *credentials.OPERATIONS,
    *docs.OPERATIONS,
]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    public: bool = False


def compile_routes(operations: list[Operation] | None = None) -> list[Route]:
    return [Route(op.method, path_regex(op.path), op.handler, op.public)
            for op in (OPERATIONS if operations is None else operations)]
