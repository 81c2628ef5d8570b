"""`ash session …`: create, send, list, lifecycle, fork, files, exec."""

from __future__ import annotations

import sys
from typing import Any

import click

from ash_cli.app import api, cli
from ash_cli.client import AshError, segment
from ash_cli.envfile import env_option_values
from ash_cli.output import JSON_OPTION, print_fields, print_json, print_table, when
from ash_cli.turns import delta_of, error_of, turn_events

EXEC_HTTP_MARGIN_S = 30.0


def session_path(session_id: str, verb: str = "") -> str:
    return f"/api/sessions/{segment(session_id)}{verb}"


def session_fields(session: dict[str, Any]) -> list[tuple[str, Any]]:
    return [("id", session.get("id")), ("agent", session.get("agent")),
            ("status", session.get("status")), ("turns", session.get("turns", "")),
            ("created", when(session.get("createdAt"))),
            ("updated", when(session.get("updatedAt")))]


def show_session(session: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(session)
    else:
        print_fields(session_fields(session))


def stream_reply(session_id: str, message: str, raw: bool) -> None:
    """Print the turn as it streams: its text (or, `raw`, every SSE frame); an `error`
    event fails the command after the stream ends."""
    errors: list[str] = []
    wrote = False
    for event in turn_events(api(), session_id, message):
        if event.event == "error":
            errors.append(error_of(event))
        if raw:
            prefix = f"id: {event.id}\n" if event.id is not None else ""
            sys.stdout.write(f"{prefix}event: {event.event}\ndata: {event.data}\n\n")
        else:
            text = delta_of(event)
            sys.stdout.write(text)
            wrote = wrote or bool(text)
        sys.stdout.flush()
    if wrote:
        sys.stdout.write("\n")
        sys.stdout.flush()
    if errors:
        raise AshError(f"the turn failed: {errors[0]}")


@cli.group()
def session() -> None:
    """Create sessions, talk to them and manage their lifecycle."""


@session.command()
@click.argument("agent")
@click.option("-e", "--env", "env_pairs", multiple=True, metavar="KEY=VALUE",
              help="An extra environment variable for the sandbox (repeatable).")
@JSON_OPTION
def create(agent: str, env_pairs: tuple[str, ...], as_json: bool) -> None:
    """Start a session of AGENT; prints its id."""
    body: dict[str, Any] = {"agent": agent}
    extra = env_option_values(env_pairs)
    if extra:
        body["extraEnv"] = extra
    reply = api().call("POST", "/api/sessions", json=body)
    if as_json:
        print_json(reply)
        return
    click.echo(reply["session"]["id"])
    if reply.get("notice"):
        click.echo(f"note: {reply['notice']}", err=True)


@session.command()
@click.argument("session_id", metavar="ID")
@click.argument("message")
@click.option("--raw", is_flag=True, help="Print every SSE frame as it arrives.")
def send(session_id: str, message: str, raw: bool) -> None:
    """Send MESSAGE and print the reply as it streams."""
    stream_reply(session_id, message, raw)


@session.command("list")
@click.option("--agent", help="Only this agent's sessions.")
@click.option("--status", help="Only sessions with this status.")
@click.option("--limit", type=click.IntRange(1, 1000), help="At most this many (default 50).")
@JSON_OPTION
def list_sessions(agent: str | None, status: str | None, limit: int | None,
                  as_json: bool) -> None:
    """List sessions, newest first."""
    params = {k: v for k, v in {"agent": agent, "status": status, "limit": limit}.items()
              if v is not None}
    sessions = api().call("GET", "/api/sessions", params=params)["sessions"]
    if as_json:
        print_json(sessions)
    elif not sessions:
        click.echo("No sessions.")
    else:
        print_table(["ID", "AGENT", "STATUS", "TURNS", "UPDATED"],
                    [[s["id"], s.get("agent", ""), s.get("status", ""), s.get("turns", ""),
                      when(s.get("updatedAt"))] for s in sessions])


@session.command()
@click.argument("session_id", metavar="ID")
@JSON_OPTION
def info(session_id: str, as_json: bool) -> None:
    """Show one session."""
    show_session(api().call("GET", session_path(session_id))["session"], as_json)


def _lifecycle(name: str, method: str, verb: str, done: str, summary: str) -> None:
    @session.command(name, help=summary)
    @click.argument("session_id", metavar="ID")
    @JSON_OPTION
    def command(session_id: str, as_json: bool) -> None:
        changed = api().call(method, session_path(session_id, verb))["session"]
        if as_json:
            print_json(changed)
        else:
            click.echo(f"{done} session {changed['id']} (status {changed.get('status')})")


_lifecycle("pause", "POST", "/pause", "Paused", "Pause a session (its state is kept).")
_lifecycle("resume", "POST", "/resume", "Resumed", "Resume a paused or stopped session.")
_lifecycle("stop", "POST", "/stop", "Stopped",
           "Stop a session: its sandbox goes, its state stays.")
_lifecycle("end", "DELETE", "", "Ended", "End a session for good.")
_lifecycle("interrupt", "POST", "/interrupt", "Interrupted", "Interrupt the running turn.")


@session.command()
@click.argument("session_id", metavar="ID")
@JSON_OPTION
def fork(session_id: str, as_json: bool) -> None:
    """Fork a session (conversation and workspace); prints the new session's id."""
    forked = api().call("POST", session_path(session_id, "/fork"))["session"]
    if as_json:
        print_json(forked)
    else:
        click.echo(forked["id"])


@session.command()
@click.argument("session_id", metavar="ID")
@click.argument("path", required=False)
@click.option("--hidden", is_flag=True, help="List hidden files too.")
@JSON_OPTION
def files(session_id: str, path: str | None, hidden: bool, as_json: bool) -> None:
    """List the workspace's files, or print the file PATH."""
    client = api()
    if path is not None:
        quoted = "/".join(segment(part) for part in path.strip("/").split("/"))
        body = client.request("GET", session_path(session_id, f"/files/{quoted}"),
                              params={"format": "raw"}).content
        sys.stdout.buffer.write(body)
        sys.stdout.flush()
        return
    listing = client.call("GET", session_path(session_id, "/files"),
                          params={"includeHidden": "true"} if hidden else None)
    if as_json:
        print_json(listing)
        return
    print_table(["SIZE", "MODIFIED", "PATH"],
                [[f.get("size", ""), when(f.get("modifiedAt")), f["path"]]
                 for f in listing.get("files", [])])


@session.command("exec")
@click.argument("session_id", metavar="ID")
@click.argument("command")
@click.option("--timeout", type=click.IntRange(1, 300_000), default=30_000, show_default=True,
              help="Time limit in milliseconds.")
@JSON_OPTION
def exec_command(session_id: str, command: str, timeout: int, as_json: bool) -> int:
    """Run COMMAND in the session's sandbox; exits with its exit code."""
    client = api(timeout=timeout / 1000 + EXEC_HTTP_MARGIN_S)
    result = client.call("POST", session_path(session_id, "/exec"),
                         json={"command": command, "timeout": timeout})
    if as_json:
        print_json(result)
        return 0
    sys.stdout.write(result.get("stdout", ""))
    sys.stdout.flush()
    sys.stderr.write(result.get("stderr", ""))
    if result.get("timedOut"):
        click.echo(f"ash: the command timed out after {timeout} ms", err=True)
    code = result.get("exitCode")
    return code if isinstance(code, int) and 0 <= code < 256 else 1

