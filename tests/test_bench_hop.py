"""The hop benchmark: its parsing, its figures and its files — a bench that silently
measures nothing is a defect. No test here asserts how fast anything is."""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import deploy, hop, report, turn_client
from bench.stats import NoSamples, summarize

ROOT = Path(__file__).parent.parent

STANDALONE_BANNER = """\
Ash gateway (standalone) listening on http://127.0.0.1:40123 — HTTP/1.1 and HTTP/2 cleartext
Data dir: /tmp/x/gateway
API key: from ASH_API_KEY
"""
COORDINATOR_BANNER = """\
Ash gateway (coordinator) listening on http://127.0.0.1:40124 — HTTP/1.1 and HTTP/2 cleartext
Data dir: /tmp/x/gateway
Runner registry (gRPC, cleartext) on 127.0.0.1:40125
API key: from ASH_API_KEY
"""


def sse(event: str, data: str, seq: int) -> bytes:
    return f"id: {seq}\nevent: {event}\ndata: {data}\n\n".encode()


def test_banner_gives_the_gateway_url_and_no_registry_when_standalone() -> None:
    assert deploy.parse_banner(STANDALONE_BANNER) == deploy.Banner("http://127.0.0.1:40123", None)


def test_banner_gives_the_runner_registry_of_a_coordinator() -> None:
    banner = deploy.parse_banner(COORDINATOR_BANNER)
    assert banner == deploy.Banner("http://127.0.0.1:40124", "127.0.0.1:40125")


def test_banner_without_a_url_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="listening on"):
        deploy.parse_banner("Data dir: /tmp/x\nAPI key: from ASH_API_KEY\n")


def test_sse_frames_split_across_reads_and_crlf_are_parsed_whole() -> None:
    scanner = turn_client.SseScanner()
    stream = b": keep-alive\r\n\r\n" + sse("text_delta", '{"text":"a"}', 1) + sse(
        "done", '{"status":"ok"}', 2)
    frames = [frame for i in range(len(stream)) for frame in scanner.feed(stream[i:i + 1])]
    assert [(f.event, f.data, f.id) for f in frames] == [
        ("text_delta", b'{"text":"a"}', "1"), ("done", b'{"status":"ok"}', "2")]


def test_a_bookkeeping_event_first_does_not_end_ttft() -> None:
    watch = turn_client.TurnWatch()
    started = watch.started
    watch.feed(sse("session_started", "{}", 1), started + 0.001)
    watch.feed(b"data: an unnamed frame\n\n", started + 0.002)
    watch.feed(sse("text_delta", '{"text":"hi"}', 2), started + 0.005)
    watch.feed(sse("done", '{"status":"ok"}', 3), started + 0.009)
    timing = watch.result()
    assert timing.first_event == pytest.approx(0.001)
    assert timing.first_agent_event == pytest.approx(0.005)
    assert timing.first_agent_type == "text_delta"
    assert timing.done == pytest.approx(0.009)


def test_the_sdk_system_message_is_the_first_agent_event_but_not_model_output() -> None:
    watch = turn_client.TurnWatch()
    watch.feed(sse("message", '{"type":"system","subtype":"init"}', 1), watch.started + 0.002)
    watch.feed(sse("text_delta", '{"text":"hi"}', 2) + sse("done", "{}", 3),
               watch.started + 0.040)
    timing = watch.result()
    assert timing.first_agent_type == "message"
    assert timing.first_agent_event == pytest.approx(0.002)
    assert timing.first_output == pytest.approx(0.040)


@pytest.mark.parametrize("event", ["error", "done", "", "session_started"])
def test_gateway_events_are_not_agent_derived(event: str) -> None:
    assert not turn_client.is_agent_event(turn_client.SseFrame(event, b"{}"))


@pytest.mark.parametrize("event", ["text_delta", "thinking_delta", "tool_use", "tool_result",
                                   "message", "turn_complete"])
def test_agent_events_are_agent_derived(event: str) -> None:
    assert turn_client.is_agent_event(turn_client.SseFrame(event, b"{}"))


def test_a_turn_with_no_agent_event_measured_nothing() -> None:
    watch = turn_client.TurnWatch()
    watch.feed(sse("error", '{"error":"backend"}', 1) + sse("done", "{}", 2), watch.started)
    with pytest.raises(RuntimeError, match="no agent-derived event"):
        watch.result()


@pytest.mark.parametrize("read_size", [1, 2, 3, 7, 1000])
def test_chunked_body_is_decoded_across_reads_and_the_rest_is_kept(read_size: int) -> None:
    wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n"
    decoder = turn_client.ChunkedDecoder()
    body = b"".join(decoder.feed(wire[i:i + read_size])
                    for i in range(0, len(wire), read_size))
    assert body == b"hello, world"
    assert decoder.finished
    assert decoder.rest() == b"HTTP/1.1 200 OK\r\n"


