"""Untrusted text reaches log lines quoted (`%r`): no line break can forge a log record."""

from __future__ import annotations

import asyncio
import base64
import logging
import re

import orjson
import pytest

from gateway.api.table import Route
from gateway.app import GatewayApp
from gateway.event_guard import replace_forged
from gateway.http import Message, Request
from runner.model_proxy import ModelProxy, ModelUpstream
from wire import events

FORGED_LINE = "\n2026-01-01 00:00:00 INFO ash.gateway: forged record"


def assert_one_line(caplog: pytest.LogCaptureFixture, logger: str) -> str:
    [record] = [r for r in caplog.records if r.name == logger]
    message = record.getMessage()
    assert "\n" not in message and "\r" not in message, message
    return message


async def test_unhandled_error_logs_a_percent_decoded_path_quoted(
        caplog: pytest.LogCaptureFixture) -> None:
    async def broken(gw: object, req: Request) -> None:
        raise RuntimeError("boom")

    app = GatewayApp(None, None)  # type: ignore[arg-type]
    app.routes.insert(0, Route("GET", re.compile(r"/boom.*", re.S), broken))
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/boom" + FORGED_LINE, "headers": []}
    with caplog.at_level(logging.ERROR, logger="ash.gateway"):
        await app(scope, receive, send)
    assert sent[0]["status"] == 500
    assert "forged record" in assert_one_line(caplog, "ash.gateway")


def test_model_proxy_refusal_logs_the_sandbox_path_quoted(
        caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        proxy = ModelProxy(ModelUpstream("http://127.0.0.1:9", "k"), "tok", lambda *_: None)
        proxy.on_frame(events.Event(events.MODEL_REQUEST, orjson.dumps({
            "id": "r1", "method": "GET" + FORGED_LINE, "path": "/v1/x" + FORGED_LINE,
            "headers": {"x-api-key": "tok"}, "body": base64.b64encode(b"{}").decode()})))
        await asyncio.sleep(0.05)
        await proxy.close()

    with caplog.at_level(logging.WARNING, logger="ash.runner.model_proxy"):
        asyncio.run(scenario())
    assert "refused" in assert_one_line(caplog, "ash.runner.model_proxy")


def test_forged_event_type_is_logged_quoted(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ash.events"):
        event = replace_forged("s1", 3, events.Event("text_delta" + FORGED_LINE, b"{}"))
    assert event.type == events.ERROR
    assert "forged record" in assert_one_line(caplog, "ash.events")
