"""`/api/sessions/{id}/attachments` and `/api/attachments/{id}`: files a client attaches to
a session, in the reference's shapes.

An upload is placed in the session's workspace at `attachments/<id>/<filename>` through the
files machinery (`gateway.api.files.write_workspace_files`: the live sandbox's disk, a
runner's, or the stored state), so the agent can read it; the gateway keeps the bytes too
(the store), so a download works once the sandbox is gone. A download is never rendered by
a browser: `Content-Disposition: attachment`, `nosniff`, a sandboxing CSP, and the declared
type only when it is on a list of inert ones (never HTML, SVG or script), else
application/octet-stream.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from typing import Any
from urllib.parse import quote

from gateway.api.file_bodies import MIB, OCTET_STREAM, decode_base64, env_bytes
from gateway.api.files import write_workspace_files
from gateway.api.operation import Content, Operation
from gateway.api.schemas import INTEGER, ISO_TIME, STRING, array, envelope, obj
from gateway.context import Gateway
from gateway.http import (
    NO_CONTENT,
    ApiError,
    Request,
    Response,
    json_response,
)
from gateway.store import AttachmentRow
from gateway.timestamps import iso_utc

MAX_ATTACHMENT_BYTES = env_bytes("ASH_MAX_ATTACHMENT_SIZE", 10 * MIB)
"""Largest attachment (decoded), as the reference's ASH_MAX_ATTACHMENT_SIZE."""
BODY_SLACK = 64 * 1024
"""Room in the upload's body for the JSON around the base64 content."""
MAX_FILENAME_BYTES = 255
MAX_MIME_TYPE = 255
WORKSPACE_DIR = "attachments"
UNLINKED = "unlinked"
"""The `messageId` of an attachment no message claims (the reference's word)."""
SAFE_TYPES = frozenset({
    OCTET_STREAM, "application/pdf", "application/json", "application/zip",
    "application/gzip", "text/plain", "text/csv", "text/markdown",
    "image/png", "image/jpeg", "image/gif", "image/webp", "image/avif",
    "audio/mpeg", "audio/wav", "audio/ogg", "video/mp4", "video/webm",
})
"""Types a browser shows without running anything; any other declared type is served as
application/octet-stream."""
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                   r"[0-9a-fA-F]{12}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def body_limit(max_bytes: int) -> int:
    """The largest upload body for an attachment of `max_bytes`: its base64 and the JSON."""
    return math.ceil(max_bytes / 3) * 4 + BODY_SLACK


def check_filename(value: Any) -> str:
    """A file's name, not a path: no separator, no NUL or control character, not `.` or
    `..`, at most 255 bytes of UTF-8 (a Linux name)."""
    if not isinstance(value, str) or not value:
        raise ApiError(400, "`filename` must be a non-empty string")
    if "/" in value or "\\" in value:
        raise ApiError(400, "`filename` must be a name, not a path (no / or \\)")
    if _CONTROL.search(value):
        raise ApiError(400, "`filename` must not contain NUL or control characters")
    if value in (".", ".."):
        raise ApiError(400, "`filename` must not be . or ..")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ApiError(400, "`filename` must be valid Unicode text") from None
    if size > MAX_FILENAME_BYTES:
        raise ApiError(400, f"`filename` must be at most {MAX_FILENAME_BYTES} bytes of UTF-8")
    return value


def _optional_string(body: dict[str, Any], name: str) -> str | None:
    """A field that may be left out, but is a string when given (null is not one)."""
    if name in body and not isinstance(body[name], str):
        raise ApiError(400, f"`{name}` must be a string")
    return body.get(name)


def _mime_type(body: dict[str, Any]) -> str:
    value = _optional_string(body, "mimeType")
    if value is None:
        return OCTET_STREAM
    if not value.strip() or len(value) > MAX_MIME_TYPE or _CONTROL.search(value):
        raise ApiError(400, f"`mimeType` must be 1 to {MAX_MIME_TYPE} printable characters")
    return value


def _message_id(body: dict[str, Any]) -> str:
    value = _optional_string(body, "messageId")
    if value is None:
        return UNLINKED
    if not _UUID.fullmatch(value):
        raise ApiError(400, "`messageId` must be a UUID")
    return value.lower()


def served_type(declared: str) -> str:
    """The Content-Type a download carries: the declared type's essence when it is inert,
    else application/octet-stream."""
    essence = declared.split(";", 1)[0].strip().lower()
    return essence if essence in SAFE_TYPES else OCTET_STREAM


def workspace_path(row: AttachmentRow) -> str:
    return f"{WORKSPACE_DIR}/{row.id}/{row.filename}"


