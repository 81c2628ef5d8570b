"""Load: `python -m bench.load` — many concurrent streaming sessions, and idle stream capacity.

    python -m bench.load [--config standalone|runner|both] [--ladder 1,10,50,100,200,1000]
                         [--turns 5] [--idle 10000] [--first-token-ms 100]
                         [--token-interval-ms 20] [--tokens 20] [--stagger-ms N]

Starts the deployments itself on loopback (`bench.hop.start`): `standalone` (one gateway
process running the sandboxes) and `runner` (a coordinator gateway plus one runner).
For each rung N of the ladder:

1. create N sessions (N bwrap'd bridges): sessions/s, create p50/p99, and what the
   sandboxes cost in memory — RSS and PSS summed over the sandbox processes (every
   descendant of the process that owns them), their cgroups' memory usage, and the
   host's used memory (MemTotal - MemAvailable) before and after;
2. every session streams `--turns` turns back to back, all sessions concurrently (the
   mock agent's first token comes after `--first-token-ms`, then `--tokens` deltas
   `--token-interval-ms` apart; first turns are spread over `--stagger-ms`, by default
   one turn's length, so turns run out of phase — 0 sends them all at once): TTFT
   (request sent → first `text_delta`) and its overhead over the configured delay,
   events/s, CPU seconds per 1,000 events of the gateway, the runner, the sandboxes,
   this client and (as "others") every other process on the host, and the gateway's
   and runner's peak RSS (VmHWM);
3. end every session and wait for its sandbox processes to be gone.

A rung that fails (out of memory, pids, fds, loop devices…) is reported with the error
and the rung, and the ladder goes on. Then idle capacity: `--idle` SSE streams
(`GET /api/sessions/{id}/stream`) held open across a few sessions and many HTTP/2
connections, the gateway's RSS per stream, and TTFT samples on another session while
they are held.

The client is asyncio (uvloop) with the `h2` library, up to the server's
SETTINGS_MAX_CONCURRENT_STREAMS streams per connection; it runs on the same machine, so
its CPU is reported too and a rung where it used most of a core is flagged.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import resource
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.events
import h2.settings
import uvloop

from bench import report
from bench.deploy import API_KEY, Deployment, start
from bench.stats import NoSamples, Summary, markdown_table, ms, summarize

AGENT = "bench-load"
CONFIGS = {"standalone": None, "runner": "session"}
DEFAULT_LADDER = (1, 10, 50, 100, 200, 1000)
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
CLIENT_BOUND_SHARE = 0.8
"""A rung where the client used more than this share of one core may be client-bound."""
HEADERS = [("authorization", f"Bearer {API_KEY}"), ("content-type", "application/json")]
STREAM_WINDOW = 1 << 20


# ---------------------------------------------------------------- /proc parsing (pure)


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The fields of /proc/<pid>/stat this bench uses."""

    pid: int
    ppid: int
    cpu_seconds: float
    """utime + stime of the process itself (not its children)."""
    rss_kib: int


def parse_stat(text: str) -> ProcStat:
    """Parse /proc/<pid>/stat; the command name may hold spaces and parentheses."""
    pid = int(text.split(" ", 1)[0])
    fields = text[text.rindex(")") + 2:].split()
    # fields[0] is field 3 (state): ppid is field 4, utime 14, stime 15, rss 24.
    return ProcStat(pid=pid, ppid=int(fields[1]),
                    cpu_seconds=(int(fields[11]) + int(fields[12])) / CLK_TCK,
                    rss_kib=int(fields[21]) * PAGE_KIB)


def status_kib(text: str, key: str) -> int:
    """A `kB` figure (VmHWM, VmRSS…) from /proc/<pid>/status or smaps_rollup (Pss)."""
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return int(value.split()[0])
    raise KeyError(f"no {key} in the status text")


def per_thousand(cpu_seconds: float, events: int) -> float:
    """CPU seconds per 1,000 events; NoSamples when no event was counted."""
    if events <= 0:
        raise NoSamples("no events: CPU per 1,000 events is undefined")
    return cpu_seconds * 1000 / events


def parse_ladder(text: str) -> list[int]:
    """`1,10,100` → [1, 10, 100]: positive, ascending order kept as given."""
    try:
        rungs = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--ladder wants integers, got {text!r}") from None
    if not rungs or any(n < 1 for n in rungs):
        raise argparse.ArgumentTypeError(f"--ladder wants positive integers, got {text!r}")
    return rungs


def meminfo_used_kib(text: str) -> int:
    """Host memory in use: MemTotal - MemAvailable, from /proc/meminfo."""
    return status_kib(text, "MemTotal") - status_kib(text, "MemAvailable")


# ---------------------------------------------------------------- /proc sampling


def read_stat(pid: int) -> ProcStat | None:
    try:
        return parse_stat(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, ValueError, IndexError):
        return None


def process_table() -> dict[int, ProcStat]:
    table: dict[int, ProcStat] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (stat := read_stat(int(entry.name))) is not None:
            table[stat.pid] = stat
    return table


def descendants(table: dict[int, ProcStat], root: int) -> list[ProcStat]:
    children: dict[int, list[int]] = {}
    for stat in table.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    found, todo = [], list(children.get(root, ()))
    while todo:
        pid = todo.pop()
        found.append(table[pid])
        todo.extend(children.get(pid, ()))
    return found


