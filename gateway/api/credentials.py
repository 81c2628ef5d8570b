"""`/api/credentials`: a tenant's model credentials — add, list, delete. A key goes in and
never comes out: no response carries it (gateway/credentials.py keeps it encrypted)."""

from __future__ import annotations

from typing import Any

from gateway.api.operation import Operation
from gateway.api.schemas import BOOLEAN, ISO_TIME, STRING, array, envelope, nullable, obj
from gateway.context import Gateway
from gateway.http import ApiError, Request, Response, json_response
from gateway.store import CredentialRow
from gateway.timestamps import iso_utc
from wire.credentials import MAX_KEY_CHARS, MAX_LABEL_CHARS, TYPES, check_credential


def credential_json(row: CredentialRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "type": row.type,
        "label": row.label,
        "active": row.active,
        "createdAt": iso_utc(row.created_at),
        "lastUsedAt": iso_utc(row.last_used_at) if row.last_used_at is not None else None,
    }


def _label(body: dict[str, Any]) -> str | None:
    label = body.get("label")
    if label is None:
        return None
    if not isinstance(label, str) or len(label) > MAX_LABEL_CHARS or "\0" in label:
        raise ApiError(400, f"`label` must be a string of at most {MAX_LABEL_CHARS} characters")
    return label


async def create_credential(gw: Gateway, req: Request) -> Response:
    body = await req.json_object()
    for name in ("type", "key"):
        if body.get(name) is None:
            raise ApiError(400, f"`{name}` is required")
    try:
        credential = check_credential(body["type"], body["key"])
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    label = _label(body)
    row = gw.credentials.add(req.tenant_id, credential, label)
    return json_response({"credential": credential_json(row)}, 201)


async def list_credentials(gw: Gateway, req: Request) -> Response:
    rows = gw.credentials.list(req.tenant_id)
    return json_response({"credentials": [credential_json(row) for row in rows]})


async def delete_credential(gw: Gateway, req: Request) -> Response:
    gw.credentials.delete(req.tenant_id, req.path_params["id"])
    return Response(204, b"")


CREDENTIAL = obj({
    "id": STRING,
    "type": {"type": "string", "enum": list(TYPES)},
    "label": nullable(STRING),
    "active": BOOLEAN,
    "createdAt": ISO_TIME,
    "lastUsedAt": nullable(ISO_TIME),
}, "id", "type", "label", "active", "createdAt")
CREATE_BODY = obj({
    "type": {"type": "string", "enum": list(TYPES)},
    "key": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_CHARS,
            "pattern": "^[^\\u0000\\r\\n]*\\S[^\\u0000\\r\\n]*$"},
    "label": nullable({"type": "string", "maxLength": MAX_LABEL_CHARS,
                       "pattern": "^[^\\u0000]*$"}),
}, "type", "key")
"""`label: null` reads as no label."""
LISTED = obj({"credentials": array(obj({**CREDENTIAL["properties"]},
                                       *CREDENTIAL["required"], "lastUsedAt"))},
             "credentials")

OPERATIONS = [
    Operation("POST", "/api/credentials", create_credential,
              "Store a model credential (encrypted; the key is never returned)",
              {201: envelope("credential", CREDENTIAL)}, body=CREATE_BODY),
    Operation("GET", "/api/credentials", list_credentials,
              "List the tenant's credentials (never their keys)", {200: LISTED}),
    Operation("DELETE", "/api/credentials/{id}", delete_credential,
              "Delete a credential; sessions created with it cannot start a sandbox again",
              {204: None}),
]