def samples(ttft: list[float]) -> hop.Samples:
    return {hop.CREATE: [10.0, 12.0], hop.TTFT: ttft, hop.TOTAL: [t + 2 for t in ttft],
            hop.OVERHEAD: ttft}


def settings(**changes: object) -> hop.Settings:
    base = hop.Settings(agent="mock", rounds=2, warmup=0, turns=2, tokens=3,
                        first_token_ms=0.0, token_interval_ms=0.0, http="HTTP/2",
                        sandbox="bwrap", lifecycle_rounds=0, warm_pool=0, warm_pool_rounds=0,
                        warm_pool_refill_ms=0.0, configurations=("standalone", "gateway+runner"))
    return dataclasses.replace(base, **changes)


def test_overhead_is_gateway_runner_minus_standalone_per_statistic() -> None:
    results = hop.summaries({"standalone": samples([1.0, 2.0, 3.0]),
                             "gateway+runner": samples([2.0, 3.5, 4.0])})
    delta = hop.overhead(results["gateway+runner"], results["standalone"])
    assert delta[hop.TTFT].p50 == pytest.approx(1.5)
    assert delta[hop.TTFT].mean == pytest.approx(1.1666667)
    assert delta[hop.CREATE].p50 == pytest.approx(0.0)
    table = hop.overhead_table(delta)
    assert "| TTFT | +1.500 | +1.000 | +1.167 |" in table.splitlines()


def test_report_shows_the_seed_tables_overhead_and_the_breakdown_slot() -> None:
    results = hop.summaries({"standalone": samples([1.0, 2.0]),
                             "gateway+runner": samples([2.0, 3.0])})
    text = hop.render(settings(), report.machine(), results,
                      {"standalone": None, "gateway+runner": None}, None)
    for heading in ("### standalone", "### gateway+runner",
                    "### Overhead (gateway+runner minus standalone)",
                    "### Ash overhead per message", "### Per-hop breakdown"):
        assert heading in text
    assert "| create session | 10.0 | 12.0 | 12.0 | 11.0 | 2 |" in text.splitlines()


def test_a_configuration_with_no_samples_is_an_error_not_zeros() -> None:
    empty = {hop.CREATE: [5.0], hop.TTFT: [], hop.TOTAL: []}
    with pytest.raises(NoSamples, match="gateway\\+runner: no TTFT"):
        hop.summaries({"standalone": samples([1.0]), "gateway+runner": empty})


@pytest.mark.parametrize(("rounds", "share"), [(50, 20), (7, 3), (5, 5), (4, 0), (1, 1)])
def test_lifecycle_rounds_are_the_share_asked_for_spread_over_the_run(
    rounds: int, share: int
) -> None:
    chosen = [n for n in range(rounds)
              if hop.lifecycle_in(n, settings(rounds=rounds, lifecycle_rounds=share))]
    assert len(chosen) == share
    if share > 1:
        assert chosen[-1] >= rounds - rounds // share - 1  # not all at the start
    assert hop.lifecycle_in(-1, settings(lifecycle_rounds=share)) == (share > 0)


def test_lifecycle_table_says_n_a_for_a_figure_it_did_not_measure() -> None:
    results = {"standalone": {hop.CREATE: summarize([5.0]), hop.WARM_RESUME: summarize([1.0])}}
    text = hop.lifecycle_table(results, "n/a (no --warm-pool in this build)")
    assert "| create (warm pool) | n/a | n/a |" in text.splitlines()
    assert "| warm resume | 1.000 | 1.000 |" in text.splitlines()
    assert text.endswith("create (warm pool): n/a (no --warm-pool in this build)")


def test_results_are_written_timestamped_and_as_latest(tmp_path: Path) -> None:
    written = report.write_json({"samples": {"a": [1.0]}}, "hop-mock", "20260101T000000Z",
                                tmp_path)
    assert written.path == tmp_path / "hop-mock-20260101T000000Z.json"
    assert json.loads(written.latest.read_text()) == {"samples": {"a": [1.0]}}