def vm_kib(pid: int, key: str) -> int:
    return status_kib(Path(f"/proc/{pid}/status").read_text(), key)


def pss_kib(pid: int) -> int:
    try:
        return status_kib(Path(f"/proc/{pid}/smaps_rollup").read_text(), "Pss")
    except (OSError, KeyError):
        return 0


def cgroup_memory_bytes(pids: Iterable[int]) -> int:
    """Summed memory usage of the (v1 or v2) memory cgroups these processes are in."""
    groups: set[Path] = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
                _, controllers, path = line.split(":", 2)
                if controllers == "memory":
                    groups.add(Path("/sys/fs/cgroup/memory") / path.lstrip("/")
                               / "memory.usage_in_bytes")
                elif controllers == "" and not groups:
                    groups.add(Path("/sys/fs/cgroup") / path.lstrip("/") / "memory.current")
    total = 0
    for usage in groups:
        with contextlib.suppress(OSError, ValueError):
            total += int(usage.read_text())
    return total


def host_used_kib() -> int:
    return meminfo_used_kib(Path("/proc/meminfo").read_text())


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    gateway: float
    runner: float | None
    sandboxes: float
    client: float
    host_busy: float = 0.0
    """Busy CPU seconds of the whole host, every core (/proc/stat)."""

    def minus(self, earlier: CpuSnapshot) -> CpuSnapshot:
        return CpuSnapshot(
            gateway=self.gateway - earlier.gateway,
            runner=None if self.runner is None or earlier.runner is None
            else self.runner - earlier.runner,
            sandboxes=self.sandboxes - earlier.sandboxes,
            client=self.client - earlier.client,
            host_busy=self.host_busy - earlier.host_busy)

    @property
    def others(self) -> float:
        """CPU seconds the host spent on processes outside this bench (other users' load)."""
        ours = self.gateway + (self.runner or 0.0) + self.sandboxes + self.client
        return max(0.0, self.host_busy - ours)


def host_busy_seconds(text: str) -> float:
    """Busy CPU seconds since boot, all cores, from /proc/stat's `cpu` line."""
    fields = [int(v) for v in text.split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / CLK_TCK


def client_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Target:
    """The processes of one running deployment."""

    deployment: Deployment
    gateway_pid: int
    runner_pid: int | None
    log_dir: Path

    def log_tails(self, lines: int = 12) -> dict[str, list[str]]:
        """The last lines of the gateway's and runner's logs, for a failed rung's report."""
        tails = {}
        for log in sorted(self.log_dir.glob("*.log")):
            with contextlib.suppress(OSError):
                tails[log.stem] = log.read_text(errors="replace").splitlines()[-lines:]
        return tails

    @property
    def owner_pid(self) -> int:
        """The process whose descendants are the sandboxes."""
        return self.runner_pid if self.runner_pid is not None else self.gateway_pid

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.deployment.processes)

    def cpu(self) -> CpuSnapshot:
        table = process_table()
        runner = table.get(self.runner_pid) if self.runner_pid is not None else None
        return CpuSnapshot(
            gateway=table[self.gateway_pid].cpu_seconds,
            runner=runner.cpu_seconds if runner is not None else None,
            sandboxes=sum(s.cpu_seconds for s in descendants(table, self.owner_pid)),
            client=client_cpu_seconds(),
            host_busy=host_busy_seconds(Path("/proc/stat").read_text()))

    def sandbox_processes(self) -> list[ProcStat]:
        return descendants(process_table(), self.owner_pid)


# ---------------------------------------------------------------- the HTTP/2 client


@dataclass
class _Stream:
    done: asyncio.Future[None]
    status: int | None = None
    body: bytearray = field(default_factory=bytearray)
    keep_body: bool = True
    on_data: Callable[[bytes], None] | None = None
    headers_seen: asyncio.Future[int] | None = None


