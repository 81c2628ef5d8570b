"""The hop benchmark (seed `000_…`): the same workload standalone and through a runner.

    python -m bench.hop [--rounds 10] [--turns 20] [--tokens 20] [--json results.json]

Starts, on loopback, as separate processes:

* `standalone`  — `ash-gateway` running sandboxes in-process;
* `runner`      — `ash-gateway --mode coordinator` + one `ash-runner`; a turn is a
                  message on the session's long-lived gRPC stream (the shipped design);
* `runner-send` — the same, with `--turn-rpc send`: each turn opens its own RPC (the
                  per-turn design, kept to measure against).

Rounds alternate between the deployments so drift (CPU frequency, other load) hits
all of them alike. A round creates a session (timed), runs `--turns` turns on it
and ends it. Per turn: TTFT, the time from sending the request to the first
agent-derived event (`text_delta`), and the total, to `done`. The mock agent
answers at once (no pacing), so every figure is overhead. The client is a raw
HTTP/1.1 keep-alive socket: the least client work in the measurement, the same
for every deployment.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

API_KEY = "ash_bench_key"
SECRET = "bench-internal-secret"
AGENT = "bench"
STARTUP_TIMEOUT = 30.0


@dataclass
class Deployment:
    name: str
    url: str = ""
    processes: list[subprocess.Popen[str]] = field(default_factory=list)

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()


def _spawn(args: list[str], env: dict[str, str], log: Path,
           ready: re.Pattern[str]) -> tuple[subprocess.Popen[str], list[str]]:
    """Start a process; returns it with the stdout lines up to and including `ready`."""
    with open(log, "ab") as stderr:
        process = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE,
                                   stderr=stderr, text=True, env=env)
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"{args[:2]} exited: {log.read_text()[-2000:]}")
        lines.append(line)
        if ready.search(line):
            return process, lines
    raise RuntimeError(f"{args[:2]} did not start: {lines}")


def _found(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    if match is None:
        raise RuntimeError(f"no {pattern!r} in {text!r}")
    return match.group(1)


def start(name: str, root: Path, turn_rpc: str | None, *,
          runner_args: Sequence[str] = ()) -> Deployment:
    """A deployment: the gateway, plus a runner unless `turn_rpc` is None (standalone);
    `runner_args` are appended to the runner's command line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASH_")}
    env.update(ASH_API_KEY=API_KEY, ASH_INTERNAL_SECRET=SECRET)
    deployment = Deployment(name)
    args = ["-m", "gateway", "--port", "0", "--data-dir", str(root / name / "gateway"),
            "--log-level", "warning"]
    if turn_rpc is not None:
        args += ["--mode", "coordinator", "--grpc-port", "0", "--turn-rpc", turn_rpc]
    (root / name).mkdir(parents=True)
    gateway, lines = _spawn(args, env, root / name / "gateway.log", re.compile("^API key"))
    deployment.processes.append(gateway)
    deployment.url = _found(r"listening on (\S+)", "".join(lines))
    if turn_rpc is not None:
        registry = _found(r"Runner registry \(gRPC, \w+\) on (\S+)", "".join(lines))
        runner, _ = _spawn(
            ["-m", "runner", "--gateway", registry, "--listen", "127.0.0.1:0",
             "--runner-id", f"{name}-1", "--data-dir", str(root / name / "runner"),
             "--heartbeat-interval", "1", "--log-level", "warning", *runner_args],
            env, root / name / "runner.log", re.compile("listening on"))
        deployment.processes.append(runner)
    return deployment


