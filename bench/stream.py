"""Stream throughput and fairness: `python -m bench.stream`.

Starts a standalone gateway (and, with --via-runner, a gateway + runner) and
measures, on one HTTP/2 connection:

* events/s of a single streamed turn (mock agent, no token delay);
* the same while a neighbouring stream on the same connection holds its window
  at zero with a 100,000-event turn behind it — per-connection fairness under a
  slow neighbour (the ratio should be ~1).

Prints a markdown table of medians over --rounds rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.deploy import API_KEY, start
from bench.h2_client import RawH2Client
from bench.report import machine_lines

HEADERS = [("authorization", f"Bearer {API_KEY}"), ("content-type", "application/json")]


def _json(client: RawH2Client, method: str, path: str, body: object | None = None) -> dict:
    stream = client.request(method, path, headers=HEADERS,
                            body=None if body is None else json.dumps(body).encode())
    result = client.wait_response(stream)
    if result.status is None or result.status >= 300:
        raise RuntimeError(f"{method} {path}: {result.status} {bytes(result.body)[:200]!r}")
    return json.loads(bytes(result.body))


def _session(client: RawH2Client) -> str:
    return _json(client, "POST", "/api/sessions", {"agent": "bench-stream"})["session"]["id"]


def _turn_body(tokens: int) -> bytes:
    return json.dumps({"content": "stream", "options": {"tokens": tokens}}).encode()


def timed_turn(client: RawH2Client, sid: str, tokens: int) -> float:
    """Events per second of one turn, request sent to `done` received."""
    started = time.perf_counter()
    stream = client.request("POST", f"/api/sessions/{sid}/messages", headers=HEADERS,
                            body=_turn_body(tokens))
    result = client.wait_response(stream)
    elapsed = time.perf_counter() - started
    if not bytes(result.body).rstrip().endswith(b'"status":"ok"}'):
        raise RuntimeError("turn did not end with done")
    return (tokens + 3) / elapsed


def measure(url: str, rounds: int, tokens: int, agent_dir: Path) -> dict[str, float]:
    client = RawH2Client(url, timeout=120)
    try:
        _json(client, "POST", "/api/agents", {"name": "bench-stream", "path": str(agent_dir)})
        alone_sid, busy_sid, flood_sid = _session(client), _session(client), _session(client)
        timed_turn(client, alone_sid, 1000)
        alone = [timed_turn(client, alone_sid, tokens) for _ in range(rounds)]
        held = client.request("POST", f"/api/sessions/{flood_sid}/messages", headers=HEADERS,
                              body=_turn_body(100_000), auto_ack=False)
        client.pump_for(0.5)
        beside = [timed_turn(client, busy_sid, tokens) for _ in range(rounds)]
        client.open_window(held)
        client.wait_response(held)
    finally:
        client.close()
    return {"alone": statistics.median(alone), "beside_held": statistics.median(beside)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.stream", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=20_000)
    parser.add_argument("--via-runner", action="store_true",
                        help="also measure through a runner process (gRPC hop)")
    args = parser.parse_args(argv)
    print("\n".join(["# Stream throughput", "", *machine_lines(),
                     f"- {args.rounds} rounds of {args.tokens} events"]), flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ash-bench-stream-") as tmp:
        root = Path(tmp)
        agent_dir = root / "agent"
        agent_dir.mkdir()
        (agent_dir / "CLAUDE.md").write_text("bench\n")
        (agent_dir / "agent.json").write_text('{"backend": "mock"}')
        configs = [("standalone", None)] + ([("via runner", "session")] if args.via_runner else [])
        for name, turn_rpc in configs:
            print(f"… {name}", file=sys.stderr, flush=True)
            deployment = start(name.replace(" ", "-"), root, turn_rpc)
            try:
                if turn_rpc is not None:
                    time.sleep(1.5)  # the runner registers on its first heartbeat
                figures = measure(deployment.url, args.rounds, args.tokens, agent_dir)
            finally:
                deployment.stop()
            rows.append((name, figures))
    print("\n| deployment | events/s, one stream | events/s beside a held stream | ratio |")
    print("|---|---|---|---|")
    for name, figures in rows:
        ratio = figures["beside_held"] / figures["alone"]
        print(f"| {name} | {figures['alone']:,.0f} | {figures['beside_held']:,.0f} "
              f"| {ratio:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
