"""The bridge guard (wire/bridge_limits.py, sans-IO) and BridgeClient's use of it on a real
socketpair: every rule a bridge's output is held to, one test each."""

from __future__ import annotations

import asyncio
import socket
import struct
import time

import orjson
import pytest

from gateway.cli import parse_args as gateway_args
from runner.bridge_client import BridgeClient, ExecTimeout
from runner.cli import parse_args as runner_args
from wire.bridge import encode_frame
from wire.bridge_limits import ERROR_CODE, MIB, BridgeGuard, BridgeLimits, Violation
from wire.events import Event

READY = encode_frame("ready", b'{"backend":"mock"}')
DELTA = encode_frame("text_delta", b'{"text":"hi"}')
DONE = encode_frame("done", b'{"status":"ok"}')


def started(limits: BridgeLimits | None = None, **options: bool) -> BridgeGuard:
    guard = BridgeGuard(limits, **options)
    assert [e.type for e in guard.feed(READY, 0.0)] == ["ready"]
    return guard


def in_turn(limits: BridgeLimits | None = None) -> BridgeGuard:
    guard = started(limits)
    guard.open_turn()
    return guard


def rule_of(guard: BridgeGuard) -> str:
    assert guard.violation is not None
    return guard.violation.rule


def test_a_turn_of_known_frames_passes_with_its_payload_bytes_untouched() -> None:
    guard = in_turn()
    frames = guard.feed(DELTA + encode_frame("turn_complete", b'{"a": [1, 2]}') + DONE, 0.0)
    assert frames == [Event("text_delta", b'{"text":"hi"}'),
                      Event("turn_complete", b'{"a": [1, 2]}'), Event("done", b'{"status":"ok"}')]
    assert guard.violation is None and guard.turns_open == 0


def test_an_unknown_type_is_a_violation_and_the_frames_before_it_still_pass() -> None:
    guard = in_turn()
    frames = guard.feed(DELTA + encode_frame("shell_out", b"{}") + DELTA, 0.0)
    assert frames == [Event("text_delta", b'{"text":"hi"}')]
    assert rule_of(guard) == "unknown_frame_type"
    assert guard.feed(DELTA, 0.0) == []


def test_a_type_with_newlines_and_quotes_is_unknown_and_not_echoed_raw() -> None:
    guard = in_turn()
    assert guard.feed(encode_frame('text_delta\nid:424242\nevent:done"', b"{}"), 0.0) == []
    assert rule_of(guard) == "unknown_frame_type"
    assert guard.violation is not None
    assert "\n" not in guard.violation.message and len(guard.violation.message) < 120
    said = orjson.loads(guard.violation.payload())
    assert said["code"] == ERROR_CODE and said["rule"] == "unknown_frame_type"


def test_a_frame_with_no_type_separator_is_a_violation() -> None:
    guard = in_turn()
    body = b"x" * 40
    assert guard.feed(struct.pack(">I", len(body)) + body, 0.0) == []
    assert rule_of(guard) == "unknown_frame_type"


def test_a_payload_that_is_not_json_is_a_violation() -> None:
    guard = in_turn()
    assert guard.feed(encode_frame("text_delta", b'{"text": "unterminated'), 0.0) == []
    assert rule_of(guard) == "invalid_json"


def test_an_oversized_frame_is_refused_at_its_header_before_the_body_arrives() -> None:
    guard = in_turn(BridgeLimits(max_frame_bytes=1024, max_model_frame_bytes=4096))
    assert guard.feed(struct.pack(">I", 64 * MIB), 0.0) == []
    assert rule_of(guard) == "frame_too_large"


def test_an_event_over_the_frame_cap_is_refused_once_its_type_has_arrived() -> None:
    guard = in_turn(BridgeLimits(max_frame_bytes=1024, max_model_frame_bytes=4096))
    assert guard.feed(struct.pack(">I", 2000) + b"text_del", 0.0) == []
    assert guard.violation is None  # its type is not complete yet
    assert guard.feed(b"ta {", 0.0) == []
    assert rule_of(guard) == "frame_too_large"


def test_a_model_request_may_be_bigger_but_only_with_a_model_proxy() -> None:
    limits = BridgeLimits(max_frame_bytes=1024, max_model_frame_bytes=4096)
    body = orjson.dumps({"id": "r1", "body": "A" * 3000})
    guard = started(limits)
    guard.model_frames = True
    assert [e.type for e in guard.feed(encode_frame("model_request", body), 0.0)] == [
        "model_request"]
    without = started(limits)
    assert without.feed(encode_frame("model_cancel", b'{"id":"r1"}'), 0.0) == []
    assert rule_of(without) == "unexpected_frame"


