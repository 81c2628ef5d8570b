"""The per-hop breakdown of a turn's first event, from `ASH_DEBUG_TIMING=1` points.

    python -m bench.timing [--label NAME] [--json out.json] LOG [LOG ...]

Reads the timing lines the gateway and runner processes wrote (their stderr, or the
ASH_DEBUG_TIMING_FILE), skipping every other line and any torn one, joins the points
by turn id, and prints, for the turns that have every point, the time between each
pair of consecutive points and the Ash overhead: client first event minus agent
first token (a benchmark client adds its own `client.send` / `client.first_event`
points, see `client_point`; without them the server-side overhead, first SSE frame
written minus agent first token, is the last figure). Milliseconds throughout.

A benchmark calls `breakdown_from_logs(paths, client_points)` per configuration and
`markdown({name: breakdown})` for the tables. The points are listed in docs/timing.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import secrets
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from time import monotonic_ns
from typing import Any

from bench.stats import NoSamples, Summary, markdown_table, ms, summarize
from wire import timing as wt

NS_TO_MS = 1e-6
TURN_HEADER = wt.TURN_HEADER.decode()
"""The request header that names a turn (the client's id is then the join key)."""

Turns = dict[str, dict[str, int]]
"""turn id -> point name -> t_ns."""


def new_turn_id() -> str:
    return secrets.token_hex(8)


def client_point(name: str, turn: str, t_ns: int | None = None) -> wt.Point:
    """A client-side point (`wire.timing.CLIENT_SEND`, `CLIENT_FIRST_EVENT`), on the same
    clock as the servers' points."""
    return wt.Point(name, monotonic_ns() if t_ns is None else t_ns, turn)


def parse_lines(lines: Iterable[bytes | str]) -> list[wt.Point]:
    """The timing points among `lines`; anything else (log output, a torn line) is skipped."""
    return [p for p in map(wt.decode, lines) if p is not None]


def read_points(paths: Iterable[Path | str]) -> list[wt.Point]:
    points: list[wt.Point] = []
    for path in paths:
        with open(path, "rb") as log:
            points += parse_lines(log)
    return points


def join(points: Iterable[wt.Point]) -> Turns:
    """Points grouped by turn; a point taken twice for one turn keeps its earliest time."""
    turns: Turns = {}
    for point in points:
        turn = turns.setdefault(point.turn, {})
        known = turn.get(point.name)
        if known is None or point.t_ns < known:
            turn[point.name] = point.t_ns
    return turns


@dataclass(frozen=True, slots=True)
class Hop:
    start: str
    end: str
    ms: Summary


@dataclass(frozen=True, slots=True)
class Breakdown:
    points: tuple[str, ...]
    """The points every complete turn has, in causal order."""
    complete: int
    incomplete: int
    """Turns that lack one of `points` (see `missing`): left out of every figure."""
    missing: dict[str, int]
    """Point name -> turns without it."""
    hops: tuple[Hop, ...]
    ash_overhead: Summary | None
    """client.first_event - agent.first_token, when the client's points were given."""
    server_overhead: Summary | None
    """gateway.first_frame_written - agent.first_token."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "points": list(self.points),
            "complete_turns": self.complete,
            "incomplete_turns": self.incomplete,
            "missing": self.missing,
            "hops_ms": [{"from": h.start, "to": h.end, **h.ms.as_dict()} for h in self.hops],
            "ash_overhead_ms": self.ash_overhead.as_dict() if self.ash_overhead else None,
            "server_overhead_ms": (self.server_overhead.as_dict()
                                   if self.server_overhead else None),
        }

    def table(self) -> str:
        rows = [(f"{h.start} → {h.end}", *_cells(h.ms)) for h in self.hops]
        if self.ash_overhead is not None:
            rows.append(("**Ash overhead** (client.first_event - agent.first_token)",
                         *_cells(self.ash_overhead)))
        if self.server_overhead is not None:
            rows.append(("server overhead (gateway.first_frame_written - agent.first_token)",
                         *_cells(self.server_overhead)))
        return markdown_table(("hop (ms)", "p50", "p95", "p99", "mean"), rows)


def _cells(summary: Summary) -> tuple[str, str, str, str]:
    return (ms(summary.p50), ms(summary.p95), ms(summary.p99), ms(summary.mean))


def breakdown(turns: Mapping[str, Mapping[str, int]],
              expected: Sequence[str] | None = None) -> Breakdown:
    """Per-hop figures over the turns that have every `expected` point (default: every
    known point any turn has). NoSamples if no turn is complete."""
    if expected is None:
        seen = {name for points in turns.values() for name in points}
        expected = [name for name in wt.ORDER if name in seen]
    expected = tuple(expected)
    missing = {name: sum(1 for points in turns.values() if name not in points)
               for name in expected}
    complete = [points for points in turns.values() if all(n in points for n in expected)]
    if len(expected) < 2 or not complete:
        raise NoSamples(f"no complete turn among {len(turns)} (points {list(expected)}; "
                        f"turns missing each: {missing})")

    def delta(start: str, end: str) -> Summary:
        return summarize((points[end] - points[start] for points in complete), NS_TO_MS)

    def overhead(end: str) -> Summary | None:
        if wt.AGENT_FIRST_TOKEN in expected and end in expected:
            return delta(wt.AGENT_FIRST_TOKEN, end)
        return None

    return Breakdown(
        points=expected,
        complete=len(complete),
        incomplete=len(turns) - len(complete),
        missing={name: count for name, count in missing.items() if count},
        hops=tuple(Hop(a, b, delta(a, b)) for a, b in itertools.pairwise(expected)),
        ash_overhead=overhead(wt.CLIENT_FIRST_EVENT),
        server_overhead=overhead(wt.GATEWAY_FIRST_FRAME_WRITTEN),
    )


def breakdown_from_logs(paths: Iterable[Path | str],
                        client_points: Iterable[wt.Point] = ()) -> Breakdown:
    """The breakdown of the turns in the logs of one configuration's processes. With the
    client's own points (the same turn ids, sent as `x-ash-turn`), only the client's
    turns count (warm-up turns it did not keep are left out); else every turn does."""
    client_points = list(client_points)
    turns = join([*read_points(paths), *client_points])
    if client_points:
        counted = {point.turn for point in client_points}
        turns = {turn: points for turn, points in turns.items() if turn in counted}
    return breakdown(turns)


def markdown(breakdowns: Mapping[str, Breakdown]) -> str:
    """One table per configuration, with its complete and incomplete turn counts."""
    parts = []
    for name, result in breakdowns.items():
        note = f"{result.complete} turns"
        if result.incomplete:
            note += f", {result.incomplete} incomplete (missing: {result.missing})"
        parts.append(f"### {name} — first-event path, {note}\n\n{result.table()}")
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.timing",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("logs", nargs="+", type=Path,
                        help="log files of one configuration's processes")
    parser.add_argument("--label", default="turns", help="the configuration's name")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    try:
        result = breakdown_from_logs(args.logs)
    except NoSamples as exc:
        print(f"bench.timing: {exc}", file=sys.stderr)
        return 1
    print(markdown({args.label: result}))
    if args.json:
        args.json.write_text(json.dumps({args.label: result.as_dict()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
