"""The hop benchmark (seed `000_…`): the same workload standalone and through a runner.

    python -m bench.hop [--agent mock|claude] [--rounds 50] [--turns 5] [--http1] [--help]

Starts, on loopback, as separate processes:

* `standalone`     — `ash-gateway` running sandboxes in-process;
* `gateway+runner` — `ash-gateway --mode coordinator` + one `ash-runner` (gRPC; a turn
                     is a message on the session's long-lived stream);
* with `--turn-rpc-send`, also `runner-send` — the same with `--turn-rpc send` (one RPC
  per turn, the design kept to measure against).

Rounds alternate between the configurations (A B A B …) so drift (CPU frequency, other
load) hits all of them alike; `--warmup` rounds come first and are not counted. A round
creates a session (timed), runs `--turns` turns on it, then — in `--lifecycle-rounds` of
the rounds, spread evenly — pauses and resumes it with its sandbox alive (warm resume,
timed), pauses it again, kills its sandbox and resumes it (cold resume: a new sandbox,
state restored; timed), and ends it.

Per turn: TTFT, from sending the request to the first *agent-derived* SSE event (one the
agent produced: text, thinking, tool use or result, message, turn_complete — never a
bookkeeping event, an `error` or `done` the gateway may add), and the total, to `done`.
The mock agent's first-token delay is fixed (`--first-token-ms`), so its "Ash overhead"
(TTFT minus that delay) is exact; with `--agent claude` (the real Claude Agent SDK against
`bench/model_stub.py`, whose first event is its `system` message) it is the first model
output (text, thinking, tool use) minus the stub's first token, on one clock. After the
rounds, with `--warm-pool N` and a build that has it, creates from a warm pool are timed
on deployments started with that flag; otherwise the figure is reported as n/a. The
deployments run with ASH_DEBUG_TIMING=1 and each turn names itself (`x-ash-turn`), so the
per-hop breakdown of the first token's path (`bench.timing`, docs/timing.md) comes from
the processes' logs and the client's own points once they have stopped.

Processes come from `bench.deploy`, the timed clients from `bench.turn_client`, the
statistics from `bench.stats`, the header and files from `bench.report`.

The client is a raw synchronous HTTP/2 client on one connection per configuration (the
least client work, the same for each); `--http1` uses one HTTP/1.1 keep-alive socket.
Output: markdown tables on stdout, a progress line on stderr, and the full JSON (every
raw sample) and a PNG chart in `bench/results/` (`hop-<agent>-latest.*`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bench import report
from bench import timing as bt
from bench.deploy import STARTUP_TIMEOUT, Deployment, start, supports_flag
from bench.stats import NoSamples, Summary, markdown_table, ms, summarize
from bench.turn_client import BenchClient, TurnTiming, connect
from wire import timing as wt

AGENT = "bench"
MODEL_KEY = "bench-model-key"
"""The dummy model key the runner holds; the stub accepts any."""
CLAUDE_MODEL_ENV = {"CLAUDE_CODE_MAX_RETRIES": "1", "API_TIMEOUT_MS": "30000"}
"""A broken stub fails a turn within a minute instead of the CLI retrying for minutes."""

CREATE, TTFT, TOTAL, OVERHEAD = "create session", "TTFT", "total msg", "Ash overhead"
FIRST_EVENT, FIRST_OUTPUT = "first SSE event", "first model output"
WARM_CREATE, WARM_RESUME, COLD_RESUME = "create (warm pool)", "warm resume", "cold resume"
SEED_METRICS = (CREATE, TTFT, TOTAL)
LIFECYCLE_METRICS = (WARM_RESUME, COLD_RESUME)


# --- configurations and their processes ----------------------------------------------


@dataclass(frozen=True, slots=True)
class Config:
    name: str
    """As the tables show it."""
    key: str
    """File- and directory-safe."""
    turn_rpc: str | None
    """None: standalone; else the coordinator's `--turn-rpc`."""


STANDALONE = Config("standalone", "standalone", None)
VIA_RUNNER = Config("gateway+runner", "runner", "session")
VIA_RUNNER_SEND = Config("gateway+runner (RPC per turn)", "runner-send", "send")


