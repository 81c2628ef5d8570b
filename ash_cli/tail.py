"""`ash session tail`: follow `GET /api/sessions/{id}/stream`, and after a dropped
connection rejoin with `Last-Event-ID` (the last id printed), so no event is lost or
printed twice (docs/streams.md: the gateway replays from its log, then goes live)."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass

import click
import httpx

from ash_cli.app import api
from ash_cli.client import ApiClient
from ash_cli.sessions import session, session_path
from ash_cli.sse import SseEvent, parse_sse

RECONNECT_DELAYS_S = (0.1, 0.25, 0.5, 1.0, 2.0)
"""Backoff between reconnects; the last one repeats until `--give-up-after`."""


@dataclass
class Cursor:
    last_id: int | None
    types: frozenset[str]
    as_json: bool

    def show(self, event: SseEvent) -> None:
        if event.id is not None and event.id.isdigit():
            number = int(event.id)
            if self.last_id is not None and number <= self.last_id:
                return
            self.last_id = number
        if self.types and event.event not in self.types:
            return
        if self.as_json:
            line = json.dumps({"id": self.last_id, "type": event.event,
                               "data": event.payload()})
        else:
            line = f"{event.id or '-'} {event.event} {event.data}"
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def follow_once(client: ApiClient, session_id: str, cursor: Cursor) -> None:
    """Read the stream until it ends or breaks; HTTP errors raise `AshError`."""
    headers = {"accept": "text/event-stream"}
    if cursor.last_id is not None:
        headers["last-event-id"] = str(cursor.last_id)
    with client.stream("GET", session_path(session_id, "/stream"),
                       headers=headers) as response:
        for event in parse_sse(response.iter_lines()):
            cursor.show(event)


def follow(client: ApiClient, session_id: str, cursor: Cursor, give_up_after: float) -> None:
    """Follow for ever, reconnecting after every drop; give up (one error line) once the
    server has been unreachable for `give_up_after` seconds in a row."""
    failures = 0
    down_since: float | None = None
    while True:
        try:
            follow_once(client, session_id, cursor)
            failures, down_since = 0, None
            continue
        except httpx.ConnectError as exc:
            down_since = down_since or time.monotonic()
            if time.monotonic() - down_since >= give_up_after:
                raise client.transport_error(exc) from None
        except httpx.HTTPError:
            down_since = None
        delay = RECONNECT_DELAYS_S[min(failures, len(RECONNECT_DELAYS_S) - 1)]
        failures += 1
        time.sleep(delay)


@session.command()
@click.argument("session_id", metavar="ID")
@click.option("-t", "--type", "types", multiple=True,
              help="Print only events of this type (repeatable).")
@click.option("--after", type=click.IntRange(0), help="Start after this event id "
              "(default: replay the whole history).")
@click.option("--give-up-after", type=click.FloatRange(0), default=60.0, show_default=True,
              help="Seconds without a server before tail stops.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event.")
def tail(session_id: str, types: tuple[str, ...], after: int | None, give_up_after: float,
         as_json: bool) -> None:
    """Follow the session's events live (`<id> <type> <data>` per line)."""
    client = api()
    client.call("GET", session_path(session_id))
    cursor = Cursor(after, frozenset(types), as_json)
    follow(client, session_id, cursor, give_up_after)