class H2Connection(asyncio.Protocol):
    """One client HTTP/2 connection: many concurrent streams, bounded by the server's
    SETTINGS_MAX_CONCURRENT_STREAMS (a semaphore, sized once the settings arrive)."""

    def __init__(self, authority: str, max_streams: int) -> None:
        self.authority = authority
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None))
        self.streams: dict[int, _Stream] = {}
        self.transport: asyncio.Transport | None = None
        self.settled: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.slots = asyncio.Semaphore(max_streams)
        self._wanted = max_streams
        self.lost: BaseException | None = None
        self.going_away = False

    @property
    def usable(self) -> bool:
        return self.lost is None and not self.going_away

    @classmethod
    async def open(cls, url: str, max_streams: int) -> H2Connection:
        parts = urlsplit(url)
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(
            lambda: cls(parts.netloc, max_streams), parts.hostname, parts.port)
        server_max = await asyncio.wait_for(protocol.settled, 10)
        for _ in range(max(0, max_streams - server_max)):
            await protocol.slots.acquire()  # never exceed what the server allows
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn.initiate_connection()
        self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW})
        self.conn.increment_flow_control_window(1 << 24)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionError("the gateway closed the connection")
        if not self.settled.done():
            self.settled.set_exception(self.lost)
        for stream in self.streams.values():
            if not stream.done.done():
                stream.done.set_exception(self.lost)
            if stream.headers_seen is not None and not stream.headers_seen.done():
                stream.headers_seen.set_exception(self.lost)

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except Exception as exc:  # a protocol error ends every stream on this connection
            self.connection_lost(exc)
            return
        for event in events:
            self._apply(event)
        self._flush()

    def _apply(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RemoteSettingsChanged) and not self.settled.done():
            self.settled.set_result(self.conn.remote_settings.max_concurrent_streams)
            return
        if isinstance(event, h2.events.ConnectionTerminated):
            self.going_away = True  # streams already open may finish; no new ones
            return
        stream = self.streams.get(getattr(event, "stream_id", 0) or 0)
        if stream is None:
            return
        if isinstance(event, h2.events.ResponseReceived):
            stream.status = int(dict(event.headers)[b":status"])
            if stream.headers_seen is not None and not stream.headers_seen.done():
                stream.headers_seen.set_result(stream.status)
        elif isinstance(event, h2.events.DataReceived):
            if stream.on_data is not None:
                stream.on_data(event.data)
            if stream.keep_body:
                stream.body += event.data
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
            self.streams.pop(event.stream_id, None)
            if not stream.done.done():
                if isinstance(event, h2.events.StreamReset):
                    stream.done.set_exception(ConnectionError(
                        f"stream reset by the gateway (code {event.error_code})"))
                else:
                    stream.done.set_result(None)

    def start(self, method: str, path: str, body: bytes | None, stream: _Stream) -> int:
        if self.lost is not None:
            raise ConnectionError(f"connection lost: {self.lost}")
        stream_id = self.conn.get_next_available_stream_id()
        self.streams[stream_id] = stream
        headers = [(":method", method), (":path", path), (":scheme", "http"),
                   (":authority", self.authority), *HEADERS]
        self.conn.send_headers(stream_id, headers, end_stream=body is None)
        if body is not None:
            self.conn.send_data(stream_id, body, end_stream=True)
        self._flush()
        return stream_id

    def reset(self, stream_id: int) -> None:
        with contextlib.suppress(Exception):
            self.conn.reset_stream(stream_id)
            self._flush()
        self.streams.pop(stream_id, None)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close_connection()
            self._flush()
        if self.transport is not None:
            self.transport.close()


class Pool:
    """Connections opened as needed, `per_connection` streams each, used round robin."""

    def __init__(self, url: str, per_connection: int) -> None:
        self.url = url
        self.per_connection = per_connection
        self.connections: list[H2Connection] = []
        self._next = 0

    async def grow(self, streams: int) -> None:
        """Enough connections that `streams` concurrent streams need not wait."""
        wanted = max(1, math.ceil(streams / self.per_connection))
        self.connections = [c for c in self.connections if c.usable or c.streams]
        while sum(c.usable for c in self.connections) < wanted:
            self.connections.append(await H2Connection.open(self.url, self.per_connection))

    def pick(self) -> H2Connection:
        for _ in range(len(self.connections)):
            self._next = (self._next + 1) % len(self.connections)
            if self.connections[self._next].usable:
                return self.connections[self._next]
        raise ConnectionError("no usable connection to the gateway")

    async def call(self, method: str, path: str, payload: object = None,
                   wait_s: float = 120) -> tuple[int, Any]:
        connection = self.pick()
        async with connection.slots:
            stream = _Stream(asyncio.get_running_loop().create_future())
            connection.start(method, path, None if payload is None
                             else json.dumps(payload).encode(), stream)
            await asyncio.wait_for(stream.done, wait_s)
        body = bytes(stream.body)
        return stream.status or 0, json.loads(body) if body else None

    def close(self) -> None:
        for connection in self.connections:
            connection.close()
        self.connections.clear()


@dataclass(frozen=True, slots=True)
class TurnSample:
    ttft: float
    """Seconds from sending the request to the first `text_delta`."""
    events: int
    number: int = 0
    """The turn's number in its session, from 0."""


async def turn(pool: Pool, session_id: str, content: str, number: int = 0,
               wait_s: float = 300) -> TurnSample:
    """One streamed turn; raises unless it ends with `done` ok."""
    loop = asyncio.get_running_loop()
    stream = _Stream(loop.create_future())
    first: list[float] = []

    def on_data(data: bytes) -> None:
        if not first and b"event: text_delta" in stream.body[-64:] + data:
            first.append(time.perf_counter())

    stream.on_data = on_data
    connection = pool.pick()
    async with connection.slots:
        sent = time.perf_counter()
        connection.start("POST", f"/api/sessions/{session_id}/messages",
                         json.dumps({"content": content}).encode(), stream)
        await asyncio.wait_for(stream.done, wait_s)
    body = bytes(stream.body)
    if stream.status != 200 or not body.rstrip().endswith(b'"status":"ok"}'):
        raise RuntimeError(f"turn failed ({stream.status}): {body[-300:]!r}")
    if not first:
        raise RuntimeError("the turn had no text_delta")
    return TurnSample(ttft=first[0] - sent, events=body.count(b"\nevent: "), number=number)