# --- one round -------------------------------------------------------------------------


Samples = dict[str, list[float]]
"""metric → samples in milliseconds."""


@dataclass(frozen=True, slots=True)
class Settings:
    agent: str
    rounds: int
    warmup: int
    turns: int
    tokens: int
    first_token_ms: float
    token_interval_ms: float
    http: str
    sandbox: str
    lifecycle_rounds: int
    warm_pool: int
    warm_pool_rounds: int
    warm_pool_refill_ms: float
    configurations: tuple[str, ...]


@dataclass
class Target:
    """One configuration while the bench runs: its processes and its one connection."""

    config: Config
    deployment: Deployment
    client: BenchClient
    samples: Samples = field(default_factory=dict)
    first_agent_types: Counter[str] = field(default_factory=Counter)
    """Which event type ended TTFT, turn by turn (the JSON shows it)."""
    client_points: list[wt.Point] = field(default_factory=list)
    """The counted turns' `client.*` timing points, for the per-hop breakdown."""

    def add(self, metric: str, value_ms: float) -> None:
        self.samples.setdefault(metric, []).append(value_ms)


class FirstToken(Protocol):
    """When the agent's model produced its first token, for the overhead figure."""

    def before_turn(self) -> None: ...

    def after(self, timing: TurnTiming) -> float | None:
        """Milliseconds after the request was sent; None if unknown."""
        ...


@dataclass
class FixedFirstToken:
    """The mock agent: its first token comes a known delay after the command."""

    delay_ms: float

    def before_turn(self) -> None:
        return None

    def after(self, timing: TurnTiming) -> float | None:
        return self.delay_ms


@dataclass
class StubFirstToken:
    """The real SDK: the model stub records when it wrote its first token (`time.time()`)."""

    stub: Any

    def before_turn(self) -> None:
        self.stub.clear_requests()

    def after(self, timing: TurnTiming) -> float | None:
        tokens = [r["first_token_at"] for r in self.stub.requests()
                  if r.get("first_token_at")]
        return (min(tokens) - timing.sent_wall) * 1000 if tokens else None


def _session(status: int, answer: Any, action: str) -> dict[str, Any]:
    if status not in (200, 201):
        raise RuntimeError(f"{action} failed: {status} {answer}")
    return dict(answer["session"])


def health(client: BenchClient) -> dict[str, Any]:
    status, answer = client.call("GET", "/health")
    if status != 200:
        raise RuntimeError(f"/health: {status} {answer}")
    return dict(answer)


def live_sandboxes(client: BenchClient) -> int:
    return int(health(client)["sandboxes"]["live"])


def session_pids(session_id: str) -> list[int]:
    """PIDs of the processes serving `session_id` (they carry ASH_SESSION_ID), via /proc."""
    needle = f"ASH_SESSION_ID={session_id}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
    return pids


def kill_sandbox(client: BenchClient, session_id: str) -> None:
    """Kill a session's sandbox (started by this bench's gateway or runner) and wait until
    the gateway sees it gone, so the next resume is a cold one."""
    before = live_sandboxes(client)
    pids = session_pids(session_id)
    if not pids:
        raise RuntimeError(f"no sandbox process found for session {session_id}")
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while live_sandboxes(client) >= before:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the gateway did not notice session {session_id}'s sandbox die")
        time.sleep(0.005)


def lifecycle_in(counted_round: int, settings: Settings) -> bool:
    """Whether counted round `counted_round` (from 0; warm-up rounds are negative) takes the
    lifecycle steps: every warm-up round, and `lifecycle_rounds` of the rest, spread evenly."""
    if counted_round < 0:
        return settings.lifecycle_rounds > 0
    share, rounds = settings.lifecycle_rounds, settings.rounds
    return counted_round * share // rounds != (counted_round + 1) * share // rounds


