"""Hot-path timing points: the record format, taking them, and the bench's breakdown —
from lines on their own, and from real gateway and runner processes."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx
import orjson
import pytest

from bench import timing as bt
from bench.model_stub import StubProcess
from bench.stats import NoSamples
from runner import timing as rt
from tests.conftest import create_session, deploy, make_agent_folder, make_client
from tests.gateway_process import GatewayProcess
from tests.sandbox_helpers import pool_of, wait_for_pool
from tests.split_cluster import Cluster
from tests.test_claude_backend import BOUNDED_MODEL_ENV
from wire import timing as wt

TIMING_ON = {wt.ENV: "1"}
STANDALONE_POINTS = [name for name in wt.ORDER if name not in wt.SPLIT_ONLY]


def line(name: str, t_ns: int, turn: str = "t1", session: str = "s1") -> bytes:
    return wt.encode(wt.Point(name, t_ns, turn, session))


def turn_of(points: Sequence[str], start: int = 1_000_000, step: int = 1_000_000,
            ) -> dict[str, int]:
    """A turn whose points are `step` ns apart, in the given order."""
    return {name: start + index * step for index, name in enumerate(points)}


# the record format


def test_a_point_survives_encoding_and_decoding() -> None:
    point = wt.Point(wt.BRIDGE_RECEIVED, 123456789, "abc", "session-1")
    encoded = wt.encode(point)
    assert encoded.endswith(b"\n") and encoded.count(b"\n") == 1
    assert wt.decode(encoded) == point
    assert wt.decode(encoded.decode()) == point


def test_lines_that_are_not_points_are_skipped() -> None:
    good = line(wt.GATEWAY_REQUEST_IN, 5)
    junk = [
        b"INFO ash.gateway: listening on http://127.0.0.1:4100\n",
        b"\n",
        b'{"not_timing": 1}\n',
        good[: len(good) // 2],  # torn mid-write
        b'{"ash_timing": "x", "t_ns": "soon", "turn": "t1"}\n',
        b'{"ash_timing": "x", "t_ns": true, "turn": "t1"}\n',
        b'{"ash_timing": "x", "t_ns": 1, "turn": ""}\n',
        b'{"ash_timing": "x", "t_ns": 1, "turn": "t1", "session": 7}\n',
        b"\xff\xfe binary noise \x00",
    ]
    assert bt.parse_lines([*junk, good]) == [wt.decode(good)]


def test_a_point_after_other_output_on_its_line_is_still_read() -> None:
    assert bt.parse_lines([b"[bridge] " + line(wt.AGENT_FIRST_TOKEN, 9)]) == [
        wt.Point(wt.AGENT_FIRST_TOKEN, 9, "t1", "s1")]


def test_logs_of_several_processes_interleaved_join_by_turn(tmp_path: Path) -> None:
    gateway = tmp_path / "gateway.log"
    runner = tmp_path / "runner.log"
    gateway.write_bytes(b"".join([
        b"gateway starting\n",
        line(wt.GATEWAY_REQUEST_IN, 10, "a"),
        line(wt.GATEWAY_REQUEST_IN, 11, "b"),
        b"WARNING something else\n",
        line(wt.GATEWAY_FIRST_FRAME_WRITTEN, 90, "b"),
        line(wt.GATEWAY_FIRST_FRAME_WRITTEN, 80, "a")[:-20],  # the process died mid-line
    ]))
    runner.write_bytes(line(wt.RUNNER_RECEIVED, 20, "b") + line(wt.RUNNER_RECEIVED, 21, "a"))
    turns = bt.join(bt.read_points([gateway, runner]))
    assert turns == {
        "a": {wt.GATEWAY_REQUEST_IN: 10, wt.RUNNER_RECEIVED: 21},
        "b": {wt.GATEWAY_REQUEST_IN: 11, wt.RUNNER_RECEIVED: 20,
              wt.GATEWAY_FIRST_FRAME_WRITTEN: 90},
    }


def test_a_point_taken_twice_keeps_its_earliest_time() -> None:
    points = [wt.Point(wt.RUNNER_FIRST_EVENT, 30, "t"), wt.Point(wt.RUNNER_FIRST_EVENT, 20, "t")]
    assert bt.join(points) == {"t": {wt.RUNNER_FIRST_EVENT: 20}}


def test_a_timing_frame_keeps_only_bridge_points_with_plain_turn_ids() -> None:
    payload = wt.encode_batch([
        wt.Point(wt.BRIDGE_RECEIVED, 1, "t1", "s"),
        wt.Point(wt.AGENT_FIRST_TOKEN, 2, "t1", "s"),
        wt.Point(wt.GATEWAY_REQUEST_IN, 3, "t1", "s"),  # not the bridge's to send
        wt.Point(wt.BRIDGE_FIRST_EVENT_WRITTEN, 4, "t1\n{forged}", "s"),
    ])
    assert wt.decode_batch(payload, rt.BRIDGE_PREFIXES) == [
        wt.Point(wt.BRIDGE_RECEIVED, 1, "t1", "s"), wt.Point(wt.AGENT_FIRST_TOKEN, 2, "t1", "s")]
    assert wt.decode_batch(b"not json", rt.BRIDGE_PREFIXES) == []
    assert wt.decode_batch(b'{"a": 1}', rt.BRIDGE_PREFIXES) == []


def test_only_short_plain_client_turn_ids_are_taken() -> None:
    assert wt.valid_turn_id(b"bench-0001_a.b") == "bench-0001_a.b"
    for bad in (None, b"", b"x" * 65, b"has space", b'quote"', "é".encode()):
        assert wt.valid_turn_id(bad) is None


# taking points


def test_recorder_writes_lines_only_when_flushed(tmp_path: Path) -> None:
    path = tmp_path / "timing.log"
    recorder = rt.Recorder(str(path))
    recorder.add(wt.Point(wt.GATEWAY_REQUEST_IN, 1, "t"))  # no loop running: written at once
    assert bt.read_points([path]) == [wt.Point(wt.GATEWAY_REQUEST_IN, 1, "t")]

    async def in_a_loop() -> None:
        recorder.add(wt.Point(wt.GATEWAY_SESSION_FOUND, 2, "t"))
        recorder.add(wt.Point(wt.GATEWAY_BACKEND_SEND, 3, "t"))
        assert len(bt.read_points([path])) == 1  # held, off the hot path
        await asyncio.sleep(rt.FLUSH_DELAY * 2)
        assert len(bt.read_points([path])) == 3

    asyncio.run(in_a_loop())


async def test_bridge_follows_the_first_token_event_once_per_turn() -> None:
    written: list[str] = []

    async def emit(event_type: str, payload: bytes) -> None:
        written.append(event_type)

    turn = rt.TurnPoints(orjson.dumps({"prompt": "hi", "options": {}, "turn": "t7"}), 5)
    timed = turn.emitter(emit)
    sent = ("message", "tool_use", "thinking_delta", "text_delta", "thinking_delta", "message")
    for event_type in sent:
        await timed(event_type, b"{}")
    assert written == list(sent)
    payload = turn.frame_payload()
    assert payload is not None
    names = [p.name for p in wt.decode_batch(payload, rt.BRIDGE_PREFIXES)]
    assert names == [wt.BRIDGE_RECEIVED, wt.AGENT_FIRST_TOKEN, wt.BRIDGE_FIRST_EVENT_WRITTEN]


async def test_bridge_takes_no_points_for_a_query_without_a_turn_id() -> None:
    async def emit(event_type: str, payload: bytes) -> None:
        pass

    turn = rt.TurnPoints(b'{"prompt": "hi", "options": {}}', 5)
    assert turn.emitter(emit) is emit
    assert turn.frame_payload() is None


# the breakdown


def test_each_hop_is_the_time_between_consecutive_points() -> None:
    points = [wt.CLIENT_SEND, wt.GATEWAY_REQUEST_IN, wt.AGENT_FIRST_TOKEN,
              wt.GATEWAY_FIRST_FRAME_WRITTEN, wt.CLIENT_FIRST_EVENT]
    turns = {f"t{i}": turn_of(points, step=(i + 1) * 1_000_000) for i in range(4)}
    result = bt.breakdown(turns)
    assert result.points == tuple(points)
    assert (result.complete, result.incomplete, result.missing) == (4, 0, {})
    assert [(h.start, h.end) for h in result.hops] == list(itertools.pairwise(points))
    for hop in result.hops:  # 1, 2, 3, 4 ms
        assert (hop.ms.n, hop.ms.min, hop.ms.max, hop.ms.mean) == (4, 1.0, 4.0, 2.5)
        assert (hop.ms.p50, hop.ms.p99) == (2.0, 4.0)
    assert result.ash_overhead is not None and result.server_overhead is not None
    assert (result.ash_overhead.min, result.ash_overhead.max) == (2.0, 8.0)
    assert (result.server_overhead.min, result.server_overhead.max) == (1.0, 4.0)


def test_a_point_that_comes_before_its_predecessor_gives_a_negative_hop() -> None:
    turn = {wt.AGENT_FIRST_TOKEN: 1_000_000, wt.BRIDGE_FIRST_EVENT_WRITTEN: 1_500_000,
            wt.RUNNER_FIRST_EVENT: 1_400_000}
    hops = bt.breakdown({"t": turn}).hops
    assert hops[0].ms.p50 == pytest.approx(0.5)
    assert hops[1].ms.p50 == pytest.approx(-0.1)


def test_turns_missing_points_are_counted_and_left_out() -> None:
    full = turn_of(STANDALONE_POINTS)
    without_bridge = {k: v for k, v in full.items() if not k.startswith("bridge.")}
    turns = {"a": full, "b": dict(full), "c": without_bridge,
             "d": {wt.CLIENT_SEND: 1, wt.CLIENT_FIRST_EVENT: 2}}
    result = bt.breakdown(turns)
    assert (result.complete, result.incomplete) == (2, 2)
    assert result.missing[wt.BRIDGE_RECEIVED] == 2
    assert result.missing[wt.GATEWAY_REQUEST_IN] == 1
    assert all(hop.ms.n == 2 for hop in result.hops)
    assert "2 incomplete" in bt.markdown({"standalone": result})


def test_a_breakdown_with_no_complete_turn_raises_no_samples() -> None:
    with pytest.raises(NoSamples):
        bt.breakdown({})
    with pytest.raises(NoSamples):
        bt.breakdown({"a": {wt.GATEWAY_REQUEST_IN: 1}, "b": {wt.AGENT_FIRST_TOKEN: 2}})
    with pytest.raises(NoSamples):
        bt.breakdown({"a": turn_of(STANDALONE_POINTS)}, expected=[*wt.ORDER])


def test_the_markdown_table_names_every_hop_and_the_overhead() -> None:
    result = bt.breakdown({"t": turn_of(wt.ORDER)})
    table = bt.markdown({"runner": result})
    assert table.startswith("### runner — first-event path, 1 turns")
    assert table.count("\n| ") == 1 + len(wt.ORDER) - 1 + 2
    assert "**Ash overhead** (client.first_event - agent.first_token) | 6.000" in table
    assert result.as_dict()["hops_ms"][0]["from"] == wt.CLIENT_SEND


def test_with_client_points_only_the_clients_turns_count(tmp_path: Path) -> None:
    log = tmp_path / "gateway.log"
    server = [name for name in STANDALONE_POINTS if not name.startswith("client.")]
    log.write_bytes(b"".join(line(name, t, turn) for turn in ("kept", "warm-up")
                             for name, t in turn_of(server).items()))
    client = [wt.Point(wt.CLIENT_SEND, 0, "kept"), wt.Point(wt.CLIENT_FIRST_EVENT, 10**9, "kept")]
    assert bt.breakdown_from_logs([log]).complete == 2
    result = bt.breakdown_from_logs([log], client)
    assert (result.complete, result.incomplete) == (1, 0)
    assert result.points == tuple(STANDALONE_POINTS)


def test_the_cli_prints_the_breakdown_of_log_files(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "gateway.log"
    log.write_bytes(b"".join(line(name, t) for name, t in turn_of(STANDALONE_POINTS).items()))
    out_json = tmp_path / "timing.json"
    assert bt.main(["--label", "standalone", "--json", str(out_json), str(log)]) == 0
    assert "server overhead" in capsys.readouterr().out
    assert orjson.loads(out_json.read_bytes())["standalone"]["complete_turns"] == 1
    (tmp_path / "empty.log").write_text("nothing here\n")
    assert bt.main([str(tmp_path / "empty.log")]) == 1


# real processes


def assert_causal_order(points: Mapping[str, int], expected: Sequence[str]) -> None:
    """Each point is no earlier than the one before it, except that the reader of a
    handed-off write may beat the writer's own `..._written` point: compare it with the
    point before that."""
    for index in range(1, len(expected)):
        before = expected[index - 1]
        if before in wt.AFTER_HANDOFF:
            before = expected[index - 2]
        assert points[expected[index]] >= points[before], (expected[index], before, points)


def timed_turn(client: httpx.Client, session_id: str, turn: str) -> list[wt.Point]:
    """One turn sent with `x-ash-turn`; the client's own points for it."""
    points = [bt.client_point(wt.CLIENT_SEND, turn)]
    with client.stream("POST", f"/api/sessions/{session_id}/messages",
                       json={"content": "time me"}, headers={bt.TURN_HEADER: turn}) as response:
        assert response.status_code == 200
        body = b""
        for chunk in response.iter_raw():
            if len(points) == 1 and b"event: text_delta" in body + chunk:
                points.append(bt.client_point(wt.CLIENT_FIRST_EVENT, turn))
            body += chunk
    assert b"event: done" in body and b"event: timing" not in body
    return points