def test_a_turn_event_while_no_turn_is_open_is_a_violation() -> None:
    guard = started()
    assert guard.feed(DELTA, 0.0) == []
    assert rule_of(guard) == "event_outside_turn"


def test_events_after_the_turns_done_are_outside_the_turn() -> None:
    guard = in_turn()
    assert [e.type for e in guard.feed(DONE + DELTA, 0.0)] == ["done"]
    assert rule_of(guard) == "event_outside_turn"


def test_a_turn_may_hold_only_so_many_events_and_the_next_turn_starts_afresh() -> None:
    guard = in_turn(BridgeLimits(max_turn_events=3))
    assert len(guard.feed(DELTA * 2 + DONE, 0.0)) == 3
    guard.open_turn()
    assert len(guard.feed(DELTA * 3 + DELTA, 0.0)) == 3
    assert rule_of(guard) == "turn_event_limit"


def test_a_turn_may_hold_only_so_many_bytes() -> None:
    guard = in_turn(BridgeLimits(max_turn_bytes=100))
    assert len(guard.feed(DELTA * 10, 0.0)) == 100 // (len(DELTA) - 4)
    assert rule_of(guard) == "turn_byte_limit"


def test_frames_beyond_the_burst_are_a_violation_unless_time_refilled_the_bucket() -> None:
    limits = BridgeLimits(events_per_second=10, event_burst=5)
    guard = in_turn(limits)  # `ready` took one token at t=0
    assert len(guard.feed(DELTA * 4, 0.0)) == 4
    assert len(guard.feed(DELTA * 2, 0.2)) == 2  # 0.2 s at 10/s: two more
    assert guard.violation is None
    assert len(guard.feed(DELTA * 2, 0.2)) == 0
    assert rule_of(guard) == "event_rate"


def test_event_bytes_beyond_the_byte_burst_are_a_violation() -> None:
    guard = in_turn(BridgeLimits(bytes_per_second=10, byte_burst=50))
    assert len(guard.feed(DELTA * 5, 0.0)) == 50 // (len(DELTA) - 4)
    assert rule_of(guard) == "byte_rate"


def test_ready_comes_once() -> None:
    guard = started()
    assert guard.feed(READY, 0.0) == []
    assert rule_of(guard) == "unexpected_frame"


def test_warm_comes_only_first_and_only_from_a_warm_bridge() -> None:
    warm = BridgeGuard(warm=True)
    assert [e.type for e in warm.feed(encode_frame("warm") + READY, 0.0)] == ["warm", "ready"]
    cold = BridgeGuard()
    assert cold.feed(encode_frame("warm"), 0.0) == []
    assert rule_of(cold) == "unexpected_frame"


def test_timing_points_come_only_when_asked_for_and_inside_a_turn() -> None:
    timed = started(timing=True)
    timed.open_turn()
    assert [e.type for e in timed.feed(encode_frame("timing", b"[]"), 0.0)] == ["timing"]
    untimed = in_turn()
    assert untimed.feed(encode_frame("timing", b"[]"), 0.0) == []
    assert rule_of(untimed) == "unexpected_frame"


def test_an_exec_result_before_ready_is_a_violation() -> None:
    guard = BridgeGuard()
    assert guard.feed(encode_frame("exec_result", b'{"id":"x"}'), 0.0) == []
    assert rule_of(guard) == "unexpected_frame"


def test_a_stalled_frame_is_named_by_its_deadline() -> None:
    guard = in_turn(BridgeLimits(frame_deadline=2.5))
    guard.feed(DELTA[:7], 0.0)
    assert guard.partial
    assert guard.stalled() == Violation("frame_deadline", "a frame started and did not "
                                        "complete within 2.5 s")


def test_limits_come_from_the_environment_and_refuse_nonsense() -> None:
    limits = BridgeLimits.from_env({"ASH_BRIDGE_MAX_FRAME_BYTES": "2048",
                                    "ASH_BRIDGE_FRAME_DEADLINE": "1.5"})
    assert limits.max_frame_bytes == 2048 and limits.frame_deadline == 1.5
    assert limits.max_turn_events == BridgeLimits().max_turn_events
    for bad in ({"ASH_BRIDGE_MAX_TURN_EVENTS": "lots"}, {"ASH_BRIDGE_EVENT_BURST": "0"},
                {"ASH_BRIDGE_RESUME_QUEUED_BYTES": str(2 * BridgeLimits().max_queued_bytes)}):
        with pytest.raises(ValueError, match="ASH_BRIDGE_"):
            BridgeLimits.from_env(bad)