def run_round(target: Target, settings: Settings, first_token: FirstToken, lifecycle: bool,
              note: Callable[[str], None]) -> None:
    client = target.client
    started = time.perf_counter()
    status, answer = client.call("POST", "/api/sessions", {"agent": AGENT})
    target.add(CREATE, (time.perf_counter() - started) * 1000)
    session = _session(status, answer, "create")
    session_id = session["id"]
    for turn in range(settings.turns):
        note(f"turn {turn + 1}/{settings.turns}")
        first_token.before_turn()
        timing = client.turn(session_id, {"content": f"turn {turn} of the hop benchmark"})
        target.add(FIRST_EVENT, timing.first_event * 1000)
        target.add(TTFT, timing.first_agent_event * 1000)
        target.add(TOTAL, timing.done * 1000)
        target.first_agent_types[timing.first_agent_type] += 1
        target.client_points.extend(timing.points)
        if timing.first_output is not None:
            target.add(FIRST_OUTPUT, timing.first_output * 1000)
            model_first = first_token.after(timing)
            if model_first is not None:
                target.add(OVERHEAD, timing.first_output * 1000 - model_first)
    if lifecycle:
        note("warm resume")
        _session(*client.call("POST", f"/api/sessions/{session_id}/pause"), "pause")
        started = time.perf_counter()
        status, answer = client.call("POST", f"/api/sessions/{session_id}/resume")
        target.add(WARM_RESUME, (time.perf_counter() - started) * 1000)
        if _session(status, answer, "warm resume")["sandboxId"] != session["sandboxId"]:
            raise RuntimeError("the warm resume started a new sandbox: it was not warm")
        note("cold resume")
        _session(*client.call("POST", f"/api/sessions/{session_id}/pause"), "pause")
        kill_sandbox(client, session_id)
        started = time.perf_counter()
        status, answer = client.call("POST", f"/api/sessions/{session_id}/resume")
        target.add(COLD_RESUME, (time.perf_counter() - started) * 1000)
        if _session(status, answer, "cold resume")["sandboxId"] == session["sandboxId"]:
            raise RuntimeError("the cold resume kept the old sandbox: it was not cold")
    _session(*client.call("DELETE", f"/api/sessions/{session_id}"), "end")


def pool_state(client: BenchClient) -> dict[str, int] | None:
    """The gateway's warm pool as `/health` shows it (`size`, `ready`, `served`), if it does."""
    pool = health(client).get("warmPool")
    return pool if isinstance(pool, dict) else None


def pool_refilled(client: BenchClient, settings: Settings) -> dict[str, int] | None:
    """Wait (untimed) until the pool is full again, so no refill runs beside a timed create.
    Where `/health` does not show the pool (a coordinator), wait `--warm-pool-refill-ms`."""
    pool = pool_state(client)
    if pool is None:
        time.sleep(settings.warm_pool_refill_ms / 1000)
        return None
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while pool is not None and pool["ready"] < pool["size"]:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the warm pool did not refill: {pool}")
        time.sleep(0.01)
        pool = pool_state(client)
    return pool


def warm_create_round(target: Target, settings: Settings) -> None:
    """A create served from a full warm pool; one the pool did not serve is an error."""
    before = pool_refilled(target.client, settings)
    started = time.perf_counter()
    status, answer = target.client.call("POST", "/api/sessions", {"agent": AGENT})
    target.add(WARM_CREATE, (time.perf_counter() - started) * 1000)
    session_id = _session(status, answer, "warm create")["id"]
    if before is not None and (after := pool_state(target.client)) is not None and (
            after["served"] <= before["served"]):
        raise RuntimeError(f"the create was not served from the warm pool: {after}")
    _session(*target.client.call("DELETE", f"/api/sessions/{session_id}"), "end")


# --- the per-hop breakdown (ASH_DEBUG_TIMING) ------------------------------------------


def collect_breakdown(root: Path, target: Target) -> bt.Breakdown | None:
    """The per-hop breakdown of a configuration's counted turns, from its processes'
    ASH_DEBUG_TIMING points and the client's; call it once the processes have exited
    (their last points are written at exit). None when no turn has every point."""
    folder = root / target.deployment.name
    logs = [log for log in (folder / "gateway.log", folder / "runner.log") if log.exists()]
    try:
        return bt.breakdown_from_logs(logs, target.client_points)
    except NoSamples:
        return None


