"""Issue 11, findings 2, 3 and 5 (runner side): everything from the bridge socket is hostile.

First the agent as the attacker, in a real sandbox through a real gateway: its commands
can no longer reach the bridge socket (no inherited descriptor, no variable naming it,
nothing through /proc or pidfd_getfd), so a frame it forges never arrives.

Then a hostile bridge (tests/hostile_bridge.py: the real bridge with an attacking agent)
in a real bubblewrap sandbox of a real gateway (tests/hostile_gateway.py swaps only the
sandbox's bootstrap). Each attack ends, over a real HTTP/2 stream, in an `error` event
with code `bridge_protocol_violation` naming the rule, then `done` with status error; the
session is paused and resumes. The same hostile bridge on a runner (split mode) is
stopped there, before its frames reach gRPC. Each prints the gateway's RSS and ash.db (+WAL) size
before and after and asserts a bound.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import send_message
from tests.gateway_process import GatewayProcess
from tests.sandbox_helpers import (
    module_gateway,
    new_session,
    python,
    run,
    running_gateway,
    session_status,
)
from tests.split_cluster import Cluster, RunnerProcess
from tests.sse_client import SseEvent

HOSTILE_LIMITS = {
    "ASH_BRIDGE_FRAME_DEADLINE": "2",
    "ASH_BRIDGE_EXEC_GRACE": "1",
    "ASH_BRIDGE_EVENT_BURST": "20000",
    "ASH_BRIDGE_EVENTS_PER_SECOND": "5000",
}
"""Tighter than the defaults where a default would only make a test slow (30 s frame
deadline, 120,000-frame burst); every other limit is the default."""
RSS_GROWTH_BOUND = 64 * 2**20
DB_GROWTH_BOUND = 16 * 2**20

gateway, client = module_gateway("honest")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with running_gateway(tmp_path_factory.mktemp("hostile") / "data",
                         module="tests.hostile_gateway", extra_env=HOSTILE_LIMITS) as process:
        yield process


@pytest.fixture(scope="module")
def hostile_client(hostile: GatewayProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=hostile.url, http2=True, http1=False, headers=hostile.headers,
                      timeout=120) as c:
        yield c


def rss(process: subprocess.Popen[str] | None) -> int:
    assert process is not None
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def db_size(gateway: GatewayProcess) -> int:
    return sum(path.stat().st_size for path in gateway.data_dir.glob("ash.db*"))


class Footprint:
    """The gateway's (and a runner's) RSS and the database size around an attack, printed
    and bounded."""

    def __init__(self, gateway: GatewayProcess, attack: str,
                 runner: RunnerProcess | None = None) -> None:
        self.gateway, self.attack, self.runner = gateway, attack, runner
        self.rss, self.db = rss(gateway.process), db_size(gateway)
        self.runner_rss = rss(runner.process) if runner is not None else 0

    def check(self) -> None:
        rss_after, db_after = rss(self.gateway.process), db_size(self.gateway)
        print(f"\n{self.attack}: gateway RSS {self.rss / 2**20:.1f} -> {rss_after / 2**20:.1f}"
              f" MiB; ash.db+WAL {self.db / 2**20:.2f} -> {db_after / 2**20:.2f} MiB")
        assert rss_after - self.rss < RSS_GROWTH_BOUND
        assert db_after - self.db < DB_GROWTH_BOUND
        if self.runner is not None:
            runner_after = rss(self.runner.process)
            print(f"{self.attack}: runner RSS {self.runner_rss / 2**20:.1f} -> "
                  f"{runner_after / 2**20:.1f} MiB")
            assert runner_after - self.runner_rss < RSS_GROWTH_BOUND


def violation_of(events: list[SseEvent]) -> dict[str, Any]:
    assert events and events[-1].event == "done", [e.event for e in events[-3:]]
    assert events[-1].data["status"] == "error"
    errors = [e.data for e in events if e.event == "error"]
    assert errors, [e.event for e in events[-5:]]
    error: dict[str, Any] = errors[-1]
    assert error["code"] == "bridge_protocol_violation", error
    assert error["error"].startswith("bridge protocol violation: ")
    return error


def assert_paused_then_resumable(client: httpx.Client, session_id: str) -> None:
    assert session_status(client, session_id) == "paused"
    assert client.post(f"/api/sessions/{session_id}/resume").status_code == 200
    events = send_message(client, session_id, "hello again")
    assert [e.data for e in events if e.event == "text_delta"] == [{"text": "honest reply"}]
    assert events[-1].data["status"] == "ok"


def attack(hostile: GatewayProcess, client: httpx.Client, tmp_path: Path, prompt: str,
           rule: str) -> tuple[str, list[SseEvent]]:
    sid = new_session(client, tmp_path, prompt)
    footprint = Footprint(hostile, prompt)
    events = send_message(client, sid, prompt)
    footprint.check()
    error = violation_of(events)
    assert error["rule"] == rule, error
    assert_paused_then_resumable(client, sid)
    return sid, events


# the agent's own commands cannot reach the socket


FORGER = """
import ctypes, os, socket, struct
frame = lambda t, p: struct.pack(">I", len(t) + 1 + len(p)) + t + b" " + p
forged = frame(b"text_delta", b'{"text":"FORGED"}')
stdio = {os.readlink(f"/proc/self/fd/{fd}") for fd in (0, 1, 2)}
reached = []
for fd in map(int, os.listdir("/proc/self/fd")):
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
        if fd > 2 and target.startswith("socket:") and target not in stdio:
            os.write(fd, forged); reached.append(f"inherited fd {fd}")
    except OSError:
        pass
