"""`GET /api/sessions/{id}/logs`: the session's bridge output (its sandbox's stdout and
stderr), read from the log its runner keeps on disk (`runner.bridge_log`)."""

from __future__ import annotations

from gateway.api.operation import Operation, Param
from gateway.api.schemas import INTEGER, ISO_TIME, STRING, array, obj
from gateway.api.sessions import session_of
from gateway.context import Gateway
from gateway.http import Request, Response, json_response
from gateway.params import INT64_MAX, parse_int
from gateway.timestamps import iso_utc
from runner.bridge_log import LOG_LEVELS, MAX_LINES

LOG_SOURCE = "sandbox"


def _after(raw: str | None) -> int:
    """`after`: a line index, or -1 (the reference's default: from the first line)."""
    if raw is None or raw == "-1":
        return -1
    return parse_int(raw, "`after` (a line index, or -1)", low=0, high=INT64_MAX)


async def session_logs(gw: Gateway, req: Request) -> Response:
    after = _after(req.query().get("after"))
    session_id = session_of(gw, req).id
    page = await gw.backend.logs(session_id, after, MAX_LINES)
    ts = iso_utc(page.modified)
    return json_response({
        "logs": [{"index": line.index, "level": line.level, "text": line.text, "ts": ts}
                 for line in page.lines],
        "source": LOG_SOURCE,
    })


LOG_ENTRY = obj({"index": INTEGER, "level": {"type": "string", "enum": list(LOG_LEVELS)},
                 "text": STRING, "ts": ISO_TIME}, "index", "level", "text", "ts")

OPERATIONS = [
    Operation("GET", "/api/sessions/{id}/logs", session_logs,
              f"The session's bridge output, line by line (at most {MAX_LINES} a call); "
              "empty once the sandbox's directory is gone",
              {200: obj({"logs": array(LOG_ENTRY), "source": STRING}, "logs", "source")},
              query=(Param("after", {"type": "integer", "minimum": -1},
                           "only lines whose index is above this one (-1: all)"),)),
]
