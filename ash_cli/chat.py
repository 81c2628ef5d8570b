"""`ash chat`: one message to an agent, in a new session or an existing one."""

from __future__ import annotations

import click

from ash_cli.app import api, cli
from ash_cli.sessions import session_path, stream_reply


@cli.command()
@click.argument("agent")
@click.argument("message")
@click.option("-s", "--session-id", help="Continue this session instead of starting one.")
@click.option("--end", is_flag=True, help="End the session after the reply.")
def chat(agent: str, message: str, session_id: str | None, end: bool) -> None:
    """Send MESSAGE to AGENT and print the reply as it streams (the session's id goes to
    stderr, so it can be continued with -s)."""
    client = api()
    if session_id is None:
        session_id = client.call("POST", "/api/sessions", json={"agent": agent})["session"]["id"]
    click.echo(f"session {session_id}", err=True)
    try:
        stream_reply(session_id, message, raw=False)
    finally:
        if end:
            client.call("DELETE", session_path(session_id))
            click.echo(f"ended session {session_id}", err=True)
