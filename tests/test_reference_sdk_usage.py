"""The published `ash-ai-sdk`'s attachment and usage functions against a real gateway: an
upload, its listing, download and delete, and a turn's usage events and totals, each
parsed by the SDK's own models (UUID ids, ISO times, the UsageStats fields)."""

from __future__ import annotations

import base64
import datetime
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from ash_sdk.api.attachments import delete_api_attachments_id, get_api_attachments_id
from ash_sdk.api.sessions import get_api_sessions_id_attachments, post_api_sessions_id_attachments
from ash_sdk.api.usage import get_api_usage, get_api_usage_stats
from ash_sdk.client import AuthenticatedClient
from ash_sdk.models.post_api_sessions_id_attachments_body import (
    PostApiSessionsIdAttachmentsBody,
)

from tests.conftest import create_session, deploy, make_agent_folder, make_client, send_message
from tests.gateway_process import GatewayProcess


@pytest.fixture
def sdk(gateway: GatewayProcess) -> Iterator[AuthenticatedClient]:
    with AuthenticatedClient(base_url=gateway.url, token=gateway.api_key, timeout=60,
                             raise_on_unexpected_status=True) as client:
        yield client


@pytest.fixture
def session_id(gateway: GatewayProcess, tmp_path: Path) -> uuid.UUID:
    with make_client(gateway) as client:
        deploy(client, "echo", make_agent_folder(tmp_path))
        return uuid.UUID(create_session(client, "echo")["id"])


def test_the_sdk_uploads_lists_downloads_and_deletes_an_attachment(
    gateway: GatewayProcess, sdk: AuthenticatedClient, session_id: uuid.UUID,
) -> None:
    message_id = uuid.uuid4()
    body = PostApiSessionsIdAttachmentsBody(
        filename="brief.md", content=base64.b64encode(b"# brief").decode(),
        mime_type="text/markdown", message_id=message_id)
    created = post_api_sessions_id_attachments.sync(session_id, client=sdk, body=body)
    attachment = created.attachment
    assert (attachment.session_id, attachment.filename, attachment.size) == (
        session_id, "brief.md", 7)
    assert attachment.message_id == str(message_id)
    listed = get_api_sessions_id_attachments.sync(session_id, client=sdk)
    assert [a.id for a in listed.attachments] == [attachment.id]
    # The SDK's spec declares no 200 body for the download: read it with a lenient client.
    with AuthenticatedClient(base_url=gateway.url, token=gateway.api_key) as lenient:
        download = get_api_attachments_id.sync_detailed(attachment.id, client=lenient)
    assert (download.status_code, download.content) == (200, b"# brief")
    assert download.headers["content-type"] == "text/markdown"
    deleted = delete_api_attachments_id.sync_detailed(attachment.id, client=sdk)
    assert deleted.status_code == 204
    assert get_api_sessions_id_attachments.sync(session_id, client=sdk).attachments == []


def test_the_sdk_reads_a_turns_usage_events_and_totals(
    gateway: GatewayProcess, sdk: AuthenticatedClient, session_id: uuid.UUID,
) -> None:
    started = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1)
    with make_client(gateway) as client:
        send_message(client, str(session_id), "meter this")
    listed = get_api_usage.sync(client=sdk, session_id=session_id, after=started, limit=10)
    assert {event.event_type for event in listed.events} >= {
        "input_tokens", "output_tokens", "message", "compute_seconds"}
    assert all(event.session_id == session_id and event.agent_name == "echo"
               for event in listed.events)
    stats = get_api_usage_stats.sync(client=sdk, session_id=session_id, after=started).stats
    assert stats.total_messages == 1
    assert stats.total_output_tokens > 0
