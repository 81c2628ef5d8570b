"""Real-SDK first event on turns after the first, against the model stub.

    python -m bench.sdk_first_event [--turns 20] [--first-token-ms 0]

Starts the model stub and a standalone gateway, deploys a `claude` agent pointed at
the stub, opens one session (one live CLI), and sends `--turns` messages after a
warm-up turn. For each turn it takes, on one clock (time.time(), same machine):
the message sent, the stub receiving the model request, the stub writing its first
token, the client's first SSE event and first `text_delta`. It prints the p50s and
the target: first `text_delta` <= stub first token + 50 ms.

Needs the test extras (httpx) and the claude extra: `pip install -e '.[test]'`.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson

from bench.model_stub import StubProcess

TARGET_MS = 50.0
API_KEY = "ash_bench_key_0123456789"


@dataclass(frozen=True, slots=True)
class TurnTiming:
    """Milliseconds after the message was sent."""

    request_at_stub: float
    stub_first_token: float
    first_event: float
    first_text_delta: float

    @property
    def after_stub_token(self) -> float:
        return self.first_text_delta - self.stub_first_token


def start_gateway(data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASH_")}
    env["ASH_API_KEY"] = API_KEY
    env["ASH_SANDBOX"] = "none"  # a sandbox's network cannot reach the stub until the model proxy
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "--port", "0", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    assert process.stdout is not None
    url = ""
    for line in process.stdout:
        if match := re.search(r"listening on (\S+)", line):
            url = match.group(1)
        if line.startswith("API key"):
            return process, url
    raise RuntimeError(f"gateway exited {process.wait()}")


def make_agent(root: Path, stub_url: str) -> Path:
    folder = root / "agent"
    folder.mkdir()
    (folder / "CLAUDE.md").write_text("You are the first-event benchmark agent.\n")
    (folder / "agent.json").write_bytes(orjson.dumps({
        "backend": "claude",
        "env": {"ANTHROPIC_BASE_URL": stub_url, "ANTHROPIC_API_KEY": "bench-key"}}))
    return folder


def one_turn(client: httpx.Client, sid: str, stub: StubProcess, prompt: str) -> TurnTiming:
    stub.clear_requests()
    sent = time.time()
    first_event = first_delta = None
    with client.stream("POST", f"/api/sessions/{sid}/messages",
                       json={"content": prompt}) as response:
        response.raise_for_status()
        for chunk in response.iter_raw():
            now = time.time()
            first_event = first_event or now
            if first_delta is None and b"event: text_delta" in chunk:
                first_delta = now
    if first_delta is None or first_event is None:
        raise RuntimeError("the turn streamed no text_delta")
    call = stub.requests()[0]

    def ms(at: float) -> float:
        return (at - sent) * 1000

    return TurnTiming(ms(call["received_at"]), ms(call["first_token_at"]),
                      ms(first_event), ms(first_delta))


def p50(values: list[float]) -> float:
    return statistics.median(values)


def run(turns: int, first_token_ms: float, token_interval_ms: float) -> list[TurnTiming]:
    stub_args = ["--first-token-ms", str(first_token_ms),
                 "--token-interval-ms", str(token_interval_ms)]
    with tempfile.TemporaryDirectory(prefix="ash-bench-") as tmp, \
            StubProcess(stub_args) as stub:
        root = Path(tmp)
        gateway, url = start_gateway(root / "data")
        try:
            with httpx.Client(base_url=url, http1=False, http2=True, timeout=60,
                              headers={"authorization": f"Bearer {API_KEY}"}) as client:
                deployed = client.post("/api/agents", json={
                    "name": "bench", "path": str(make_agent(root, stub.url))})
                deployed.raise_for_status()
                created = client.post("/api/sessions", json={"agent": "bench"})
                created.raise_for_status()
                sid = created.json()["session"]["id"]
                one_turn(client, sid, stub, "warm-up turn")
                return [one_turn(client, sid, stub, f"turn {i}") for i in range(turns)]
        finally:
            gateway.terminate()
            gateway.wait(15)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sdk_first_event",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--first-token-ms", type=float, default=0.0)
    parser.add_argument("--token-interval-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    timings = run(args.turns, args.first_token_ms, args.token_interval_ms)
    rows = [
        ("model request reaches the stub", [t.request_at_stub for t in timings]),
        ("stub first token", [t.stub_first_token for t in timings]),
        ("client first event (any)", [t.first_event for t in timings]),
        ("client first text_delta", [t.first_text_delta for t in timings]),
        ("first text_delta after stub first token", [t.after_stub_token for t in timings]),
    ]
    print(f"real-SDK first event, {len(timings)} turns after the first "
          f"(stub first-token delay {args.first_token_ms:g} ms); ms after the message was sent:")
    for label, values in rows:
        print(f"  {label:<42} p50 {p50(values):7.1f}   min {min(values):7.1f}"
              f"   max {max(values):7.1f}")
    stub_token, first_delta = p50(rows[1][1]), p50(rows[3][1])
    verdict = "met" if first_delta <= stub_token + TARGET_MS else "missed"
    print(f"target: first text_delta p50 {first_delta:.1f} ms <= stub first token p50 "
          f"{stub_token:.1f} ms + {TARGET_MS:g} ms: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
