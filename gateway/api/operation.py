"""One API operation as the route table declares it: method, path, handler, and the
request and response schemas that the OpenAPI document (`gateway.api.openapi`) is built
from. A path is a template: `{name}` matches one segment, `{path+}` the rest of the path.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.context import Gateway
from gateway.http import Request, Response

Handler = Callable[[Gateway, Request], Awaitable[Response | None]]
Schema = dict[str, Any]

JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Content:
    """A response body that is not JSON (an SSE stream, a file, an archive)."""

    media_type: str
    schema: Schema = field(default_factory=lambda: {"type": "string"})


@dataclass(frozen=True, slots=True)
class Param:
    """A query parameter."""

    name: str
    schema: Schema
    description: str = ""


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    path: str
    handler: Handler
    summary: str
    responses: Mapping[int, Schema | Content | tuple[Content, ...] | None]
    """Per status: a JSON schema, the body's media type(s) (one per `Content`), or None
    for no body (204)."""
    body: Schema | None = None
    """The JSON request body's schema; None when the operation takes no body."""
    query: tuple[Param, ...] = ()
    public: bool = False
    """Answered without the API key (every /api/ path requires it)."""
    body_required: bool = True

    @property
    def tag(self) -> str:
        """The resource a reader looks the operation up by: the module that declares it."""
        return self.handler.__module__.rsplit(".", 1)[-1]


_PARAM = re.compile(r"\{(\w+)(\+?)\}")


def path_regex(template: str) -> re.Pattern[str]:
    """`/api/sessions/{id}/files/{path+}` → a pattern with named groups."""
    parts: list[str] = []
    end = 0
    for match in _PARAM.finditer(template):
        parts.append(re.escape(template[end:match.start()]))
        name, greedy = match.groups()
        parts.append(f"(?P<{name}>.+)" if greedy else f"(?P<{name}>[^/]+)")
        end = match.end()
    parts.append(re.escape(template[end:]))
    return re.compile("".join(parts))


def path_parameters(template: str) -> list[str]:
    return [match.group(1) for match in _PARAM.finditer(template)]


def openapi_path(template: str) -> str:
    """The template as OpenAPI writes it (`{path+}` → `{path}`)."""
    return template.replace("+}", "}")
