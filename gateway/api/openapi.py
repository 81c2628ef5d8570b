"""The OpenAPI 3.1 document, generated from the route table (each `Operation` declares its
path, query, body and response schemas once; this module only lays them out)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gateway.api.health import GATEWAY_VERSION
from gateway.api.operation import JSON, Content, Operation, openapi_path, path_parameters
from gateway.api.schemas import COMPONENTS, ref

Document = dict[str, Any]

SECURITY_SCHEME = "bearer"
ERROR_RESPONSE: Document = {"description": "An error: `{error, statusCode}`",
                            "content": {JSON: {"schema": ref("Error")}}}
UNAUTHORIZED: Document = {"description": "Missing or invalid API key",
                          "content": {JSON: {"schema": ref("Error")}}}


def openapi_document(operations: Iterable[Operation]) -> Document:
    paths: dict[str, dict[str, Any]] = {}
    tags: list[str] = []
    for op in operations:
        paths.setdefault(openapi_path(op.path), {})[op.method.lower()] = _operation(op)
        if op.tag not in tags:
            tags.append(op.tag)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Ash gateway", "version": GATEWAY_VERSION,
                 "description": "Deploy agents, run sessions in sandboxes, stream their turns."},
        "tags": [{"name": tag} for tag in tags],
        "paths": paths,
        "components": {
            "schemas": dict(COMPONENTS),
            "securitySchemes": {SECURITY_SCHEME: {"type": "http", "scheme": "bearer"}},
        },
    }


def _operation(op: Operation) -> Document:
    doc: Document = {
        "operationId": f"{op.method.lower()}_{op.handler.__name__}",
        "summary": op.summary,
        "tags": [op.tag],
        "responses": _responses(op),
    }
    parameters = [{"name": name, "in": "path", "required": True,
                   "schema": {"type": "string", "minLength": 1}}
                  for name in path_parameters(op.path)]
    parameters += [{"name": p.name, "in": "query", "required": False, "schema": p.schema,
                    **({"description": p.description} if p.description else {})}
                   for p in op.query]
    if parameters:
        doc["parameters"] = parameters
    if op.body is not None:
        doc["requestBody"] = {"required": op.body_required,
                              "content": {JSON: {"schema": op.body}}}
    doc["security"] = [] if op.public else [{SECURITY_SCHEME: []}]
    return doc


def _responses(op: Operation) -> Document:
    responses: Document = {}
    for status, declared in sorted(op.responses.items()):
        if declared is None:
            responses[str(status)] = {"description": op.summary}
            continue
        if isinstance(declared, Content):
            declared = (declared,)
        if isinstance(declared, tuple):
            content = {c.media_type: {"schema": c.schema} for c in declared}
        else:
            content = {JSON: {"schema": declared}}
        responses[str(status)] = {"description": op.summary, "content": content}
    if not op.public:
        responses["401"] = UNAUTHORIZED
    responses["default"] = ERROR_RESPONSE
    return responses
