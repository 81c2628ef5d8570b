"""A message's `content` as the reference's clients send it: a string, or content blocks
(text, image, document), with the reference's per-message options."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import send_message
from tests.sse_client import reply_text
from tests.test_bad_input import assert_error
from wire.content import MAX_BLOCKS, MAX_TEXT_CHARS, ContentError, parse_content

PNG = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}


def test_string_content_is_the_prompt() -> None:
    parsed = parse_content("hello")
    assert (parsed.prompt, parsed.blocks) == ("hello", None)


def test_text_blocks_join_into_the_prompt_and_the_blocks_are_kept() -> None:
    blocks = [{"type": "text", "text": "one"}, {"type": "image", "source": PNG},
              {"type": "text", "text": "two"}]
    parsed = parse_content(blocks)
    assert parsed.prompt == "one\n\ntwo"
    assert parsed.blocks == blocks


@pytest.mark.parametrize(("content", "fragment"), [
    ([], "1 to 20 blocks"),
    ([{"type": "text", "text": "x"}] * (MAX_BLOCKS + 1), "1 to 20 blocks"),
    (["text"], "must be an object"),
    ([{"type": "video"}], "text, image or document"),
    ([{"type": "text", "text": 5}], ".text must be a string"),
    ([{"type": "image"}], ".source must be an object"),
    ([{"type": "image", "source": {**PNG, "media_type": "image/tiff"}}], "media_type"),
    ([{"type": "image", "source": {**PNG, "data": "not base64!"}}], "not valid base64"),
    ([{"type": "document", "source": {"type": "url", "url": "file:///etc/passwd"}}],
     "http(s) URL"),
    ([{"type": "image", "source": {"type": "file", "path": "/etc/passwd"}}], "base64 or url"),
    ("x" * (MAX_TEXT_CHARS + 1), f"exceeds {MAX_TEXT_CHARS}"),
    (5, "a string or a list"),
    ("   ", "must not be empty"),
])
def test_bad_content_is_refused_with_its_reason(content: object, fragment: str) -> None:
    with pytest.raises(ContentError, match=None) as refused:
        parse_content(content)
    assert fragment in str(refused.value)


def test_text_blocks_reach_the_agent_as_its_prompt(client: httpx.Client, session: dict) -> None:
    events = send_message(client, session["id"], [{"type": "text", "text": "hello blocks"}])
    assert "You said: hello blocks" in reply_text(events)


def test_image_block_message_is_accepted_beside_text(client: httpx.Client, session: dict) -> None:
    events = send_message(client, session["id"], [{"type": "text", "text": "look"},
                                                  {"type": "image", "source": PNG}])
    assert "You said: look" in reply_text(events)


def test_reference_per_message_options_are_accepted(client: httpx.Client, session: dict) -> None:
    events = send_message(client, session["id"], "with options", maxBudgetUsd=0.5,
                          effort="high", thinking={"type": "enabled", "budgetTokens": 2048},
                          outputFormat={"type": "json_schema", "schema": {"type": "object"}})
    assert "You said: with options" in reply_text(events)


@pytest.mark.parametrize(("extra", "fragment"), [
    ({"content": [{"type": "video"}]}, "text, image or document"),
    ({"content": []}, "1 to 20 blocks"),
    ({}, "`content` is required"),
    ({"content": "x", "effort": "extreme"}, "`effort` must be one of"),
    ({"content": "x", "maxBudgetUsd": 0}, "`maxBudgetUsd`"),
    ({"content": "x", "maxBudgetUsd": "1"}, "`maxBudgetUsd`"),
    ({"content": "x", "thinking": {"type": "always"}}, "`thinking`"),
    ({"content": "x", "thinking": {"type": "enabled", "budgetTokens": 5}}, "budgetTokens"),
    ({"content": "x", "outputFormat": {"type": "text"}}, "`outputFormat`"),
    ({"content": "x", "options": {"contentBlocks": [{"type": "text", "text": "x"}]}},
     "not an option"),
])
def test_bad_message_is_400_and_starts_no_turn(
    client: httpx.Client, session: dict, extra: dict, fragment: str
) -> None:
    url = f"/api/sessions/{session['id']}/messages"
    assert_error(client.post(url, json=extra), 400, fragment)
    assert client.get(f"/api/sessions/{session['id']}").json()["session"]["turns"] == 0
