"""`/api/api-keys`: a tenant lists, makes and revokes its own API keys; and
`POST /api/internal/api-keys`: the deployment makes a key for any tenant (a new tenant is
one that has a key), behind the internal secret (see `gateway.app`).

A key is shown once, in the answer that makes it; the gateway keeps only its HMAC
(`gateway.auth`). The default tenant's env key (ASH_API_KEY) is listed as id "env" and
cannot be revoked here: change ASH_API_KEY (and restart) to replace it.
"""

from __future__ import annotations

from typing import Any

from gateway import auth
from gateway.api.operation import Operation
from gateway.api.schemas import ISO_TIME, STRING, array, nullable, obj
from gateway.context import Gateway
from gateway.http import ApiError, Request, Response, json_response, no_content, string_field
from gateway.store import ApiKeyRow
from gateway.timestamps import iso_utc

KEY_ID_MAX = 64


def _keys(gw: Gateway) -> auth.KeyRing:
    assert gw.keys is not None, "the gateway was built without its key ring"
    return gw.keys


def _label(body: dict[str, Any]) -> str:
    label = string_field(body, "label", required=False) or ""
    if len(label) > auth.MAX_LABEL or any(ord(ch) < 0x20 for ch in label):
        raise ApiError(400, f"`label` must be at most {auth.MAX_LABEL} characters, without "
                            "control characters")
    return label


def _tenant(body: dict[str, Any]) -> str:
    tenant = string_field(body, "tenantId") or ""
    if not auth.TENANT_ID.fullmatch(tenant) or ".." in tenant:
        raise ApiError(400, "`tenantId` must be 1-64 characters of letters, digits, '.', '_' "
                            "or '-', start with a letter or digit, and contain no '..'")
    return tenant


def key_json(row: ApiKeyRow) -> dict[str, Any]:
    return {"id": row.id, "label": row.label, "keyPrefix": row.key_prefix,
            "createdAt": iso_utc(row.created_at)}


async def list_keys(gw: Gateway, req: Request) -> Response:
    rows = gw.store.list_api_keys(req.tenant_id)
    return json_response({"keys": [key_json(row) for row in rows]})


async def create_key(gw: Gateway, req: Request) -> Response:
    body = await req.json_object()
    row, key = _keys(gw).create(req.tenant_id, _label(body))
    return json_response({"id": row.id, "key": key}, 201)


async def delete_key(gw: Gateway, req: Request) -> Response:
    key_id = req.path_params["id"]
    if key_id == auth.ENV_KEY_ID and req.tenant_id == auth.DEFAULT_TENANT:
        raise ApiError(409, "the env key (ASH_API_KEY) cannot be revoked through the API: "
                            "set another ASH_API_KEY and restart the gateway to replace it")
    if len(key_id) > KEY_ID_MAX or not _keys(gw).revoke(key_id, req.tenant_id):
        raise ApiError(404, f"API key not found: {key_id[:KEY_ID_MAX]}")
    return no_content()


async def create_tenant_key(gw: Gateway, req: Request) -> Response:
    body = await req.json_object()
    tenant = _tenant(body)
    row, key = _keys(gw).create(tenant, _label(body))
    return json_response({"id": row.id, "key": key, "tenantId": row.tenant_id}, 201)


API_KEY = obj({"id": STRING, "label": STRING, "keyPrefix": STRING, "createdAt": ISO_TIME},
              "id", "label", "keyPrefix", "createdAt")
LABEL = nullable({"type": "string", "maxLength": auth.MAX_LABEL})
"""A label; `null` (a client's "not set") is no label."""
CREATE_BODY = obj({"label": LABEL})
INTERNAL_BODY = obj({"tenantId": {"type": "string", "pattern": f"^{auth.TENANT_ID.pattern}$",
                                  "minLength": 1, "maxLength": 64},
                     "label": LABEL}, "tenantId")
NEW_KEY = obj({"id": STRING, "key": STRING}, "id", "key")

OPERATIONS = [
    Operation("GET", "/api/api-keys", list_keys,
              "The caller's tenant's API keys (the env key as id \"env\"); never the keys",
              {200: obj({"keys": array(API_KEY)}, "keys")}),
    Operation("POST", "/api/api-keys", create_key,
              "Make an API key for the caller's tenant; the key is shown only here",
              {201: NEW_KEY}, body=CREATE_BODY),
    Operation("DELETE", "/api/api-keys/{id}", delete_key,
              "Revoke one of the caller's tenant's API keys (not the env key: 409)",
              {204: ()}),
    Operation("POST", "/api/internal/api-keys", create_tenant_key,
              "Make an API key for any tenant (Authorization: Bearer $ASH_INTERNAL_SECRET; "
              "404 when the gateway has none)",
              {201: obj({"id": STRING, "key": STRING, "tenantId": STRING},
                        "id", "key", "tenantId")}, body=INTERNAL_BODY),
]
