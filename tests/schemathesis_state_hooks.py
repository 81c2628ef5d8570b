"""Schemathesis hooks (loaded with SCHEMATHESIS_HOOKS) adding one check: a request the
gateway rejects (any 4xx) changes nothing a client can see.

Before every call the gateway's visible state is read through its own API (agents,
sessions, the pinned session's files); after a rejected call it is read again and must be
the same. The gateway under test is named by ASH_FUZZ_URL, ASH_FUZZ_KEY, ASH_FUZZ_SESSION.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import schemathesis

_client = httpx.Client(base_url=os.environ["ASH_FUZZ_URL"], timeout=30,
                       headers={"Authorization": f"Bearer {os.environ['ASH_FUZZ_KEY']}"})
_session = os.environ["ASH_FUZZ_SESSION"]
_before: dict[int, Any] = {}


def visible_state() -> dict[str, Any]:
    def read(path: str) -> Any:
        response = _client.get(path)
        return response.status_code, response.json()

    return {
        "agents": read("/api/agents"),
        "sessions": read("/api/sessions?limit=1000"),
        "files": read(f"/api/sessions/{_session}/files?includeHidden=true"),
    }


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    _before[id(case)] = visible_state()


@schemathesis.check
def rejected_request_changes_nothing(ctx: Any, response: Any, case: Any) -> None:
    before = _before.pop(id(case), None)
    if before is None or not 400 <= response.status_code < 500:
        return
    after = visible_state()
    changed = [part for part in before if before[part] != after[part]]
    if changed:
        raise AssertionError(
            f"rejected with {response.status_code}, yet changed {', '.join(changed)}: "
            f"{before} -> {after}")