class Http1Client:
    """A keep-alive HTTP/1.1 client on one raw socket."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = f"{parts.hostname}:{parts.port}"
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def _send(self, method: str, path: str, body: bytes) -> None:
        self.sock.sendall(
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Authorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode() + body)

    def _read_until(self, marker: bytes) -> None:
        while marker not in self.buffer:
            data = self.sock.recv(262144)
            if not data:
                raise ConnectionError("gateway closed the connection")
            self.buffer += data

    def call(self, method: str, path: str, payload: object = None) -> tuple[int, Any]:
        """A request with a JSON body and a JSON (content-length) response."""
        self._send(method, path, b"" if payload is None else json.dumps(payload).encode())
        self._read_until(b"\r\n\r\n")
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status = int(head.split(b" ", 2)[1])
        length = int(_found(r"(?i)content-length: *(\d+)", head.decode("latin-1")))
        while len(self.buffer) < length:
            self.buffer += self.sock.recv(262144)
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, json.loads(body) if body else None

    def turn(self, session_id: str, content: str) -> tuple[float, float]:
        """One streamed turn: seconds to the first `text_delta`, and to the end of the stream."""
        body = json.dumps({"content": content}).encode()
        started = time.perf_counter()
        self._send("POST", f"/api/sessions/{session_id}/messages", body)
        self._read_until(b"event: text_delta")
        first = time.perf_counter()
        self._read_until(b"event: done")
        self._read_until(b"\r\n0\r\n\r\n")
        done = time.perf_counter()
        if b" 200 " not in self.buffer[:20]:
            raise RuntimeError(f"turn failed: {self.buffer[:300]!r}")
        self.buffer = self.buffer.split(b"\r\n0\r\n\r\n", 1)[1]
        return first - started, done - started

    def close(self) -> None:
        self.sock.close()


def run_round(client: Http1Client, turns: int, samples: dict[str, list[float]]) -> None:
    started = time.perf_counter()
    status, created = client.call("POST", "/api/sessions", {"agent": AGENT})
    samples["create session"].append(time.perf_counter() - started)
    if status != 201:
        raise RuntimeError(f"create failed: {created}")
    session_id = created["session"]["id"]
    for turn in range(turns):
        ttft, total = client.turn(session_id, f"turn {turn} of the hop benchmark")
        samples["TTFT"].append(ttft)
        samples["total msg"].append(total)
    client.call("DELETE", f"/api/sessions/{session_id}")


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] * 1000

    return {"p50": pct(50), "p95": pct(95), "p99": pct(99),
            "mean": statistics.fmean(ordered) * 1000, "n": len(ordered)}


def report(results: dict[str, dict[str, dict[str, float]]]) -> str:
    metrics = ("create session", "TTFT", "total msg")
    lines = []
    for name, table in results.items():
        lines += [f"\n### {name}\n", "| metric | p50 | p95 | p99 | mean | n |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {m} | {table[m]['p50']:.3f} | {table[m]['p95']:.3f} | "
                  f"{table[m]['p99']:.3f} | {table[m]['mean']:.3f} | {table[m]['n']} |"
                  for m in metrics]
    base = results["standalone"]
    lines += ["\n### Overhead (minus standalone), ms\n",
              "| deployment | metric | p50 delta | mean delta |", "|---|---|---|---|"]
    for name, table in results.items():
        if name == "standalone":
            continue
        lines += [f"| {name} | {m} | {table[m]['p50'] - base[m]['p50']:+.3f} | "
                  f"{table[m]['mean'] - base[m]['mean']:+.3f} |" for m in metrics]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hop", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--turns", type=int, default=20, help="turns per round (per session)")
    parser.add_argument("--tokens", type=int, default=20, help="text_delta events per reply")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="ash-hop-"))
    agent_dir = root / "agent"
    agent_dir.mkdir()
    (agent_dir / "CLAUDE.md").write_text("# Bench\nA benchmark agent.\n")
    (agent_dir / "agent.json").write_text(json.dumps(
        {"backend": "mock", "mock": {"first_token_delay_ms": 0, "token_interval_ms": 0,
                                     "tokens": args.tokens}}))
    deployments = []
    clients: dict[str, Http1Client] = {}
    try:
        for name, turn_rpc in (("standalone", None), ("runner", "session"),
                               ("runner-send", "send")):
            deployment = start(name, root, turn_rpc)
            deployments.append(deployment)
            clients[name] = client = Http1Client(deployment.url)
            status, answer = client.call("POST", "/api/agents",
                                         {"name": AGENT, "path": str(agent_dir)})
            if status != 201:
                raise RuntimeError(f"deploy failed on {name}: {answer}")
        _wait_for_runners(clients)
        samples = {name: {"create session": [], "TTFT": [], "total msg": []} for name in clients}
        for round_number in range(args.warmup + args.rounds):
            for name, client in clients.items():
                scratch: dict[str, list[float]] = {m: [] for m in samples[name]}
                run_round(client, args.turns, scratch if round_number < args.warmup
                          else samples[name])
        results = {name: {m: summary(v) for m, v in table.items()}
                   for name, table in samples.items()}
        print(f"# Hop benchmark: {args.rounds} rounds x {args.turns} turns, mock agent "
              f"({args.tokens} tokens, no pacing); milliseconds")
        print(report(results))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        return 0
    finally:
        for client in clients.values():
            client.close()
        for deployment in deployments:
            deployment.stop()
        shutil.rmtree(root, ignore_errors=True)


def _wait_for_runners(clients: dict[str, Http1Client]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    for name, client in clients.items():
        if name == "standalone":
            continue
        while True:
            _, listed = client.call("GET", "/api/runners")
            if any(r["state"] == "healthy" and r["connected"]
                   for r in listed["runners"]):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"no runner registered with {name}")
            time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main())