def attachment_json(row: AttachmentRow) -> dict[str, Any]:
    return {"id": row.id, "tenantId": row.tenant_id, "messageId": row.message_id,
            "sessionId": row.session_id, "filename": row.filename, "mimeType": row.mime_type,
            "size": row.size, "path": workspace_path(row), "createdAt": iso_utc(row.created_at)}


def _attachment(gw: Gateway, req: Request) -> AttachmentRow:
    row = gw.store.get_attachment(req.tenant_id, req.path_params["id"])
    if row is None:
        raise ApiError(404, f"attachment not found: {req.path_params['id']}")
    return row


async def upload_attachment(gw: Gateway, req: Request) -> Response:
    session_id = gw.sessions.get_live(req.path_params["id"], req.tenant_id).id
    body = await req.json_object(body_limit(MAX_ATTACHMENT_BYTES))
    filename = check_filename(body.get("filename"))
    content = body.get("content")
    if not isinstance(content, str):
        raise ApiError(400, "`content` (base64) is required")
    mime_type, message_id = _mime_type(body), _message_id(body)
    data = decode_base64(content, "`content`")
    if len(data) > MAX_ATTACHMENT_BYTES:
        raise ApiError(413, f"attachment is {len(data)} bytes, more than the "
                            f"{MAX_ATTACHMENT_BYTES} allowed")
    row = AttachmentRow(str(uuid.uuid4()), req.tenant_id, session_id, message_id, filename,
                        mime_type, len(data), time.time())
    [result] = await write_workspace_files(gw, session_id, [(workspace_path(row), data)])
    if not result.written:
        raise ApiError(409, f"the attachment could not be placed in the workspace: "
                            f"{result.error}")
    gw.store.insert_attachment(row, data)
    return json_response({"attachment": attachment_json(row)}, 201)


async def list_attachments(gw: Gateway, req: Request) -> Response:
    session_id = gw.sessions.get(req.path_params["id"], req.tenant_id).id
    rows = gw.store.list_attachments(req.tenant_id, session_id)
    return json_response({"attachments": [attachment_json(row) for row in rows]})


async def download_attachment(gw: Gateway, req: Request) -> Response:
    row = _attachment(gw, req)
    data = gw.store.attachment_data(req.tenant_id, row.id)
    if data is None:
        raise ApiError(404, f"attachment not found: {row.id}")
    return Response(200, data, served_type(row.mime_type).encode(), [
        (b"content-disposition",
         f"attachment; filename*=UTF-8''{quote(row.filename)}".encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"content-security-policy", b"default-src 'none'; sandbox"),
    ])


async def delete_attachment(gw: Gateway, req: Request) -> Response:
    """Forget the attachment (its copy in the workspace is the agent's now)."""
    row = _attachment(gw, req)
    gw.store.delete_attachment(req.tenant_id, row.id)
    return Response(NO_CONTENT, b"")


ATTACHMENT = obj({
    "id": {"type": "string", "format": "uuid"},
    "tenantId": STRING,
    "messageId": STRING,
    "sessionId": STRING,
    "filename": STRING,
    "mimeType": STRING,
    "size": INTEGER,
    "path": STRING,
    "createdAt": ISO_TIME,
}, "id", "tenantId", "messageId", "sessionId", "filename", "mimeType", "size", "createdAt")
UPLOAD_BODY = obj({
    "filename": {"type": "string", "minLength": 1, "maxLength": MAX_FILENAME_BYTES},
    "content": {"type": "string", "description": "the file's bytes, base64"},
    "mimeType": {"type": "string", "minLength": 1, "maxLength": MAX_MIME_TYPE},
    "messageId": {"type": "string", "format": "uuid"},
}, "filename", "content")

OPERATIONS = [
    Operation("POST", "/api/sessions/{id}/attachments", upload_attachment,
              "Attach a file (base64) to the session: kept by the gateway and placed in "
              "the workspace at attachments/<id>/<filename>",
              {201: envelope("attachment", ATTACHMENT)}, body=UPLOAD_BODY),
    Operation("GET", "/api/sessions/{id}/attachments", list_attachments,
              "The session's attachments", {200: obj({"attachments": array(ATTACHMENT)},
                                                     "attachments")}),
    Operation("GET", "/api/attachments/{id}", download_attachment,
              "Download an attachment (always as a download, never rendered)",
              {200: tuple(Content(media_type) for media_type in sorted(SAFE_TYPES))}),
    Operation("DELETE", "/api/attachments/{id}", delete_attachment, "Delete an attachment",
              {204: None}),
]