def breakdown_section(breakdowns: dict[str, bt.Breakdown | None]) -> str:
    available = {name: b for name, b in breakdowns.items() if b is not None}
    if not available:
        return ("### Per-hop breakdown\n\nnot available: no turn has every ASH_DEBUG_TIMING "
                "point (docs/timing.md).")
    return ("### Per-hop breakdown of the first token's path (docs/timing.md)\n\n"
            + bt.markdown(available))


# --- figures and report ----------------------------------------------------------------


def summaries(samples: dict[str, Samples]) -> dict[str, dict[str, Summary]]:
    """Every metric of every configuration; NoSamples if a seed metric has none."""
    result = {}
    for config, table in samples.items():
        for metric in SEED_METRICS:
            if not table.get(metric):
                raise NoSamples(f"{config}: no {metric} samples — the bench measured nothing")
        result[config] = {metric: summarize(values) for metric, values in table.items()
                          if values}
    return result


def overhead(configured: dict[str, Summary], base: dict[str, Summary]) -> dict[str, Summary]:
    """A configuration minus standalone, per metric both have."""
    return {metric: summary.minus(base[metric]) for metric, summary in configured.items()
            if metric in base}


def table_metrics(agent: str) -> tuple[str, ...]:
    """The seed's rows; with the real SDK also the first model output, which comes well
    after its first event (the SDK's `system` message)."""
    return SEED_METRICS if agent == "mock" else (*SEED_METRICS, FIRST_OUTPUT)


def seed_table(table: dict[str, Summary], metrics: tuple[str, ...] = SEED_METRICS) -> str:
    return markdown_table(["metric", "p50", "p95", "p99", "mean", "n"], [
        [metric, ms(s.p50), ms(s.p95), ms(s.p99), ms(s.mean), s.n]
        for metric in metrics if (s := table.get(metric)) is not None])


def overhead_table(delta: dict[str, Summary], metrics: tuple[str, ...] = SEED_METRICS) -> str:
    return markdown_table(["metric", "p50 delta", "p95 delta", "mean delta"], [
        [metric, ms(d.p50, True), ms(d.p95, True), ms(d.mean, True)]
        for metric in metrics if (d := delta.get(metric)) is not None])


def ash_overhead_table(results: dict[str, dict[str, Summary]], agent: str) -> str | None:
    rows = [[config, ms(s.p50), ms(s.p95), ms(s.p99), ms(s.mean), s.n]
            for config, table in results.items() if (s := table.get(OVERHEAD)) is not None]
    if not rows:
        return None
    what = ("TTFT minus the mock agent's fixed first-token delay" if agent == "mock" else
            "first model output minus the model stub's first token; the SDK's own work "
            "is included")
    return (f"### Ash overhead per message ({what}), ms\n\n"
            + markdown_table(["configuration", "p50", "p95", "p99", "mean", "n"], rows))


def lifecycle_table(results: dict[str, dict[str, Summary]], warm_pool_note: str | None) -> str:
    configs = list(results)
    headers = ["figure"] + [f"{c} {p}" for c in configs for p in ("p50", "p95")]
    rows = []
    for label, metric in (("create (cold)", CREATE), (WARM_CREATE, WARM_CREATE),
                          (WARM_RESUME, WARM_RESUME), (COLD_RESUME, COLD_RESUME)):
        cells: list[object] = [label]
        for config in configs:
            s = results[config].get(metric)
            cells += ["n/a", "n/a"] if s is None else [ms(s.p50), ms(s.p95)]
        rows.append(cells)
    text = "### Lifecycle, ms\n\n" + markdown_table(headers, rows)
    if warm_pool_note:
        text += f"\n\n{WARM_CREATE}: {warm_pool_note}"
    return text


