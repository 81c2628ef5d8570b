"""Sandbox spawn cost: creating a session with and without bubblewrap + cgroups.

    python -m bench.spawn [--rounds 30] [--modes bwrap,none]

Every figure comes from real processes, per sandbox mode (`bwrap`: bubblewrap
namespaces, cgroup limits and a loop-mounted workspace disk; `none`: a plain process):

* cold create — `LocalBackend.create` in this process for a new session: its workspace
  (for bwrap: a disk image copied from the template and loop-mounted), its cgroup,
  bubblewrap and the id-map handshake, then the bridge's Python start up to `ready`;
* cold resume — the same on the kept workspace of a session whose sandbox stopped;
* create session — `POST /api/sessions` on a real `ash-gateway --sandbox MODE` over
  loopback HTTP/1.1: a cold create plus the gateway's own work.

Rounds alternate between the modes so drift hits both alike. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench.deploy import API_KEY, _spawn
from bench.report import machine_lines as machine
from bench.stats import percentile
from bench.turn_client import Http1Client
from runner.backend import AgentSpec
from runner.isolation import BwrapIsolation, NoIsolation, SandboxUnavailable
from runner.local import LocalBackend
from runner.sandbox import BridgeSettings

MODES = ("bwrap", "none")
AGENT = "spawn-bench"
FIGURES = ("cold create", "cold resume", "create session")


def make_agent(root: Path) -> AgentSpec:
    folder = root / "agent"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "CLAUDE.md").write_text("# Bench\nYou are a benchmark agent.\n")
    (folder / "agent.json").write_text('{"backend": "mock"}')
    return AgentSpec(name=AGENT, path=str(folder), config={"backend": "mock"})


def progress(text: str) -> None:
    print(f"\r\x1b[2K{text}", end="", file=sys.stderr, flush=True)


async def timed(action: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await action()
    return (time.perf_counter() - started) * 1000


async def backend_round(backend: LocalBackend, agent: AgentSpec, round_no: int,
                        samples: dict[str, list[float]]) -> None:
    session = f"bench-{round_no}"
    samples["cold create"].append(await timed(lambda: backend.create(session, agent)))
    await backend.destroy(session, keep_workspace=True)
    samples["cold resume"].append(await timed(lambda: backend.create(session, agent)))
    await backend.destroy(session)


def gateway_round(client: Http1Client, samples: dict[str, list[float]]) -> None:
    started = time.perf_counter()
    status, created = client.call("POST", "/api/sessions", {"agent": AGENT})
    samples["create session"].append((time.perf_counter() - started) * 1000)
    if status != 201:
        raise RuntimeError(f"create failed: {created}")
    client.call("DELETE", f"/api/sessions/{created['session']['id']}")  # type: ignore[index]


def start_gateway(mode: str, root: Path) -> tuple[subprocess.Popen[str], Http1Client]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASH_")}
    env.update(ASH_API_KEY=API_KEY)
    (root / mode).mkdir(parents=True)
    process, lines = _spawn(["-m", "gateway", "--port", "0", "--sandbox", mode, "--data-dir",
                             str(root / mode / "data"), "--log-level", "error"],
                            env, root / mode / "gateway.log", re.compile("^API key"))
    url = re.search(r"listening on (\S+)", "".join(lines))
    assert url is not None
    client = Http1Client(url.group(1))
    status, body = client.call("POST", "/api/agents",
                               {"name": AGENT, "path": make_agent(root / mode).path})
    if status != 201:
        raise RuntimeError(f"deploy failed: {body}")
    return process, client


def report(samples: dict[str, dict[str, list[float]]], rounds: int) -> str:
    modes = [m for m in MODES if m in samples]
    lines = ["# Sandbox spawn cost", "", *machine(), f"- {rounds} rounds, alternating modes",
             "", "| figure | " + " | ".join(f"{m} p50 | {m} p95" for m in modes)
             + (" | bwrap minus none, p50 |" if len(modes) == 2 else " |"),
             "|---|" + "---:|" * (2 * len(modes) + (len(modes) == 2))]
    for figure in FIGURES:
        cells = []
        for mode in modes:
            values = sorted(samples[mode][figure])
            cells += [f"{statistics.median(values):.1f} ms", f"{percentile(values, 0.95):.1f} ms"]
        if len(modes) == 2:
            delta = (statistics.median(samples["bwrap"][figure])
                     - statistics.median(samples["none"][figure]))
            cells.append(f"{delta:+.1f} ms")
        lines.append(f"| {figure} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


async def measure(modes: list[str], rounds: int, root: Path) -> dict[str, dict[str, list[float]]]:
    samples = {mode: {figure: [] for figure in FIGURES} for mode in modes}
    agent = make_agent(root)
    backends: dict[str, LocalBackend] = {}
    gateways: dict[str, tuple[subprocess.Popen[str], Http1Client]] = {}
    try:
        for mode in modes:
            isolation = (BwrapIsolation(root / f"{mode}-runner") if mode == "bwrap"
                         else NoIsolation())
            backends[mode] = LocalBackend(root / f"{mode}-runner", settings=BridgeSettings(),
                                          isolation=isolation)
            gateways[mode] = start_gateway(mode, root)
        for mode in modes:  # warm-up: templates, page cache
            await backend_round(backends[mode], agent, -1, {f: [] for f in FIGURES})
            gateway_round(gateways[mode][1], {f: [] for f in FIGURES})
        for round_no in range(rounds):
            for mode in modes:
                progress(f"round {round_no + 1}/{rounds}: {mode}")
                await backend_round(backends[mode], agent, round_no, samples[mode])
                gateway_round(gateways[mode][1], samples[mode])
    finally:
        progress("")
        for backend in backends.values():
            await backend.close()
        for process, client in gateways.values():
            client.close()
            process.terminate()
            process.wait(15)
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.spawn", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--modes", default=",".join(MODES),
                        help="comma-separated sandbox modes to measure (bwrap, none)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    modes = [m for m in args.modes.split(",") if m]
    if unknown := set(modes) - set(MODES):
        parser.error(f"unknown modes: {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory(prefix="ash-spawn-bench-") as scratch:
        try:
            samples = asyncio.run(measure(modes, args.rounds, Path(scratch)))
        except SandboxUnavailable as exc:
            print(f"bench.spawn: the bwrap sandbox is unavailable here: {exc}", file=sys.stderr)
            return 2
    print(report(samples, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