libc = ctypes.CDLL(None, use_errno=True)
mine = os.getsid(0)  # this command's own processes (the shell, this one) do not count
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        if os.getsid(int(pid)) == mine:
            continue
    except OSError:
        continue
    pidfd = libc.syscall(434, int(pid), 0)  # pidfd_open
    if pidfd < 0:
        continue
    for fd in range(3, 64):
        got = libc.syscall(438, pidfd, fd, 0)  # pidfd_getfd: needs ptrace access
        if got >= 0:
            try:
                if os.readlink(f"/proc/self/fd/{got}") not in stdio:
                    os.write(got, forged); reached.append(f"pid {pid} fd {fd}")
            except OSError:
                pass
print("reached", len(reached), reached)
print("env", sorted(k for k in os.environ if "BRIDGE" in k))
"""


def test_the_agents_commands_cannot_reach_the_bridge_socket(
    client: httpx.Client, tmp_path: Path
) -> None:
    sid = new_session(client, tmp_path, "forger")
    result = python(client, sid, FORGER)
    assert "reached 0 []" in result["stdout"], result
    assert "env []" in result["stdout"], result
    listing = run(client, sid, "ls -l /proc/2/fd 2>&1; cat /proc/2/environ 2>&1 | head -c 200")
    assert "Permission denied" in listing["stdout"], listing
    events = send_message(client, sid, "hello")
    assert "FORGED" not in str([e.data for e in events])
    assert events[-1].data["status"] == "ok"


# a hostile bridge in a real sandbox


def test_an_unknown_frame_type_stops_the_session(
    hostile: GatewayProcess, hostile_client: httpx.Client, tmp_path: Path
) -> None:
    _, events = attack(hostile, hostile_client, tmp_path, "unknown-type", "unknown_frame_type")
    assert all(e.event in {"session_start", "error", "done"} for e in events)


def test_a_frame_type_with_newlines_and_quotes_forges_no_sse_event(
    hostile: GatewayProcess, hostile_client: httpx.Client, tmp_path: Path
) -> None:
    sid, events = attack(hostile, hostile_client, tmp_path, "newline-type", "unknown_frame_type")
    assert [e.event for e in events] == ["session_start", "error", "done"]
    assert all(e.id != "424242" for e in events)
    logged = hostile_client.get(f"/api/sessions/{sid}/stream/events").json()["events"]
    assert [e["id"] for e in logged] == list(range(1, len(logged) + 1))
    assert [e["type"] for e in logged[:3]] == ["session_start", "error", "done"]
    assert {e["type"] for e in logged} <= {"session_start", "error", "done", "text_delta",
                                           "turn_complete", "message"}
    assert "\n" not in logged[1]["data"]["error"]  # the type is named escaped, and cut short


def test_a_payload_that_is_not_json_stops_the_session(
    hostile: GatewayProcess, hostile_client: httpx.Client, tmp_path: Path
) -> None:
    sid, _ = attack(hostile, hostile_client, tmp_path, "invalid-json", "invalid_json")
    assert hostile_client.get(f"/api/sessions/{sid}/stream/events").status_code == 200


def test_oversized_frames_are_refused_before_they_are_held(
    hostile: GatewayProcess, hostile_client: httpx.Client, tmp_path: Path
) -> None:
    attack(hostile, hostile_client, tmp_path, "oversized", "frame_too_large")


def test_a_flood_of_small_frames_is_cut_at_the_rate_limit(
    hostile: GatewayProcess, hostile_client: httpx.Client, tmp_path: Path
) -> None:
    _, events = attack(hostile, hostile_client, tmp_path, "flood", "event_rate")
    deltas = sum(e.event == "text_delta" for e in events)
    print(f"flood: {deltas} of 1,000,000 forged frames reached the client")
    assert deltas <= int(HOSTILE_LIMITS["ASH_BRIDGE_EVENT_BURST"]) + 5000


def test_events_between_turns_stop_the_bridge_at_once_and_pause_the_session(
    hostile: GatewayProcess, hostile_client: httpx.Client, tmp_path: Path
) -> None:
    sid = new_session(hostile_client, tmp_path, "between")
    footprint = Footprint(hostile, "between-turns")
    events = send_message(hostile_client, sid, "between-turns")
    assert events[-1].data["status"] == "ok"
    deadline = time.monotonic() + 10
    while session_status(hostile_client, sid) != "paused":
        assert time.monotonic() < deadline, "a violation between turns went unnoticed"
        time.sleep(0.1)
    footprint.check()
    session = hostile_client.get(f"/api/sessions/{sid}").json()["session"]
    assert session["error"].startswith("bridge protocol violation: a text_delta event while "
                                       "no turn is open"), session
    assert_paused_then_resumable(hostile_client, sid)


def test_a_half_written_frame_then_silence_errors_after_the_deadline(
    hostile: GatewayProcess, hostile_client: httpx.Client, tmp_path: Path
) -> None:
    started = time.monotonic()
    attack(hostile, hostile_client, tmp_path, "half-frame", "frame_deadline")
    assert time.monotonic() - started < 30


def test_exec_in_a_wedged_session_returns_a_clear_error_within_the_frame_deadline(
    hostile: GatewayProcess, hostile_client: httpx.Client, tmp_path: Path
) -> None:
    sid = new_session(hostile_client, tmp_path, "wedged")
    with hostile_client.stream("POST", f"/api/sessions/{sid}/messages",
                               json={"content": "half-frame"}) as turn:
        started = time.monotonic()
        response = hostile_client.post(f"/api/sessions/{sid}/exec",
                                       json={"command": "echo hi", "timeout": 30_000})
        waited = time.monotonic() - started
        list(turn.iter_raw())
    assert response.status_code == 503, response.text
    assert "bridge protocol violation" in response.json()["error"], response.text
    assert waited < 10, waited


def test_an_exec_the_bridge_never_answers_fails_after_its_time_limit_and_grace(
    hostile: GatewayProcess, hostile_client: httpx.Client, tmp_path: Path
) -> None:
    sid = new_session(hostile_client, tmp_path, "mute")
    started = time.monotonic()
    response = hostile_client.post(f"/api/sessions/{sid}/exec",
                                   json={"command": "hang-forever", "timeout": 1000})
    waited = time.monotonic() - started
    assert response.status_code == 503, response.text
    assert response.json() == {"error": f"sandbox backend: session {sid}: the sandbox did not "
                               "answer exec within 2 s", "statusCode": 503}
    assert 1.5 < waited < 10, waited


# the same on a runner (split mode): the runner's BridgeClient holds the line


@pytest.fixture(scope="module")
def hostile_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("split")).start()
    try:
        cluster.add_runners("hostile-runner", module="tests.hostile_runner",
                            extra_env=HOSTILE_LIMITS)
        yield cluster
    finally:
        cluster.stop()


def wait_until_paused(client: httpx.Client, session_id: str) -> None:
    deadline = time.monotonic() + 10
    while session_status(client, session_id) != "paused":
        assert time.monotonic() < deadline, session_status(client, session_id)
        time.sleep(0.1)


@pytest.mark.parametrize(("prompt", "rule"), [("oversized", "frame_too_large"),
                                              ("newline-type", "unknown_frame_type")])
def test_a_hostile_bridge_on_a_runner_is_stopped_on_the_runner(
    hostile_cluster: Cluster, tmp_path: Path, prompt: str, rule: str
) -> None:
    with hostile_cluster.client() as split_client:
        sid = new_session(split_client, tmp_path, prompt)
        footprint = Footprint(hostile_cluster.gateway, f"split {prompt}",
                              hostile_cluster.runners["hostile-runner"])
        events = send_message(split_client, sid, prompt)
        footprint.check()
        assert violation_of(events)["rule"] == rule
        wait_until_paused(split_client, sid)
        assert_paused_then_resumable(split_client, sid)


def test_a_flood_on_a_runner_is_cut_there_with_memory_and_log_bounded(
    hostile_cluster: Cluster, tmp_path: Path
) -> None:
    """The runner's guard cuts the flood and the client sees the violation end the turn:
    the gateway reads the burst's tail although the runner's stream ended (ABORTED,
    "sandbox exited") while it was still in flight."""
    runner = hostile_cluster.runners["hostile-runner"]
    with hostile_cluster.client() as split_client:
        sid = new_session(split_client, tmp_path, "flood")
        footprint = Footprint(hostile_cluster.gateway, "split flood", runner)
        events = send_message(split_client, sid, "flood")
        footprint.check()
        assert events[-1].data["status"] == "error"
        assert violation_of(events)["rule"] == "event_rate"
        assert sum(e.event == "text_delta" for e in events) <= 25_000
        assert "bridge protocol violation (event_rate)" in runner.log_path.read_text()
        wait_until_paused(split_client, sid)
        assert_paused_then_resumable(split_client, sid)


def test_events_between_turns_on_a_runner_pause_the_session(
    hostile_cluster: Cluster, tmp_path: Path
) -> None:
    with hostile_cluster.client() as split_client:
        sid = new_session(split_client, tmp_path, "between")
        events = send_message(split_client, sid, "between-turns")
        assert events[-1].data["status"] == "ok"
        wait_until_paused(split_client, sid)
        error = split_client.get(f"/api/sessions/{sid}").json()["session"]["error"]
        assert error.startswith("sandbox exited: bridge protocol violation: a text_delta "
                                "event while no turn is open"), error
        assert_paused_then_resumable(split_client, sid)
