"""Sandbox spawn cost: creating a session with and without bubblewrap + cgroups.

    python -m bench.spawn [--rounds 30] [--modes bwrap,none]

Every figure comes from real processes, per sandbox mode (`bwrap`: bubblewrap
namespaces, cgroup limits and a loop-mounted workspace disk; `none`: a plain process):

* cold create — `LocalBackend.create` in this process for a new session: its workspace
  (for bwrap: a disk image copied from the template and loop-mounted), its cgroup,
  bubblewrap and the id-map handshake, then the bridge's Python start up to `ready`;
* create (warm pool) — the same create on a backend with a warm pool (bwrap only): a
  sandbox started ahead is bound to the session (agent folder copied in, its directory
  renamed, the `bind` frame, the bridge's `ready`). The pool is full when it starts;
* cold resume — the same on the kept workspace of a session whose sandbox stopped;
* create session — `POST /api/sessions` on a real `ash-gateway --sandbox MODE
  --warm-pool 0` over loopback HTTP/1.1: a cold create plus the gateway's own work;
* create session (warm pool) — the same on a gateway with its default warm pool.

Rounds alternate between the modes so drift hits both alike; each round waits (untimed)
for the pools to refill, so a refill never runs beside a timed create. Prints markdown
tables (`bench.stats`: nearest-rank percentiles).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from bench.deploy import API_KEY, _spawn
from bench.report import machine_lines as machine
from bench.stats import markdown_table, ms, summarize
from bench.turn_client import Http1Client
from runner.backend import AgentSpec
from runner.isolation import BwrapIsolation, NoIsolation, SandboxUnavailable
from runner.local import LocalBackend
from runner.sandbox import BridgeSettings
from runner.warm_pool import DEFAULT_SIZE

MODES = ("bwrap", "none")
AGENT = "spawn-bench"
FIGURES = ("cold create", "create (warm pool)", "cold resume", "create session",
           "create session (warm pool)")
POOL_WAIT = 60.0


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


async def pooled_round(backend: LocalBackend, agent: AgentSpec, round_no: int,
                       samples: dict[str, list[float]]) -> None:
    session = f"bench-warm-{round_no}"
    samples["create (warm pool)"].append(await timed(lambda: backend.create(session, agent)))
    await backend.destroy(session)
    await pool_full(backend)


async def pool_full(backend: LocalBackend) -> None:
    deadline = time.monotonic() + POOL_WAIT
    while (pool := backend.stats().pool) is not None and pool.ready < pool.size:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the warm pool did not refill in {POOL_WAIT:g} s: {pool}")
        await asyncio.sleep(0.02)


def gateway_round(gateway: Gateway, samples: dict[str, list[float]]) -> None:
    client = gateway.client
    started = time.perf_counter()
    status, created = client.call("POST", "/api/sessions", {"agent": AGENT})
    samples[gateway.figure].append((time.perf_counter() - started) * 1000)
    if status != 201:
        raise RuntimeError(f"create failed: {created}")
    client.call("DELETE", f"/api/sessions/{created['session']['id']}")  # type: ignore[index]
    if gateway.pool:
        gateway_pool_full(gateway.url)


def gateway_pool_full(url: str) -> None:
    """Poll /health on a connection of its own: the timed one stays clear of hypercorn's
    limit of requests per keep-alive connection."""
    client = Http1Client(url)
    try:
        deadline = time.monotonic() + POOL_WAIT
        while (pool := client.call("GET", "/health")[1]["warmPool"])["ready"] < pool["size"]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the gateway's warm pool did not refill: {pool}")
            time.sleep(0.05)
    finally:
        client.close()


@dataclass
class Gateway:
    process: subprocess.Popen[str]
    url: str
    client: Http1Client
    pool: int

    @property
    def figure(self) -> str:
        return "create session (warm pool)" if self.pool else "create session"


def start_gateway(mode: str, root: Path, pool: int) -> Gateway:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASH_")}
    env.update(ASH_API_KEY=API_KEY)
    name = f"{mode}-pool{pool}"
    (root / name).mkdir(parents=True)
    process, lines = _spawn(["-m", "gateway", "--port", "0", "--sandbox", mode, "--data-dir",
                             str(root / name / "data"), "--log-level", "error",
                             "--warm-pool", str(pool)],
                            env, root / name / "gateway.log", re.compile("^API key"))
    url = re.search(r"listening on (\S+)", "".join(lines))
    assert url is not None
    client = Http1Client(url.group(1))
    status, body = client.call("POST", "/api/agents",
                               {"name": AGENT, "path": make_agent(root / name).path})
    if status != 201:
        raise RuntimeError(f"deploy failed: {body}")
    return Gateway(process, url.group(1), client, pool)


def report(samples: dict[str, dict[str, list[float]]], rounds: int) -> str:
    modes = [m for m in MODES if m in samples]
    headers = ["figure", *(f"{m} {stat}" for m in modes for stat in ("p50", "p95"))]
    if len(modes) == 2:
        headers.append("bwrap minus none, p50")
    rows = []
    for figure in FIGURES:
        summaries = {m: summarize(samples[m][figure]) for m in modes if samples[m][figure]}
        if not summaries:
            continue
        row = [figure]
        for mode in modes:
            summary = summaries.get(mode)
            row += ([f"{ms(summary.p50)} ms", f"{ms(summary.p95)} ms"] if summary is not None
                    else ["—", "—"])
        if len(modes) == 2:
            row.append(f"{ms(summaries['bwrap'].p50 - summaries['none'].p50, signed=True)} ms"
                       if len(summaries) == 2 else "—")
        rows.append(row)
    return "\n".join(["# Sandbox spawn cost", "", *machine(),
                      f"- {rounds} rounds, alternating modes; warm pool of {DEFAULT_SIZE} "
                      "(bwrap only)", "", markdown_table(headers, rows)])


async def measure(modes: list[str], rounds: int, root: Path) -> dict[str, dict[str, list[float]]]:
    samples: dict[str, dict[str, list[float]]] = {
        mode: {figure: [] for figure in FIGURES} for mode in modes}
    agent = make_agent(root)
    backends: dict[str, list[LocalBackend]] = {}
    gateways: dict[str, list[Gateway]] = {}
    try:
        for mode in modes:
            backends[mode] = [LocalBackend(root / f"{mode}-runner", settings=BridgeSettings(),
                                           isolation=isolation(mode, root / f"{mode}-runner"))]
            gateways[mode] = [start_gateway(mode, root, 0)]
            if mode == "bwrap":
                pooled = LocalBackend(root / "pooled-runner", settings=BridgeSettings(),
                                      isolation=isolation(mode, root / "pooled-runner"),
                                      warm_pool=DEFAULT_SIZE)
                pooled.start_warm_pool()
                await pool_full(pooled)
                backends[mode].append(pooled)
                gateways[mode].append(start_gateway(mode, root, DEFAULT_SIZE))
                gateway_pool_full(gateways[mode][-1].url)
        for round_no in range(-1, rounds):  # round -1 warms up: templates, page cache
            for mode in modes:
                progress(f"round {round_no + 1}/{rounds}: {mode}")
                taken = samples[mode] if round_no >= 0 else {f: [] for f in FIGURES}
                cold, *pooled_backends = backends[mode]
                await backend_round(cold, agent, round_no, taken)
                for backend in pooled_backends:
                    await pooled_round(backend, agent, round_no, taken)
                for gateway in gateways[mode]:
                    gateway_round(gateway, taken)
    finally:
        progress("")
        for backend in (b for group in backends.values() for b in group):
            await backend.close()
        for gateway in (g for group in gateways.values() for g in group):
            gateway.client.close()
            gateway.process.terminate()
            gateway.process.wait(15)
    return samples


def isolation(mode: str, data_dir: Path) -> BwrapIsolation | NoIsolation:
    return BwrapIsolation(data_dir) if mode == "bwrap" else NoIsolation()


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
