"""The JSON schemas the API's records share (OpenAPI components), and small builders.

A response schema names what a client may rely on; our extra fields are declared too,
so the schema check (schemathesis, tests/test_openapi.py) catches a field that changes type.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(properties: dict[str, Schema], *required: str, extra: bool = True) -> Schema:
    """An object schema; `extra=False` refuses unknown fields (for request bodies
    whose unknown fields the handler rejects)."""
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    if not extra:
        schema["additionalProperties"] = False
    return schema


def envelope(key: str, schema: Schema) -> Schema:
    """`{key: schema}`, the reference's wrapping of every record."""
    return obj({key: schema}, key)


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
BOOLEAN: Schema = {"type": "boolean"}
NUMBER: Schema = {"type": "number"}
ISO_TIME: Schema = {"type": "string", "format": "date-time"}
ANY_OBJECT: Schema = {"type": "object"}
STRING_MAP: Schema = {"type": "object", "additionalProperties": {"type": "string"}}

ERROR: Schema = obj({"error": STRING, "statusCode": INTEGER}, "error", "statusCode")

SESSION_STATUS: Schema = {"type": "string",
                          "enum": ["starting", "active", "paused", "stopped", "error", "ended"]}

def _strings(max_items: int) -> Schema:
    return {"type": "array", "items": {"type": "string", "minLength": 1},
            "maxItems": max_items}


MCP_SERVER: Schema = obj({"type": {"type": "string", "enum": ["stdio", "http", "sse"]},
                          "url": STRING, "command": STRING, "args": _strings(64),
                          "env": STRING_MAP})
SUBAGENT: Schema = obj({"description": STRING, "prompt": STRING, "tools": _strings(128),
                        "disallowedTools": _strings(128), "model": STRING,
                        "maxTurns": INTEGER}, "description", "prompt")
SESSION_CONFIG_FIELDS: dict[str, Schema] = {
    "systemPrompt": {"type": "string", "minLength": 1, "maxLength": 100_000},
    "model": {"type": "string", "minLength": 1, "maxLength": 200},
    "extraEnv": STRING_MAP,
    "mcpServers": {"type": "object", "additionalProperties": MCP_SERVER},
    "permissionMode": {"type": "string",
                       "enum": ["bypassPermissions", "permissionsByAgent", "default"]},
    "allowedTools": _strings(128),
    "disallowedTools": _strings(128),
    "betas": _strings(16),
    "subagents": {"type": "object", "additionalProperties": SUBAGENT},
    "initialAgent": {"type": "string", "minLength": 1, "maxLength": 64},
}
"""A session's own options (`wire.session_config`, which checks them strictly)."""

SESSION: Schema = obj({
    "id": STRING,
    "tenantId": STRING,
    "agentName": STRING,
    "agent": STRING,
    "agentVersion": INTEGER,
    "status": SESSION_STATUS,
    "runnerId": nullable(STRING),
    "sandboxId": nullable(STRING),
    "parentSessionId": nullable(STRING),
    "lastEventId": INTEGER,
    "turns": INTEGER,
    "error": nullable(STRING),
    "createdAt": ISO_TIME,
    "lastActiveAt": ISO_TIME,
    "updatedAt": ISO_TIME,
    "model": nullable(STRING),
    "config": obj(SESSION_CONFIG_FIELDS),
}, "id", "tenantId", "agentName", "status", "runnerId", "sandboxId", "parentSessionId",
    "createdAt", "lastActiveAt")

AGENT: Schema = obj({
    "id": STRING,
    "name": STRING,
    "tenantId": STRING,
    "version": INTEGER,
    "path": STRING,
    "env": STRING_MAP,
    "config": ANY_OBJECT,
    "createdAt": ISO_TIME,
    "updatedAt": ISO_TIME,
}, "id", "name", "tenantId", "version", "path", "env", "createdAt", "updatedAt")

AGENT_VERSION = obj({
    "id": STRING,
    "tenantId": STRING,
    "agentName": STRING,
    "versionNumber": INTEGER,
    "name": STRING,
    "systemPrompt": nullable(STRING),
    "releaseNotes": nullable(STRING),
    "isActive": BOOLEAN,
    "knowledgeFiles": nullable(array(STRING)),
    "createdBy": nullable(STRING),
    "createdAt": ISO_TIME,
    "updatedAt": ISO_TIME,
}, "id", "tenantId", "agentName", "versionNumber", "name", "systemPrompt", "releaseNotes",
    "isActive", "knowledgeFiles", "createdBy", "createdAt", "updatedAt")
COMPONENTS: dict[str, Schema] = {"Error": ERROR, "Session": SESSION, "Agent": AGENT,
                                 "AgentVersion": AGENT_VERSION}

SESSION_RESPONSE = envelope("session", ref("Session"))
AGENT_RESPONSE = envelope("agent", ref("Agent"))