def test_standalone_turn_logs_every_point_in_causal_order(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path / "data", extra_env=TIMING_ON).start()
    try:
        with make_client(gateway) as client:
            deploy(client, "echo", make_agent_folder(tmp_path))
            session = create_session(client, "echo")
            client_points = timed_turn(client, session["id"], "standalone-turn-1")
    finally:
        gateway.stop()  # the last points are written at exit
    turns = bt.join([*bt.read_points([gateway.stderr_path]), *client_points])
    turn = turns["standalone-turn-1"]
    assert sorted(turn) == sorted(STANDALONE_POINTS)
    assert_causal_order(turn, STANDALONE_POINTS)
    result = bt.breakdown_from_logs([gateway.stderr_path], client_points)
    assert (result.complete, result.incomplete) == (1, 0)
    assert result.points == tuple(STANDALONE_POINTS) and result.ash_overhead is not None



def test_a_session_served_from_the_warm_pool_logs_the_bridge_points_too(
    tmp_path: Path,
) -> None:
    gateway = GatewayProcess(tmp_path / "data",
                             extra_env={**TIMING_ON, "ASH_WARM_POOL": "1"}).start()
    try:
        with make_client(gateway) as client:
            deploy(client, "echo", make_agent_folder(tmp_path))
            wait_for_pool(client, ready=1)
            session = create_session(client, "echo")
            assert pool_of(client)["served"] == 1
            client_points = timed_turn(client, session["id"], "pooled-turn-1")
    finally:
        gateway.stop()
    turn = bt.join([*bt.read_points([gateway.stderr_path]), *client_points])["pooled-turn-1"]
    assert sorted(turn) == sorted(STANDALONE_POINTS)