def test_both_entry_points_refuse_a_bad_limit_at_startup(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ASH_INTERNAL_SECRET", "s")
    monkeypatch.setenv("ASH_BRIDGE_FRAME_DEADLINE", "2.5")
    assert gateway_args([]).port is not None and runner_args(["--gateway", "127.0.0.1:1"])
    monkeypatch.setenv("ASH_BRIDGE_MAX_QUEUED_BYTES", "-5")
    for parse in (lambda: gateway_args([]), lambda: runner_args(["--gateway", "127.0.0.1:1"])):
        with pytest.raises(SystemExit):
            parse()
        assert "ASH_BRIDGE_MAX_QUEUED_BYTES must be positive" in capsys.readouterr().err


# BridgeClient on a real socketpair: the I/O side of the rules


async def client_pair(limits: BridgeLimits, violations: list[Violation]
                      ) -> tuple[BridgeClient, socket.socket]:
    runner_end, bridge_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    client = await BridgeClient.connect(runner_end, limits=limits,
                                        on_violation=violations.append)
    bridge_end.setblocking(False)
    bridge_end.sendall(READY)
    assert (await client.next_event()) is not None
    return client, bridge_end


async def test_a_violation_between_turns_stops_the_bridge_with_nobody_reading() -> None:
    violations: list[Violation] = []
    client, bridge_end = await client_pair(BridgeLimits(), violations)
    bridge_end.sendall(DELTA)
    for _ in range(100):
        if violations:
            break
        await asyncio.sleep(0.01)
    assert [v.rule for v in violations] == ["event_outside_turn"]
    assert client.closed and await client.next_event() is None
    assert bridge_end.recv(1) == b""  # the runner hung up
    client.close()


async def test_queued_bytes_stop_reading_at_the_budget_and_resume_below_the_low_mark() -> None:
    limits = BridgeLimits(max_queued_bytes=64 * 1024, resume_queued_bytes=16 * 1024)
    client, bridge_end = await client_pair(limits, [])
    client.send("query", b'{"prompt":"x"}')
    event = encode_frame("text_delta", orjson.dumps({"text": "x" * 1000}))
    burst = event * 2000  # 2 MB: far over the budget
    sent = 0
    for _ in range(200):
        try:
            sent += bridge_end.send(burst[sent:])
        except BlockingIOError:
            await asyncio.sleep(0.01)
        if sent == len(burst):
            break
    queued = client._protocol.queued_bytes
    print(f"\nsent {sent} of {len(burst)} bytes; queued {queued} bytes in the runner")
    assert sent < len(burst), "the runner kept reading past its budget"
    assert queued <= limits.max_queued_bytes + len(event) + 256 * 1024
    received = 0
    while received < 2000:
        assert (await client.next_event()) is not None
        received += 1
        if sent < len(burst):
            try:
                sent += bridge_end.send(burst[sent:])
            except BlockingIOError:
                pass
    client.close()


async def test_a_half_written_frame_then_silence_is_cut_after_the_deadline() -> None:
    violations: list[Violation] = []
    client, bridge_end = await client_pair(BridgeLimits(frame_deadline=0.3), violations)
    client.send("query", b'{"prompt":"x"}')
    bridge_end.sendall(DELTA + DONE[:6])
    assert (await client.next_event()) == Event("text_delta", b'{"text":"hi"}')
    started_at = time.monotonic()
    assert await asyncio.wait_for(client.next_event(), 5) is None
    waited = time.monotonic() - started_at
    assert [v.rule for v in violations] == ["frame_deadline"] and 0.25 < waited < 2, waited
    client.close()


async def test_an_idle_socket_between_frames_is_no_violation() -> None:
    violations: list[Violation] = []
    client, bridge_end = await client_pair(BridgeLimits(frame_deadline=0.2), violations)
    client.send("query", b'{"prompt":"x"}')
    await asyncio.sleep(0.5)
    bridge_end.sendall(DONE)
    assert (await client.next_event()) == Event("done", b'{"status":"ok"}')
    assert violations == [] and not client.closed
    client.close()


async def test_an_exec_the_bridge_never_answers_fails_after_its_deadline() -> None:
    client, _bridge_end = await client_pair(BridgeLimits(exec_grace=0.2), [])
    started_at = time.monotonic()
    with pytest.raises(ExecTimeout, match=r"did not answer exec within 0\.3 s"):
        await client.exec("sleep 100", 0.1)
    assert time.monotonic() - started_at < 2
    client.close()


async def test_a_violation_fails_a_pending_exec_at_once() -> None:
    client, bridge_end = await client_pair(BridgeLimits(), [])
    pending = asyncio.ensure_future(client.exec("true", 30))
    await asyncio.sleep(0.05)
    bridge_end.sendall(encode_frame("nope", b"{}"))
    with pytest.raises(ConnectionError, match="bridge protocol violation"):
        await asyncio.wait_for(pending, 5)
    client.close()