async def bounded(jobs: Sequence[Callable[[], Awaitable[Any]]], limit: int,
                  on_done: Callable[[int], None] | None = None) -> list[Any]:
    """Run the jobs at most `limit` at a time; results (or exceptions) in order."""
    gate = asyncio.Semaphore(limit)
    finished = 0

    async def one(job: Callable[[], Awaitable[Any]]) -> Any:
        nonlocal finished
        async with gate:
            try:
                return await job()
            finally:
                finished += 1
                if on_done is not None:
                    on_done(finished)

    return await asyncio.gather(*(one(job) for job in jobs), return_exceptions=True)


# ---------------------------------------------------------------- records


@dataclass
class SandboxMemory:
    processes: int
    rss_kib: int
    pss_kib: int
    cgroup_kib: int
    host_used_delta_kib: int

    def per_sandbox_mib(self, sandboxes: int) -> dict[str, float]:
        return {name: value / 1024 / sandboxes for name, value in
                (("rss", self.rss_kib), ("pss", self.pss_kib), ("cgroup", self.cgroup_kib),
                 ("host", self.host_used_delta_kib))}


@dataclass
class StepResult:
    config: str
    sessions: int
    error: str | None = None
    failed_phase: str | None = None
    created: int = 0
    create_seconds: float = 0.0
    create_ms: Summary | None = None
    create_cpu: CpuSnapshot | None = None
    """CPU seconds spent while the sessions were created (sandboxes: those that live)."""
    memory: SandboxMemory | None = None
    ttft_ms: Summary | None = None
    overhead_ms: Summary | None = None
    ttft_samples_ms: list[float] = field(default_factory=list)
    turn_numbers: list[int] = field(default_factory=list)
    """Each TTFT sample's turn number in its session (0: the sandbox's first turn)."""
    events: int = 0
    stream_seconds: float = 0.0
    cpu: CpuSnapshot | None = None
    per_1000_events: dict[str, float] = field(default_factory=dict)
    client_core_share: float = 0.0
    other_cores: float = 0.0
    """Cores busy with processes outside this bench while the turns streamed."""
    peak_rss_kib: dict[str, int] = field(default_factory=dict)
    gateway_fds: int = 0
    end_seconds: float = 0.0
    logs: dict[str, list[str]] = field(default_factory=dict)
    """The deployment's log tails, when the rung failed."""

    @property
    def sessions_per_second(self) -> float:
        return self.created / self.create_seconds if self.create_seconds else 0.0

    @property
    def events_per_second(self) -> float:
        return self.events / self.stream_seconds if self.stream_seconds else 0.0

    @property
    def client_bound(self) -> bool:
        return self.client_core_share > CLIENT_BOUND_SHARE


def aggregate_streaming(step: StepResult, samples: Sequence[TurnSample], delay_ms: float,
                        cpu: CpuSnapshot, seconds: float) -> None:
    """Fill the streaming figures of `step`; NoSamples when no turn was measured."""
    ttft = [s.ttft * 1000 for s in samples]
    step.ttft_ms = summarize(ttft)
    step.overhead_ms = summarize(t - delay_ms for t in ttft)
    step.ttft_samples_ms = [round(t, 3) for t in ttft]
    step.turn_numbers = [s.number for s in samples]
    step.events = sum(s.events for s in samples)
    step.stream_seconds = seconds
    step.cpu = cpu
    figures = {"gateway": cpu.gateway, "sandboxes": cpu.sandboxes, "client": cpu.client}
    if cpu.runner is not None:
        figures["runner"] = cpu.runner
    step.per_1000_events = {name: per_thousand(value, step.events)
                            for name, value in figures.items()}
    step.client_core_share = cpu.client / seconds if seconds > 0 else 0.0
    step.other_cores = cpu.others / seconds if seconds > 0 else 0.0


@dataclass
class IdleResult:
    config: str
    requested: int
    opened: int = 0
    sessions: int = 0
    connections: int = 0
    open_seconds: float = 0.0
    rss_before_kib: int = 0
    rss_after_kib: int = 0
    gateway_fds: int = 0
    ttft_ms: Summary | None = None
    ttft_baseline_ms: Summary | None = None
    error: str | None = None

    @property
    def kib_per_stream(self) -> float:
        if self.opened <= 0:
            raise NoSamples("no idle stream was opened")
        return (self.rss_after_kib - self.rss_before_kib) / self.opened


# ---------------------------------------------------------------- the measurements


@dataclass(frozen=True, slots=True)
class Settings:
    turns: int
    first_token_ms: float
    token_interval_ms: float
    tokens: int
    create_concurrency: int
    streams_per_connection: int
    heartbeat_interval: float = 10.0
    stagger_ms: float = 0.0
    """First turns are spread over this long; 0 sends them all at once (a burst)."""
    """The runner's; bench.hop's 1 s makes a runner starved for 3 s count as lost."""


class StepFailed(Exception):
    def __init__(self, phase: str, error: BaseException | str) -> None:
        super().__init__(f"{phase}: {error}")
        self.phase = phase


def _first_error(results: Sequence[Any]) -> BaseException | None:
    return next((r for r in results if isinstance(r, BaseException)), None)


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


