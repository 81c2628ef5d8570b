"""Server comparison: `python -m bench.servers` — the gateway under hypercorn and under granian.

    python -m bench.servers [--rounds 10] [--turns 20] [--tokens 20] [--stream-events 20000]

Starts, on loopback, as separate processes, one of each per server:

* `gateway` — a standalone `ash-gateway --server NAME`, the mock agent answering
  at once (no pacing), so every figure is overhead;
* `bare`    — `bench.bare_sse`: a tiny ASGI app that answers every request with
  a stream shaped like a turn (`--tokens` text_delta frames, then done), served
  by the same serving code; the server's own cost, without the gateway.

Per request, over HTTP/1.1 (one keep-alive socket) and over HTTP/2 (prior
knowledge, one connection): TTFT, request sent to the first `text_delta` frame
received, and total, to `done`. Then events/s of one `--stream-events` stream
over HTTP/2. Rounds alternate between the servers (the order flips every
round) so drift hits both alike; `--warmup` rounds are not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

from bench.deploy import API_KEY, Deployment, _spawn, start
from bench.h2_client import RawH2Client
from bench.hop import AGENT
from bench.stats import Summary, markdown_table, ms, summarize
from bench.turn_client import Http1Client
from gateway.servers import SERVERS

HEADERS = [("authorization", f"Bearer {API_KEY}"), ("content-type", "application/json")]
METRICS = ("TTFT h1", "total h1", "TTFT h2", "total h2")


@dataclass
class Target:
    """One server process under test and the two clients kept open on it."""

    workload: str
    server: str
    deployment: Deployment
    h1: Http1Client
    h2: RawH2Client
    session_id: str = ""
    samples: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    @property
    def path(self) -> str:
        """Where a turn is posted (the bare app answers any path the same way)."""
        return f"/api/sessions/{self.session_id or 'bare'}/messages"

    def close(self) -> None:
        self.h1.close()
        self.h2.close()
        self.deployment.stop()


def h2_turn(client: RawH2Client, path: str, body: bytes) -> tuple[float, float]:
    """One streamed turn over HTTP/2: seconds to the first `text_delta`, and to the end."""
    started = time.perf_counter()
    stream = client.request("POST", path, headers=HEADERS, body=body)
    result = client.streams[stream]
    while b"event: text_delta" not in result.body:
        if result.ended or result.reset or client.terminated:
            raise RuntimeError(f"turn ended early: {result.status} {bytes(result.body)[:300]!r}")
        client.pump()
    first = time.perf_counter()
    client.wait_response(stream)
    done = time.perf_counter()
    if b"event: done" not in result.body:
        raise RuntimeError(f"turn did not end with done: {bytes(result.body)[-300:]!r}")
    del client.streams[stream]
    return first - started, done - started


def events_per_second(client: RawH2Client, path: str, events: int) -> float:
    """Frames per second of one `events`-frame stream (request sent to `done` received)."""
    body = json.dumps({"content": "stream", "options": {"tokens": events}}).encode()
    started = time.perf_counter()
    stream = client.request("POST", f"{path}?n={events}", headers=HEADERS, body=body)
    result = client.wait_response(stream)
    elapsed = time.perf_counter() - started
    if not bytes(result.body).rstrip().endswith(b'"status":"ok"}'):
        raise RuntimeError("stream did not end with done")
    del client.streams[stream]
    return (events + 1) / elapsed


def start_gateway(server: str, root: Path, agent_dir: Path) -> Target:
    deployment = start(f"gateway-{server}", root, None, gateway_args=["--server", server])
    target = Target("gateway", server, deployment, Http1Client(deployment.url),
                    RawH2Client(deployment.url, timeout=120))
    status, answer = target.h1.call("POST", "/api/agents", {"name": AGENT, "path": str(agent_dir)})
    if status != 201:
        raise RuntimeError(f"deploy failed under {server}: {answer}")
    return target


def start_bare(server: str, root: Path, events: int) -> Target:
    log = root / f"bare-{server}.log"
    process, lines = _spawn(["-m", "bench.bare_sse", "--server", server, "--events", str(events)],
                            dict(os.environ), log, re.compile("listening on"))
    deployment = Deployment(f"bare-{server}", processes=[process])
    match = re.search(r"listening on (\S+)", "".join(lines))
    assert match is not None
    deployment.url = match.group(1)
    return Target("bare", server, deployment, Http1Client(deployment.url),
                  RawH2Client(deployment.url, timeout=120))


def run_round(target: Target, turns: int, stream_events: int, counted: bool) -> None:
    samples: dict[str, list[float]] = target.samples if counted else defaultdict(list)
    if target.workload == "gateway":
        status, created = target.h1.call("POST", "/api/sessions", {"agent": AGENT})
        if status != 201:
            raise RuntimeError(f"create failed: {created}")
        target.session_id = created["session"]["id"]
    body = json.dumps({"content": "a turn of the server benchmark"}).encode()
    for _ in range(turns):
        timing = target.h1.turn(target.session_id or "bare",
                                {"content": "a turn of the server benchmark"})
        samples["TTFT h1"].append(timing.first_agent_event)
        samples["total h1"].append(timing.done)
    for _ in range(turns):
        ttft, total = h2_turn(target.h2, target.path, body)
        samples["TTFT h2"].append(ttft)
        samples["total h2"].append(total)
    samples["events/s"].append(events_per_second(target.h2, target.path, stream_events))
    if target.session_id:
        target.h1.call("DELETE", f"/api/sessions/{target.session_id}")
        target.session_id = ""


def report(targets: list[Target]) -> str:
    sections = []
    for workload in ("bare", "gateway"):
        rows = []
        for metric in METRICS:
            for target in targets:
                if target.workload != workload:
                    continue
                s = summarize(target.samples[metric], scale=1000)
                rows.append([metric, target.server, ms(s.p50), ms(s.p95), ms(s.p99),
                             ms(s.mean), s.n])
        for target in targets:
            if target.workload == workload:
                s = summarize(target.samples["events/s"])
                rows.append(["events/s (h2)", target.server, f"{s.p50:,.0f}", f"{s.min:,.0f}",
                             f"{s.max:,.0f}", f"{s.mean:,.0f}", s.n])
        sections.append(f"\n### {workload} (ms; events/s row: median, min, max, mean)\n\n"
                        + markdown_table(("metric", "server", "p50", "p95", "p99", "mean", "n"),
                                         rows))
    return "\n".join(sections)


def figures(targets: list[Target]) -> dict[str, dict[str, dict[str, Summary]]]:
    result: dict[str, dict[str, dict[str, Summary]]] = defaultdict(dict)
    for target in targets:
        result[target.workload][target.server] = {
            metric: summarize(values, scale=1 if metric == "events/s" else 1000)
            for metric, values in target.samples.items()}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.servers",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--turns", type=int, default=20, help="turns per round, per protocol")
    parser.add_argument("--tokens", type=int, default=20, help="text_delta frames per turn")
    parser.add_argument("--stream-events", type=int, default=20_000,
                        help="frames in the events/s stream")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="ash-servers-"))
    agent_dir = root / "agent"
    agent_dir.mkdir()
    (agent_dir / "CLAUDE.md").write_text("# Bench\nA benchmark agent.\n")
    (agent_dir / "agent.json").write_text(json.dumps(
        {"backend": "mock", "mock": {"first_token_delay_ms": 0, "token_interval_ms": 0,
                                     "tokens": args.tokens}}))
    targets: list[Target] = []
    try:
        for server in SERVERS:
            targets.append(start_bare(server, root, args.tokens))
            targets.append(start_gateway(server, root, agent_dir))
        for number in range(args.warmup + args.rounds):
            order = targets if number % 2 == 0 else targets[::-1]
            for target in order:
                run_round(target, args.turns, args.stream_events, counted=number >= args.warmup)
        print(f"# Server comparison — {platform.node()}, Python {platform.python_version()}, "
              f"hypercorn {version('hypercorn')}, granian {version('granian')}; "
              f"{args.rounds} rounds x {args.turns} turns per protocol, {args.tokens} tokens, "
              f"mock agent (no pacing)")
        print(report(targets))
        if args.json:
            args.json.write_text(json.dumps(
                {w: {s: {m: v.as_dict() for m, v in t.items()} for s, t in by.items()}
                 for w, by in figures(targets).items()}, indent=2))
        return 0
    finally:
        for target in targets:
            target.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