def render(settings: Settings, machine: report.Machine, results: dict[str, dict[str, Summary]],
           breakdowns: dict[str, bt.Breakdown | None], warm_pool_note: str | None) -> str:
    configs = list(results)
    metrics = table_metrics(settings.agent)
    base_name = configs[0]
    agent = ("mock agent: first token after "
             f"{settings.first_token_ms:g} ms, {settings.tokens} tokens "
             f"{settings.token_interval_ms:g} ms apart" if settings.agent == "mock" else
             "claude agent: the real Claude Agent SDK against bench/model_stub.py "
             f"(first token after {settings.first_token_ms:g} ms)")
    parts = ["# Hop benchmark", "", *machine.lines(),
             f"- {settings.rounds} rounds after {settings.warmup} warm-up, alternating "
             f"{' / '.join(configs)}; {settings.turns} turns per round",
             f"- {agent}; client: one {settings.http} connection per configuration; "
             f"sandbox {settings.sandbox}",
             "- all values in milliseconds; TTFT = request sent → first agent-derived event",
             ""]
    for config in configs:
        parts += [f"### {config}", "", seed_table(results[config], metrics), ""]
    for config in configs[1:]:
        parts += [f"### Overhead ({config} minus {base_name})", "",
                  overhead_table(overhead(results[config], results[base_name]), metrics), ""]
    if (table := ash_overhead_table(results, settings.agent)) is not None:
        parts += [table, ""]
    if settings.lifecycle_rounds or any(WARM_CREATE in r for r in results.values()):
        parts += [lifecycle_table(results, warm_pool_note), ""]
    parts.append(breakdown_section(breakdowns))
    return "\n".join(parts)


@dataclass(slots=True)
class Measured:
    samples: dict[str, Samples]
    first_agent_types: dict[str, dict[str, int]]
    breakdowns: dict[str, bt.Breakdown | None]
    warm_pool_note: str | None
    """Why there are no warm-pool figures; None when they were measured."""


def payload(settings: Settings, machine: report.Machine, measured: Measured,
            results: dict[str, dict[str, Summary]], started: float,
            duration: float) -> dict[str, Any]:
    configs = list(results)
    return {
        "bench": "hop",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": round(duration, 3),
        "machine": machine.as_dict(),
        "settings": asdict(settings),
        "units": "ms",
        "summaries": {c: {m: s.as_dict() for m, s in table.items()}
                      for c, table in results.items()},
        "overhead": {c: {m: s.as_dict() for m, s in
                         overhead(results[c], results[configs[0]]).items()}
                     for c in configs[1:]},
        "warm_pool": measured.warm_pool_note or "measured",
        "breakdown": {name: b.as_dict() if b is not None else None
                      for name, b in measured.breakdowns.items()},
        "first_agent_event_types": measured.first_agent_types,
        "samples": measured.samples,
    }


# --- main --------------------------------------------------------------------------------


def make_agent(root: Path, settings: Settings) -> Path:
    folder = root / "agent"
    folder.mkdir()
    (folder / "CLAUDE.md").write_text("# Bench\nYou are the hop benchmark's agent.\n")
    if settings.agent == "mock":
        config: dict[str, Any] = {"backend": "mock", "mock": {
            "first_token_delay_ms": settings.first_token_ms,
            "token_interval_ms": settings.token_interval_ms, "tokens": settings.tokens}}
    else:
        config = {"backend": "claude", "env": CLAUDE_MODEL_ENV}
    (folder / "agent.json").write_text(json.dumps(config))
    return folder


def wait_for_runner(client: BenchClient, name: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        _, listed = client.call("GET", "/api/runners")
        if any(r["state"] == "healthy" and r["connected"] for r in listed["runners"]):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"no runner registered with {name}")
        time.sleep(0.05)


@contextlib.contextmanager
def deployed(configs: list[Config], root: Path, settings: Settings, agent_dir: Path,
             env: dict[str, str], warm_pool: int | None) -> Iterator[list[Target]]:
    """Each configuration started, the agent deployed, a runner registered; stopped after.

    `warm_pool` is the `--warm-pool` the sandboxes' process gets (0: none, so a create is
    cold), or None for a build without that flag.
    """
    targets: list[Target] = []
    suffix = "-pool" if warm_pool else ""
    pool_args = [] if warm_pool is None else ["--warm-pool", str(warm_pool)]
    try:
        for config in configs:
            standalone = config.turn_rpc is None
            deployment = start(
                config.key + suffix, root, config.turn_rpc, extra_env=env,
                gateway_args=["--sandbox", settings.sandbox, *pool_args] if standalone else [],
                runner_args=[] if standalone else ["--sandbox", settings.sandbox, *pool_args])
            targets.append(Target(config, deployment, connect(deployment.url, settings.http)))
            status, answer = targets[-1].client.call(
                "POST", "/api/agents", {"name": AGENT, "path": str(agent_dir)})
            if status != 201:
                raise RuntimeError(f"deploy failed on {config.name}: {answer}")
            if not standalone:
                wait_for_runner(targets[-1].client, config.name)
        yield targets
    finally:
        for target in targets:
            with contextlib.suppress(OSError):
                target.client.close()
        for target in targets:
            target.deployment.stop()