async def create_sessions(pool: Pool, target: Target, n: int, settings: Settings,
                          step: StepResult, ids: list[str]) -> None:
    await pool.grow(settings.create_concurrency)
    durations: list[float] = []

    async def create() -> None:
        started = time.perf_counter()
        status, answer = await pool.call("POST", "/api/sessions", {"agent": AGENT})
        if status != 201:
            raise RuntimeError(f"create session: {status} {str(answer)[:300]}")
        durations.append(time.perf_counter() - started)
        ids.append(answer["session"]["id"])

    before = target.cpu()
    started = time.perf_counter()
    results = await bounded([create] * n, settings.create_concurrency,
                            lambda k: PROGRESS.update(f"{step.config} N={n}: created {k}/{n}"))
    step.create_seconds = time.perf_counter() - started
    step.create_cpu = target.cpu().minus(before)
    step.created = len(ids)
    if durations:
        step.create_ms = summarize(durations, scale=1000)
    if (error := _first_error(results)) is not None:
        failures = sum(isinstance(r, BaseException) for r in results)
        raise StepFailed("create", f"{failures} of {n} creates failed; first: "
                                   f"{_error_text(error)}")


def measure_memory(target: Target, host_before_kib: int) -> SandboxMemory:
    processes = target.sandbox_processes()
    pids = [p.pid for p in processes]
    return SandboxMemory(
        processes=len(processes), rss_kib=sum(p.rss_kib for p in processes),
        pss_kib=sum(pss_kib(pid) for pid in pids),
        cgroup_kib=cgroup_memory_bytes(pids) // 1024,
        host_used_delta_kib=host_used_kib() - host_before_kib)


def start_offsets(sessions: int, spread: float) -> list[float]:
    """When each session sends its first turn: evenly over `spread` seconds (0: all at once),
    so that with a spread of one turn's length the turns run out of phase."""
    return [spread * k / sessions for k in range(sessions)]


