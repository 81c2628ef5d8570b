"""A message's `content`: a string, or up to 20 content blocks (text, image, document),
as the reference's clients send it. Checked whole before a turn starts (no I/O here).

The Claude backend sends the blocks to the model as the user message's content; the text
of the text blocks is the turn's prompt for everything that reads a prompt (the mock
agent, the stored conversation).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

MAX_TEXT_CHARS = 500_000
"""Longest string `content`, as the reference allows."""
MAX_BLOCKS = 20
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
DOCUMENT_TYPES = ("application/pdf", "text/plain")
CONTENT_BLOCKS_OPTION = "contentBlocks"
"""The options key that carries the blocks to the agent backend (set by the gateway only)."""


class ContentError(ValueError):
    """The content is not a string or a list of valid blocks; the message names why."""


@dataclass(frozen=True, slots=True)
class MessageContent:
    prompt: str
    """The text: the string, or the text blocks joined by blank lines."""
    blocks: list[dict[str, Any]] | None
    """The blocks as given, when the content was a list."""


def parse_content(value: Any) -> MessageContent:
    if isinstance(value, str):
        if not value.strip():
            raise ContentError("`content` must not be empty")
        if len(value) > MAX_TEXT_CHARS:
            raise ContentError(f"`content` exceeds {MAX_TEXT_CHARS} characters")
        return MessageContent(value, None)
    if not isinstance(value, list):
        raise ContentError("`content` must be a string or a list of content blocks")
    if not 1 <= len(value) <= MAX_BLOCKS:
        raise ContentError(f"`content` must hold 1 to {MAX_BLOCKS} blocks")
    texts = []
    for index, block in enumerate(value):
        label = f"`content[{index}]`"
        if not isinstance(block, dict):
            raise ContentError(f"{label} must be an object")
        kind = block.get("type")
        if kind == "text":
            text = block.get("text")
            if not isinstance(text, str) or len(text) > MAX_TEXT_CHARS:
                raise ContentError(f"{label}.text must be a string of at most "
                                   f"{MAX_TEXT_CHARS} characters")
            texts.append(text)
        elif kind in ("image", "document"):
            _check_source(block.get("source"), label,
                          IMAGE_TYPES if kind == "image" else DOCUMENT_TYPES)
        else:
            raise ContentError(f"{label}.type must be text, image or document")
    return MessageContent("\n\n".join(texts), value)


def _check_source(source: Any, label: str, media_types: tuple[str, ...]) -> None:
    if not isinstance(source, dict):
        raise ContentError(f"{label}.source must be an object")
    kind = source.get("type")
    if kind == "base64":
        if source.get("media_type") not in media_types:
            raise ContentError(f"{label}.source.media_type must be one of "
                               f"{', '.join(media_types)}")
        data = source.get("data")
        if not isinstance(data, str) or not data:
            raise ContentError(f"{label}.source.data must be a base64 string")
        try:
            base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise ContentError(f"{label}.source.data is not valid base64") from None
    elif kind == "url":
        url = source.get("url")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise ContentError(f"{label}.source.url must be an http(s) URL")
    elif kind == "text" and media_types is DOCUMENT_TYPES:
        if not isinstance(source.get("data"), str):
            raise ContentError(f"{label}.source.data must be a string")
    else:
        raise ContentError(f"{label}.source.type must be base64 or url")