def measure(settings: Settings, configs: list[Config], root: Path, env: dict[str, str],
            first_token: FirstToken, progress: report.Progress) -> Measured:
    agent_dir = make_agent(root, settings)
    env = {**env, wt.ENV: "1"}
    progress.update("does this build have --warm-pool?")
    modules = {"gateway"} | ({"runner"} if any(c.turn_rpc for c in configs) else set())
    pool_flag = all(supports_flag(module, "--warm-pool") for module in modules)
    with deployed(configs, root, settings, agent_dir, env, 0 if pool_flag else None) as targets:
        for number in range(-settings.warmup, settings.rounds):
            label = (f"round {number + 1}/{settings.rounds}" if number >= 0
                     else f"warm-up {number + settings.warmup + 1}/{settings.warmup}")
            lifecycle = lifecycle_in(number, settings)
            for target in targets:
                scratch = Target(target.config, target.deployment, target.client)
                prefix = f"{label} {target.config.name}"
                progress.update(prefix)
                run_round(target if number >= 0 else scratch, settings, first_token, lifecycle,
                          lambda text, prefix=prefix: progress.update(f"{prefix}: {text}"))
        samples = {t.config.name: t.samples for t in targets}
        types = {t.config.name: dict(t.first_agent_types) for t in targets}
    breakdowns = {t.config.name: collect_breakdown(root, t) for t in targets}
    if settings.warm_pool <= 0:
        note: str | None = "off (--warm-pool 0)"
    elif not pool_flag:
        note = "n/a (no --warm-pool in this build)"
    else:
        note = None
        warm_pool_phase(settings, configs, root, env, agent_dir, samples, progress)
    return Measured(samples, types, breakdowns, note)


def warm_pool_phase(settings: Settings, configs: list[Config], root: Path, env: dict[str, str],
                    agent_dir: Path, samples: dict[str, Samples],
                    progress: report.Progress) -> None:
    """Warm-pool creates, alternating, on deployments started with `--warm-pool N`."""
    with deployed(configs, root, settings, agent_dir, env, settings.warm_pool) as targets:
        for number in range(-1, settings.warm_pool_rounds):  # round -1: the pools' first fill
            for target in targets:
                progress.update(f"warm pool {number + 1}/{settings.warm_pool_rounds} "
                                f"{target.config.name}")
                warm_create_round(target if number >= 0 else Target(
                    target.config, target.deployment, target.client), settings)
    for target in targets:
        samples[target.config.name][WARM_CREATE] = target.samples.get(WARM_CREATE, [])


@contextlib.contextmanager
def model_stub(settings: Settings) -> Iterator[tuple[dict[str, str], FirstToken]]:
    """For `--agent claude`: the model stub, and the env that points the runner at it."""
    if settings.agent == "mock":
        yield {}, FixedFirstToken(settings.first_token_ms)
        return
    from bench.model_stub import StubProcess

    with StubProcess(["--first-token-ms", str(settings.first_token_ms),
                      "--token-interval-ms", str(settings.token_interval_ms)]) as stub:
        yield ({"ANTHROPIC_BASE_URL": stub.url, "ANTHROPIC_API_KEY": MODEL_KEY},
               StubFirstToken(stub))