async def stream_turns(pool: Pool, target: Target, ids: Sequence[str], settings: Settings,
                       step: StepResult) -> None:
    await pool.grow(len(ids))
    samples: list[TurnSample] = []
    total = len(ids) * settings.turns

    async def session_turns(session_id: str, offset: float) -> None:
        await asyncio.sleep(offset)
        for number in range(settings.turns):
            samples.append(await turn(pool, session_id, f"load turn {number}", number))
            if len(samples) % max(1, total // 50) == 0:
                PROGRESS.update(f"{step.config} N={len(ids)}: turns {len(samples)}/{total}")

    before = target.cpu()
    started = time.perf_counter()
    offsets = start_offsets(len(ids), settings.stagger_ms / 1000)
    results = await asyncio.gather(*(session_turns(s, o)
                                     for s, o in zip(ids, offsets, strict=True)),
                                   return_exceptions=True)
    seconds = time.perf_counter() - started
    cpu = target.cpu().minus(before)
    if (error := _first_error(results)) is not None:
        failures = sum(isinstance(r, BaseException) for r in results)
        raise StepFailed("stream", f"{failures} of {len(ids)} sessions failed a turn "
                                   f"({len(samples)} turns done); first: {_error_text(error)}")
    aggregate_streaming(step, samples, settings.first_token_ms, cpu, seconds)


async def end_sessions(pool: Pool, target: Target, ids: list[str], settings: Settings,
                       step: StepResult, wait_s: float = 120) -> None:
    """End every session and wait until the owner has no sandbox process left."""
    started = time.perf_counter()

    async def end(session_id: str) -> None:
        await pool.call("DELETE", f"/api/sessions/{session_id}")

    if ids:
        await pool.grow(settings.create_concurrency)
        results = await bounded([lambda s=s: end(s) for s in ids], settings.create_concurrency,
                                lambda k: PROGRESS.update(f"{step.config}: ended {k}/{len(ids)}"))
        ids.clear()
        if (error := _first_error(results)) is not None:
            raise StepFailed("end", _error_text(error))
    deadline = time.monotonic() + wait_s
    while (left := len(target.sandbox_processes())) and time.monotonic() < deadline:
        PROGRESS.update(f"{step.config}: {left} sandbox processes still exiting")
        await asyncio.sleep(0.5)
    step.end_seconds = time.perf_counter() - started
    if left:
        raise StepFailed("end", f"{left} sandbox processes left after {wait_s:g} s")


async def run_step(pool: Pool, target: Target, n: int, settings: Settings,
                   config: str) -> StepResult:
    step = StepResult(config=config, sessions=n)
    ids: list[str] = []
    try:
        host_before = host_used_kib()
        await create_sessions(pool, target, n, settings, step, ids)
        step.memory = measure_memory(target, host_before)
        await stream_turns(pool, target, ids, settings, step)
        step.gateway_fds = open_fds(target.gateway_pid)
        step.peak_rss_kib = peak_rss(target)
    except (StepFailed, NoSamples, OSError, RuntimeError, TimeoutError,
            ConnectionError) as exc:
        step.failed_phase = exc.phase if isinstance(exc, StepFailed) else "stream"
        step.error = str(exc) if isinstance(exc, StepFailed) else _error_text(exc)
        if step.memory is None and ids:
            with contextlib.suppress(OSError):
                step.memory = measure_memory(target, host_before)
    finally:
        if target.alive():
            try:
                await end_sessions(pool, target, ids, settings, step)
            except (StepFailed, OSError, RuntimeError, TimeoutError, ConnectionError) as exc:
                step.error = (step.error + "; " if step.error else "") + f"cleanup: {exc}"
        elif step.error is None:
            step.error, step.failed_phase = "the deployment exited", "stream"
        if step.error:
            step.logs = target.log_tails()
    return step


def peak_rss(target: Target) -> dict[str, int]:
    peaks = {"gateway": vm_kib(target.gateway_pid, "VmHWM")}
    if target.runner_pid is not None:
        peaks["runner"] = vm_kib(target.runner_pid, "VmHWM")
    return peaks


async def measure_idle(url: str, target: Target, streams: int, sessions: int,
                       settings: Settings, samples: int = 20) -> IdleResult:
    """Hold `streams` idle SSE streams; the gateway's RSS per stream and TTFT meanwhile."""
    result = IdleResult(config=target.deployment.name, requested=streams)
    control = Pool(url, settings.streams_per_connection)
    held = Pool(url, settings.streams_per_connection)
    ids: list[str] = []
    opened: list[tuple[H2Connection, int]] = []
    step = StepResult(config=result.config, sessions=sessions)
    try:
        await create_sessions(control, target, sessions + 1, settings, step, ids)
        probe, *readers = ids
        result.sessions = len(readers)
        await turn(control, probe, "warm-up")
        result.ttft_baseline_ms = summarize(
            [(await turn(control, probe, f"baseline {k}")).ttft for k in range(samples)], 1000)
        result.rss_before_kib = vm_kib(target.gateway_pid, "VmRSS")
        started = time.perf_counter()
        await held.grow(streams)
        result.connections = len(held.connections)
        loop = asyncio.get_running_loop()
        for k in range(streams):
            connection = held.connections[k // settings.streams_per_connection]
            stream = _Stream(loop.create_future(), keep_body=False,
                             headers_seen=loop.create_future())
            stream_id = connection.start("GET", f"/api/sessions/{readers[k % len(readers)]}"
                                                "/stream", None, stream)
            opened.append((connection, stream_id))
            assert stream.headers_seen is not None
            await asyncio.wait_for(stream.headers_seen, 30)
            if stream.status != 200:
                raise RuntimeError(f"GET stream: {stream.status}")
            result.opened = k + 1
            if result.opened % 500 == 0:
                PROGRESS.update(f"{result.config}: {result.opened}/{streams} idle streams open")
        result.open_seconds = time.perf_counter() - started
        await asyncio.sleep(2)
        result.rss_after_kib = vm_kib(target.gateway_pid, "VmRSS")
        result.gateway_fds = open_fds(target.gateway_pid)
        result.ttft_ms = summarize(
            [(await turn(control, probe, f"during {k}")).ttft for k in range(samples)], 1000)
    except (StepFailed, OSError, RuntimeError, TimeoutError, ConnectionError) as exc:
        result.error = _error_text(exc)
        if result.opened and not result.rss_after_kib and target.alive():
            result.rss_after_kib = vm_kib(target.gateway_pid, "VmRSS")
    finally:
        for connection, stream_id in opened:
            connection.reset(stream_id)
        held.close()
        if target.alive():
            with contextlib.suppress(StepFailed, OSError, RuntimeError, TimeoutError,
                                     ConnectionError):
                await end_sessions(control, target, ids, settings, step)
        control.close()
    return result


# ---------------------------------------------------------------- deployments


def raise_fd_limit() -> dict[str, int]:
    """Soft RLIMIT_NOFILE up to the hard limit, for this process and what it starts."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        new = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    return {"soft": soft, "hard": hard}


def make_agent(root: Path, settings: Settings) -> Path:
    agent_dir = root / "agent"
    agent_dir.mkdir()
    (agent_dir / "CLAUDE.md").write_text("# Load\nA load-test agent.\n")
    (agent_dir / "agent.json").write_text(json.dumps({"backend": "mock", "mock": {
        "first_token_delay_ms": settings.first_token_ms,
        "token_interval_ms": settings.token_interval_ms, "tokens": settings.tokens}}))
    return agent_dir


async def open_target(config: str, root: Path, agent_dir: Path, max_sandboxes: int,
                      settings: Settings) -> tuple[Target, Pool]:
    turn_rpc = CONFIGS[config]
    # No warm pool: every sandbox the bench counts is a session's, and creates/s is the
    # cold rate (a pool of a few does not change a ladder of hundreds).
    no_pool = ["--warm-pool", "0"]
    deployment = await asyncio.to_thread(
        start, config, root, turn_rpc,
        gateway_args=[*no_pool, "--max-sandboxes", str(max_sandboxes)]
        if turn_rpc is None else [],
        runner_args=["--max-sandboxes", str(max_sandboxes),
                     "--heartbeat-interval", f"{settings.heartbeat_interval:g}", *no_pool])
    processes = deployment.processes
    target = Target(deployment, processes[0].pid, processes[1].pid if turn_rpc else None,
                    root / config)
    pool = Pool(deployment.url, settings.streams_per_connection)
    try:
        await pool.grow(1)
        status, answer = await pool.call("POST", "/api/agents",
                                         {"name": AGENT, "path": str(agent_dir)})
        if status != 201:
            raise RuntimeError(f"deploy failed: {answer}")
        deadline = time.monotonic() + 30
        while turn_rpc is not None:
            _, listed = await pool.call("GET", "/api/runners")
            if any(r["state"] == "healthy" and r["connected"] for r in listed["runners"]):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the runner did not register")
            await asyncio.sleep(0.1)
    except BaseException:
        pool.close()
        deployment.stop()
        raise
    return target, pool


# ---------------------------------------------------------------- report

PROGRESS = report.Progress()


def step_json(step: StepResult) -> dict[str, Any]:
    data = asdict(step)
    data.update(sessions_per_second=step.sessions_per_second,
                events_per_second=step.events_per_second, client_bound=step.client_bound)
    if step.memory is not None and step.created:
        data["memory_per_sandbox_mib"] = step.memory.per_sandbox_mib(step.created)
    return data


def _cell(summary: Summary | None, pick: str) -> str:
    return "—" if summary is None else ms(getattr(summary, pick))


def ladder_tables(steps: Sequence[StepResult]) -> str:
    speed = [(s.config, s.sessions, f"{s.sessions_per_second:.1f}" if s.created else "—",
              _cell(s.create_ms, "p50"), _cell(s.create_ms, "p99"),
              _cell(s.ttft_ms, "p50"), _cell(s.overhead_ms, "p50"),
              _cell(s.overhead_ms, "p99"), _cell(s.overhead_ms, "max"),
              f"{s.events_per_second:,.0f}" if s.events else "—",
              f"{s.end_seconds:.1f}") for s in steps]
    cpu = []
    for s in steps:
        per = s.per_1000_events
        cpu.append((s.config, s.sessions,
                    *(f"{per[k]:.3f}" if k in per else "—"
                      for k in ("gateway", "runner", "sandboxes", "client")),
                    f"{s.client_core_share:.0%}" + (" (client-bound?)" if s.client_bound else "")
                    if s.cpu else "—",
                    f"{s.other_cores:.2f}" if s.cpu else "—",
                    *(f"{s.peak_rss_kib[k] / 1024:.0f}" if k in s.peak_rss_kib else "—"
                      for k in ("gateway", "runner")),
                    s.gateway_fds or "—"))
    memory = []
    for s in steps:
        if s.memory is None or not s.created:
            continue
        per = s.memory.per_sandbox_mib(s.created)
        made = s.create_cpu
        memory.append((s.config, s.created, s.memory.processes,
                       *((f"{(made.gateway + (made.runner or 0.0)) / s.created:.3f}",
                          f"{made.sandboxes / s.created:.3f}",
                          f"{made.host_busy / s.created:.3f}") if made else ("—",) * 3),
                       f"{per['rss']:.1f}", f"{per['pss']:.1f}", f"{per['cgroup']:.1f}",
                       f"{per['host']:.1f}", f"{s.memory.host_used_delta_kib / 2**20:.2f}"))
    failures = [(s.config, s.sessions, s.failed_phase or "cleanup", s.error or "")
                for s in steps if s.error]
    parts = [
        "## Ladder: create, stream, end (ms unless noted)\n",
        markdown_table(("config", "N", "created/s", "create p50", "create p99", "TTFT p50",
                        "overhead p50", "overhead p99", "overhead max", "events/s",
                        "end all, s"), speed),
        "\n## CPU seconds per 1,000 events; peak RSS (VmHWM, MiB)\n",
        markdown_table(("config", "N", "gateway", "runner", "sandboxes", "client",
                        "client core use", "others, cores", "gateway peak", "runner peak",
                        "gateway fds"), cpu),
        "\n## Per sandbox: CPU seconds to create it, memory (MiB)\n",
        markdown_table(("config", "sandboxes", "processes", "create CPU s: gateway+runner",
                        "sandbox", "host", "RSS", "PSS", "cgroup",
                        "host used", "host used total, GiB"), memory) if memory
        else "(no rung created a sandbox)",
    ]
    if failures:
        parts += ["\n## Failed rungs\n",
                  markdown_table(("config", "N", "phase", "error"), failures)]
    return "\n".join(parts)


def idle_table(results: Sequence[IdleResult]) -> str:
    rows = []
    for r in results:
        per = f"{r.kib_per_stream:.1f}" if r.opened else "—"
        rows.append((r.config, f"{r.opened}/{r.requested}", r.sessions, r.connections,
                     f"{r.open_seconds:.1f}", f"{r.rss_before_kib / 1024:.0f}",
                     f"{r.rss_after_kib / 1024:.0f}", per, r.gateway_fds or "—",
                     _cell(r.ttft_baseline_ms, "p50"), _cell(r.ttft_ms, "p50"),
                     _cell(r.ttft_ms, "p99"), r.error or ""))
    return "\n".join([
        "## Idle SSE streams held by one gateway\n",
        markdown_table(("config", "open", "sessions", "connections", "open, s",
                        "gateway RSS before, MiB", "after, MiB", "KiB per stream",
                        "gateway fds", "TTFT p50 before", "TTFT p50 during",
                        "TTFT p99 during", "error"), rows)])


# ---------------------------------------------------------------- main


async def run(args: argparse.Namespace, settings: Settings, root: Path) -> dict[str, Any]:
    agent_dir = make_agent(root, settings)
    configs = list(CONFIGS) if args.config == "both" else [args.config]
    steps: list[StepResult] = []
    idle: list[IdleResult] = []
    errors: list[str] = []
    for config in configs:
        PROGRESS.update(f"{config}: starting")
        try:
            target, pool = await open_target(config, root, agent_dir,
                                             max(args.ladder) + args.idle_sessions + 8, settings)
        except (OSError, RuntimeError, TimeoutError) as exc:
            errors.append(f"{config}: could not start: {_error_text(exc)}")
            continue
        try:
            for n in args.ladder:
                if not target.alive():
                    steps.append(StepResult(config, n, error="the deployment had exited",
                                            failed_phase="start"))
                    continue
                steps.append(await run_step(pool, target, n, settings, config))
            if args.idle and target.alive():
                idle.append(await measure_idle(target.deployment.url, target, args.idle,
                                               args.idle_sessions, settings))
        finally:
            pool.close()
            await asyncio.to_thread(target.deployment.stop)
    PROGRESS.done()
    return {"steps": steps, "idle": idle, "errors": errors}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=["standalone", "runner", "both"], default="both")
    parser.add_argument("--ladder", type=parse_ladder, default=list(DEFAULT_LADDER),
                        help="concurrent sessions per rung, comma-separated")
    parser.add_argument("--turns", type=int, default=5, help="turns per session per rung")
    parser.add_argument("--first-token-ms", type=float, default=100.0,
                        help="the mock agent's first-token delay (subtracted from TTFT)")
    parser.add_argument("--token-interval-ms", type=float, default=20.0)
    parser.add_argument("--tokens", type=int, default=20, help="text_delta events per reply")
    parser.add_argument("--idle", type=int, default=10_000,
                        help="idle SSE streams to hold (0 to skip)")
    parser.add_argument("--idle-sessions", type=int, default=10,
                        help="sessions the idle streams are spread over")
    parser.add_argument("--create-concurrency", type=int, default=16)
    parser.add_argument("--streams-per-connection", type=int, default=100,
                        help="capped by the gateway's SETTINGS_MAX_CONCURRENT_STREAMS")
    parser.add_argument("--stagger-ms", type=float, default=None,
                        help="spread the sessions' first turns over this long so turns run "
                        "out of phase (default: one turn's nominal length; 0: all at once)")
    parser.add_argument("--heartbeat-interval", type=float, default=10.0,
                        help="the runner's heartbeat interval, s (its default: 10; the "
                        "gateway counts it lost after three missed)")
    parser.add_argument("--json-dir", type=Path, default=report.RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.turns < 1 or args.idle < 0 or args.idle_sessions < 1:
        parser.error("--turns and --idle-sessions must be at least 1, --idle at least 0")
    settings = Settings(turns=args.turns, first_token_ms=args.first_token_ms,
                        token_interval_ms=args.token_interval_ms, tokens=args.tokens,
                        create_concurrency=args.create_concurrency,
                        streams_per_connection=args.streams_per_connection,
                        heartbeat_interval=args.heartbeat_interval,
                        stagger_ms=args.first_token_ms + args.tokens * args.token_interval_ms
                        if args.stagger_ms is None else args.stagger_ms)
    fd_limit = raise_fd_limit()
    machine = report.machine()
    root = Path(tempfile.mkdtemp(prefix="ash-load-"))
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            outcome = runner.run(run(args, settings, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    payload = {"bench": "load", "machine": machine.as_dict(), "settings": asdict(settings),
               "ladder": args.ladder, "config": args.config, "fd_limit": fd_limit,
               "steps": [step_json(s) for s in outcome["steps"]],
               "idle": [asdict(r) | ({"kib_per_stream": r.kib_per_stream} if r.opened else {})
                        for r in outcome["idle"]],
               "errors": outcome["errors"]}
    path = report.write_json(payload, "load", report.timestamp(), args.json_dir).path
    print("# Load\n")
    print("\n".join(machine.lines()))
    print(f"- mock agent: first token {settings.first_token_ms:g} ms, {settings.tokens} tokens "
          f"{settings.token_interval_ms:g} ms apart; {settings.turns} turns per session, "
          f"first turns spread over {settings.stagger_ms:g} ms; "
          f"creates {settings.create_concurrency} at a time; ≤{settings.streams_per_connection} "
          f"streams per HTTP/2 connection; RLIMIT_NOFILE {fd_limit['soft']}")
    print("- TTFT = request sent → first text_delta; overhead = TTFT - first-token delay\n")
    if outcome["steps"]:
        print(ladder_tables(outcome["steps"]))
    if outcome["idle"]:
        print("\n" + idle_table(outcome["idle"]))
    for error in outcome["errors"]:
        print(f"\n**{error}**")
    print(f"\nJSON: {path}")
    return 1 if outcome["errors"] or not outcome["steps"] else 0


if __name__ == "__main__":
    sys.exit(main())
