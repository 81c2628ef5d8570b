"""The CLI's HTTP client: every failure becomes one `AshError` with a one-line message."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import httpx

from ash_cli.config import ClientConfig, ConfigFileError, load_config

DEFAULT_TIMEOUT_S = 60.0


class AshError(Exception):
    """A failure the CLI reports as `ash: <message>` and exit 1."""


def _error_of(response: httpx.Response) -> AshError:
    """The gateway's `{"error": ..., "statusCode": N}` as `<error> (<status>)`."""
    try:
        body = response.json()
        message = body.get("error") if isinstance(body, dict) else None
    except ValueError:
        message = None
    text = str(message) if message else (response.text.strip()[:200] or response.reason_phrase)
    return AshError(f"{text.splitlines()[0] if text else 'error'} ({response.status_code})")


def _transport_error(exc: httpx.HTTPError, url: str) -> AshError:
    if isinstance(exc, httpx.ConnectError):
        return AshError(f"cannot reach the server at {url} ({exc or 'connection refused'})")
    if isinstance(exc, httpx.TimeoutException):
        return AshError(f"the server at {url} did not answer in time")
    return AshError(f"connection to {url} failed: {exc or type(exc).__name__}")


class ApiClient:
    """A client of one gateway's public API (ASH_SERVER_URL / ASH_API_KEY / config.json)."""

    def __init__(self, config: ClientConfig | None = None,
                 timeout: float = DEFAULT_TIMEOUT_S) -> None:
        try:
            self.config = config or load_config()
        except ConfigFileError as exc:
            raise AshError(str(exc)) from None
        headers = {"user-agent": "ash-cli"}
        if self.config.api_key:
            headers["authorization"] = f"Bearer {self.config.api_key}"
        self.http = httpx.Client(base_url=self.config.server_url, headers=headers,
                                 timeout=timeout)

    @property
    def url(self) -> str:
        return self.config.server_url

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, *, json: Any = None,
                params: dict[str, Any] | None = None,
                timeout: float | None = None) -> httpx.Response:
        """The response of a 2xx answer; anything else raises `AshError`."""
        extra = {"timeout": timeout} if timeout is not None else {}
        try:
            response = self.http.request(method, path, json=json, params=params, **extra)
        except httpx.HTTPError as exc:
            raise _transport_error(exc, self.url) from None
        if response.is_error:
            raise _error_of(response)
        return response

    def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """A JSON API call: its decoded object."""
        response = self.request(method, path, **kwargs)
        try:
            body = response.json()
        except ValueError:
            raise AshError(f"the server sent no JSON for {method} {path}") from None
        if not isinstance(body, dict):
            raise AshError(f"the server sent no JSON object for {method} {path}")
        return body

    @contextmanager
    def stream(self, method: str, path: str, *, json: Any = None,
               headers: dict[str, str] | None = None) -> Iterator[httpx.Response]:
        """A streaming response (no read timeout: a turn or a tail may be quiet a while);
        a non-2xx status raises `AshError`, transport failures raise httpx's errors."""
        timeout = httpx.Timeout(DEFAULT_TIMEOUT_S, read=None)
        with self.http.stream(method, path, json=json, headers=headers,
                              timeout=timeout) as response:
            if response.is_error:
                response.read()
                raise _error_of(response)
            yield response

    def transport_error(self, exc: httpx.HTTPError) -> AshError:
        return _transport_error(exc, self.url)


def segment(value: str) -> str:
    """`value` as one path segment (an id typed by a user cannot change the route)."""
    return quote(value, safe="")