def parse_args(argv: list[str] | None) -> tuple[Settings, list[Config], Path]:
    parser = argparse.ArgumentParser(prog="python -m bench.hop", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agent", choices=("mock", "claude"), default="mock")
    parser.add_argument("--rounds", type=int, help="counted rounds (default 50; claude 5, "
                        "as a real SDK session takes seconds to create)")
    parser.add_argument("--warmup", type=int, help="uncounted rounds first (default 2; claude 1)")
    parser.add_argument("--turns", type=int, help="turns per round (default 5; claude 10)")
    parser.add_argument("--tokens", type=int, default=20, help="mock: text_delta events per reply")
    parser.add_argument("--first-token-ms", type=float, default=0.0,
                        help="the mock agent's (or the model stub's) first-token delay")
    parser.add_argument("--token-interval-ms", type=float, default=0.0)
    parser.add_argument("--http1", action="store_true",
                        help="HTTP/1.1 keep-alive instead of HTTP/2 (one connection either way)")
    parser.add_argument("--sandbox", choices=("bwrap", "none"), default="bwrap")
    parser.add_argument("--lifecycle-rounds", type=int, default=20,
                        help="rounds that also time warm and cold resume (0: none)")
    parser.add_argument("--warm-pool", type=int, default=2,
                        help="warm-pool size for the warm-create figure (0: skip it)")
    parser.add_argument("--warm-pool-rounds", type=int, default=20)
    parser.add_argument("--warm-pool-refill-ms", type=float, default=500.0,
                        help="pause before each warm create where /health does not show "
                        "the pool (a coordinator), for it to refill")
    parser.add_argument("--turn-rpc-send", action="store_true",
                        help="also measure gateway+runner with one RPC per turn")
    parser.add_argument("--results-dir", type=Path, default=report.RESULTS_DIR)
    args = parser.parse_args(argv)
    claude = args.agent == "claude"
    rounds = args.rounds if args.rounds is not None else (5 if claude else 50)
    warmup = args.warmup if args.warmup is not None else (1 if claude else 2)
    turns = args.turns if args.turns is not None else (10 if claude else 5)
    if rounds < 1 or turns < 1 or warmup < 0:
        parser.error("--rounds and --turns must be at least 1, --warmup at least 0")
    configs = [STANDALONE, VIA_RUNNER] + ([VIA_RUNNER_SEND] if args.turn_rpc_send else [])
    settings = Settings(
        agent=args.agent, rounds=rounds, warmup=warmup, turns=turns, tokens=args.tokens,
        first_token_ms=args.first_token_ms, token_interval_ms=args.token_interval_ms,
        http="HTTP/1.1" if args.http1 else "HTTP/2", sandbox=args.sandbox,
        lifecycle_rounds=min(max(args.lifecycle_rounds, 0), rounds), warm_pool=args.warm_pool,
        warm_pool_rounds=args.warm_pool_rounds, warm_pool_refill_ms=args.warm_pool_refill_ms,
        configurations=tuple(c.name for c in configs))
    return settings, configs, args.results_dir


def main(argv: list[str] | None = None) -> int:
    settings, configs, results_dir = parse_args(argv)
    started = time.time()
    stamp = report.timestamp()
    machine = report.machine()
    progress = report.Progress()
    root = Path(tempfile.mkdtemp(prefix="ash-hop-"))
    try:
        with model_stub(settings) as (env, first_token):
            measured = measure(settings, configs, root, env, first_token, progress)
    finally:
        progress.done()
        shutil.rmtree(root, ignore_errors=True)
    try:
        results = summaries(measured.samples)
    except NoSamples as exc:
        print(f"bench.hop: {exc}", file=sys.stderr)
        return 1
    print(render(settings, machine, results, measured.breakdowns, measured.warm_pool_note),
          flush=True)
    name = f"hop-{settings.agent}"
    data = payload(settings, machine, measured, results, started, time.time() - started)
    written = report.write_json(data, name, stamp, results_dir)
    chart = report.write_chart(
        {config: {m: v for m, v in table.items() if m in (*SEED_METRICS, *LIFECYCLE_METRICS,
                                                          WARM_CREATE)}
         for config, table in measured.samples.items()},
        f"hop cost, {settings.agent} agent, {settings.rounds} rounds", name, stamp, results_dir)
    print(f"\nJSON: {written.path}" + (f"\nchart: {chart.path}" if chart else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
