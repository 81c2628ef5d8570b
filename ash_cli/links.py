"""`ash health`, `ash link`, `ash unlink`: which server the CLI talks to, and how it is."""

from __future__ import annotations

from typing import Any

import click

from ash_cli.app import api, cli
from ash_cli.config import DEFAULT_SERVER_URL, clear_link, save_config
from ash_cli.output import JSON_OPTION, print_fields, print_json


def health_fields(health: dict[str, Any], url: str) -> list[tuple[str, Any]]:
    fields: list[tuple[str, Any]] = [("server", url), ("status", health.get("status"))]
    for name in ("version", "mode", "activeSessions", "activeSandboxes", "remoteRunners",
                 "uptime"):
        if name in health:
            fields.append((name, health[name]))
    return fields


@cli.command()
@JSON_OPTION
def health(as_json: bool) -> None:
    """Check the server (GET /health)."""
    client = api()
    body = client.call("GET", "/health")
    if as_json:
        print_json(body)
    else:
        print_fields(health_fields(body, client.url))


@cli.command()
@click.argument("url", default=DEFAULT_SERVER_URL)
@click.option("--api-key", help="The server's API key (saved in config.json, mode 0600).")
def link(url: str, api_key: str | None) -> None:
    """Point the CLI at the server at URL (saved in ~/.ash/config.json)."""
    if not url.startswith(("http://", "https://")):
        raise click.BadParameter(f"{url!r} is not an http:// or https:// URL",
                                 param_hint="URL")
    path = save_config(server_url=url, api_key=api_key)
    click.echo(f"Linked to {url.rstrip('/')} ({path})")


@cli.command()
def unlink() -> None:
    """Forget the linked server and key (back to ASH_SERVER_URL or the local default)."""
    path = clear_link()
    click.echo(f"Unlinked ({path})")