def test_claude_turn_points_follow_the_first_token_not_the_first_message(
        tmp_path: Path, stub: StubProcess) -> None:
    """The Claude backend sends the CLI's `system` message before the model says anything:
    the points follow the first token's event, so the chain stays in causal order."""
    gateway = GatewayProcess(tmp_path / "data", extra_env={
        **TIMING_ON, "ANTHROPIC_BASE_URL": stub.url, "ANTHROPIC_API_KEY": "test-key"}).start()
    try:
        with make_client(gateway) as client:
            deploy(client, "claude", make_agent_folder(
                tmp_path, "claude", {"backend": "claude", "env": BOUNDED_MODEL_ENV}))
            session = create_session(client, "claude")
            client_points = timed_turn(client, session["id"], "claude-turn")
    finally:
        gateway.stop()
    turn = bt.join([*bt.read_points([gateway.stderr_path]), *client_points])["claude-turn"]
    assert sorted(turn) == sorted(STANDALONE_POINTS)
    assert_causal_order(turn, STANDALONE_POINTS)


@pytest.mark.parametrize("turn_rpc", ["session", "send"])
def test_split_turn_logs_the_runner_points_too(tmp_path: Path, turn_rpc: str) -> None:
    cluster = Cluster(tmp_path, gateway_args=["--turn-rpc", turn_rpc])
    cluster.gateway.extra_env.update(TIMING_ON)
    with cluster.start():
        (runner,) = cluster.add_runners("r1", extra_env=TIMING_ON)
        with cluster.client() as client:
            deploy(client, "echo", make_agent_folder(tmp_path))
            session = create_session(client, "echo")
            client_points = timed_turn(client, session["id"], f"split-{turn_rpc}")
        runner.stop()
    logs = [cluster.gateway.stderr_path, runner.log_path]
    turn = bt.join([*bt.read_points(logs), *client_points])[f"split-{turn_rpc}"]
    assert sorted(turn) == sorted(wt.ORDER)
    assert_causal_order(turn, wt.ORDER)
    assert bt.breakdown_from_logs(logs, client_points).points == wt.ORDER


def test_without_the_variable_no_point_is_taken(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path / "data").start()
    try:
        with make_client(gateway) as client:
            # an agent cannot switch timing on for its own bridge either
            deploy(client, "echo", make_agent_folder(
                tmp_path, config={"backend": "mock", "env": {wt.ENV: "1"}}))
            session = create_session(client, "echo")
            timed_turn(client, session["id"], "untimed")
    finally:
        gateway.stop()
    logs = [gateway.stderr_path, *(tmp_path / "data").glob("sandboxes/*/bridge.log")]
    assert bt.read_points(logs) == []
    assert all(wt.KEY.encode() not in path.read_bytes() for path in logs)