def test_chart_is_a_png_with_a_panel_per_metric(tmp_path: Path) -> None:
    written = report.write_chart({"standalone": {"TTFT": [1.0, 2.0]},
                                  "gateway+runner": {"TTFT": [2.0, 3.0], "total": [4.0]}},
                                 "title", "hop-mock", "20260101T000000Z", tmp_path)
    assert written is not None
    assert written.latest.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_chart_without_matplotlib_says_so_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert report.write_chart({"a": {"TTFT": [1.0]}}, "t", "hop", "x", tmp_path) is None
    assert "matplotlib is not installed" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_progress_rewrites_one_line_and_clears_it() -> None:
    stream = io.StringIO()
    progress = report.Progress(stream)
    progress.update("round 1/50")
    progress.done()
    assert stream.getvalue().startswith("\r\x1b[2K[")
    assert "round 1/50" in stream.getvalue()
    assert stream.getvalue().endswith("\r\x1b[2K")


def test_machine_header_names_the_versions_that_matter() -> None:
    lines = "\n".join(report.machine().lines())
    for name in ("cores", "GiB RAM", "kernel", "Python", "h2", "hypercorn", "grpcio",
                 "claude-agent-sdk", "cgroup"):
        assert name in lines


def test_an_unknown_flag_is_detected_from_help() -> None:
    assert deploy.supports_flag("bench.hop", "--http1")
    assert not deploy.supports_flag("bench.hop", "--no-such-flag")


def run_hop(results: Path, *args: str) -> tuple[str, dict]:
    """`python -m bench.hop` as a subprocess against real processes: its stdout and JSON."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.hop", "--warm-pool", "0", "--results-dir", str(results),
         *args], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    agent = "claude" if "claude" in args else "mock"
    return done.stdout, json.loads((results / f"hop-{agent}-latest.json").read_text())


@pytest.mark.parametrize("client", [[], ["--http1", "--lifecycle-rounds", "0"]],
                         ids=["h2", "http1"])
def test_a_short_real_run_writes_samples_of_both_configurations_and_a_chart(
    tmp_path: Path, client: list[str]
) -> None:
    stdout, data = run_hop(tmp_path, "--rounds", "2", "--warmup", "1", "--turns", "2", *client)
    assert "### Overhead (gateway+runner minus standalone)" in stdout
    for config in ("standalone", "gateway+runner"):
        assert len(data["samples"][config][hop.CREATE]) == 2
        assert len(data["samples"][config][hop.TTFT]) == 4
        assert len(data["samples"][config][hop.TOTAL]) == 4
        assert data["summaries"][config][hop.TTFT]["n"] == 4
        if not client:
            assert len(data["samples"][config][hop.COLD_RESUME]) == 2
        breakdown = data["breakdown"][config]
        assert (breakdown["complete_turns"], breakdown["incomplete_turns"]) == (4, 0)
    assert "runner.received" in data["breakdown"]["gateway+runner"]["points"]
    assert "### Per-hop breakdown of the first token's path" in stdout
    assert data["settings"]["http"] == ("HTTP/1.1" if client else "HTTP/2")
    assert (tmp_path / "hop-mock-latest.png").stat().st_size > 0


class FakeGateway:
    """A `BenchClient` whose warm pool serves creates only when told to."""

    def __init__(self, serves: bool) -> None:
        self.serves = serves
        self.pool = {"size": 2, "ready": 2, "starting": 0, "served": 0}

    def call(self, method: str, path: str, payload: object = None) -> tuple[int, object]:
        if path == "/health":
            return 200, {"sandboxes": {"live": 0, "busy": 0}, "warmPool": dict(self.pool)}
        if method == "POST":
            self.pool["served"] += self.serves
            return 201, {"session": {"id": "s1"}}
        return 200, {"session": {"id": "s1"}}

    def turn(self, session_id: str, body: dict) -> turn_client.TurnTiming:
        raise AssertionError("no turns here")

    def close(self) -> None:
        pass


def fake_target(client: FakeGateway) -> hop.Target:
    return hop.Target(hop.STANDALONE, deploy.Deployment("fake"), client)


def test_a_warm_create_is_timed_when_the_pool_served_it() -> None:
    target = fake_target(FakeGateway(serves=True))
    hop.warm_create_round(target, settings())
    assert len(target.samples[hop.WARM_CREATE]) == 1


def test_a_create_the_warm_pool_did_not_serve_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="not served from the warm pool"):
        hop.warm_create_round(fake_target(FakeGateway(serves=False)), settings())


def test_a_short_real_sdk_run_times_the_model_output_against_the_stub(tmp_path: Path) -> None:
    stdout, data = run_hop(tmp_path, "--agent", "claude", "--rounds", "1", "--warmup", "0",
                           "--turns", "2", "--lifecycle-rounds", "0")
    assert "| first model output |" in stdout
    for config in ("standalone", "gateway+runner"):
        assert len(data["samples"][config][hop.TTFT]) == 2
        assert len(data["samples"][config][hop.FIRST_OUTPUT]) == 2
        assert len(data["samples"][config][hop.OVERHEAD]) == 2
