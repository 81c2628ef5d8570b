"""bench.load: its /proc parsing, its arithmetic, its flags, and one real run."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.load import (
    CLK_TCK,
    PAGE_KIB,
    CpuSnapshot,
    IdleResult,
    ProcStat,
    StepResult,
    TurnSample,
    aggregate_streaming,
    descendants,
    host_busy_seconds,
    ladder_tables,
    meminfo_used_kib,
    parse_ladder,
    parse_stat,
    per_thousand,
    start_offsets,
    status_kib,
)
from bench.stats import NoSamples

ROOT = Path(__file__).resolve().parent.parent
# A real /proc/<pid>/stat line whose command name holds a space and a parenthesis.
STAT = ("4242 (python3 (bridge)) S 4200 4242 4200 0 -1 4194560 1234 0 0 0 "
        "250 75 30 20 20 0 3 0 123456 220000000 6400 18446744073709551615 "
        "1 1 0 0 0 0 0 16781312 2 0 0 0 17 1 0 0 0 0 0")


def test_stat_parsing_takes_own_utime_plus_stime_not_children() -> None:
    stat = parse_stat(STAT)
    assert (stat.pid, stat.ppid) == (4242, 4200)
    assert stat.cpu_seconds == pytest.approx((250 + 75) / CLK_TCK)
    assert stat.rss_kib == 6400 * PAGE_KIB


def test_status_figures_are_read_in_kib() -> None:
    status = "Name:\tpython\nVmPeak:\t  300000 kB\nVmHWM:\t   54164 kB\nVmRSS:\t   50000 kB\n"
    assert status_kib(status, "VmHWM") == 54164
    assert status_kib(status, "VmRSS") == 50000
    with pytest.raises(KeyError):
        status_kib(status, "Pss")


def test_host_memory_used_is_total_minus_available() -> None:
    meminfo = "MemTotal:       24683520 kB\nMemFree:  100 kB\nMemAvailable:   24253440 kB\n"
    assert meminfo_used_kib(meminfo) == 24683520 - 24253440


def test_host_busy_cpu_leaves_out_idle_and_iowait() -> None:
    stat = "cpu  100 5 50 1000 40 3 2 1 0 0\ncpu0 50 2 25 500 20 1 1 0 0 0\n"
    assert host_busy_seconds(stat) == pytest.approx((100 + 5 + 50 + 3 + 2 + 1) / CLK_TCK)


def test_cpu_of_other_users_is_the_host_busy_time_not_ours() -> None:
    cpu = CpuSnapshot(gateway=1.0, runner=0.5, sandboxes=1.0, client=0.5, host_busy=5.0)
    assert cpu.others == pytest.approx(2.0)
    assert CpuSnapshot(1.0, None, 1.0, 1.0, host_busy=2.0).others == 0.0


def test_descendants_walk_the_whole_tree_below_the_owner() -> None:
    table = {pid: ProcStat(pid, ppid, 0.0, 0) for pid, ppid in
             ((10, 1), (11, 10), (12, 11), (13, 12), (20, 1), (21, 20))}
    assert sorted(p.pid for p in descendants(table, 10)) == [11, 12, 13]
    assert descendants(table, 13) == []


def test_cpu_per_thousand_events() -> None:
    assert per_thousand(1.5, 30_000) == pytest.approx(0.05)
    assert per_thousand(0.0, 10) == 0.0


def test_cpu_per_thousand_events_of_no_events_is_an_error() -> None:
    with pytest.raises(NoSamples):
        per_thousand(1.0, 0)


def test_ladder_flag_keeps_the_given_rungs() -> None:
    assert parse_ladder("1,10,50,100,200,1000") == [1, 10, 50, 100, 200, 1000]
    assert parse_ladder(" 2 , 1 ") == [2, 1]


@pytest.mark.parametrize("text", ["", "1,x", "0,10", "10,-1", ","])
def test_ladder_flag_rejects_what_is_not_positive_integers(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_ladder(text)


def test_first_turns_are_spread_evenly_or_sent_at_once() -> None:
    assert start_offsets(4, 1.0) == [0.0, 0.25, 0.5, 0.75]
    assert start_offsets(3, 0.0) == [0.0, 0.0, 0.0]


def test_streaming_figures_subtract_the_configured_first_token_delay() -> None:
    step = StepResult(config="standalone", sessions=2)
    samples = [TurnSample(ttft=0.102, events=23), TurnSample(ttft=0.104, events=23),
               TurnSample(ttft=0.110, events=23), TurnSample(ttft=0.101, events=23)]
    cpu = CpuSnapshot(gateway=0.46, runner=None, sandboxes=0.092, client=1.0)
    aggregate_streaming(step, samples, delay_ms=100.0, cpu=cpu, seconds=2.0)
    assert step.ttft_ms is not None and step.overhead_ms is not None
    assert step.overhead_ms.p50 == pytest.approx(2.0)
    assert step.overhead_ms.p99 == pytest.approx(10.0)
    assert step.events == 92 and step.events_per_second == pytest.approx(46.0)
    assert step.per_1000_events["gateway"] == pytest.approx(5.0)
    assert step.per_1000_events["sandboxes"] == pytest.approx(1.0)
    assert "runner" not in step.per_1000_events
    assert step.client_core_share == pytest.approx(0.5) and not step.client_bound


def test_a_client_using_most_of_a_core_is_flagged() -> None:
    step = StepResult(config="runner", sessions=1)
    cpu = CpuSnapshot(gateway=0.1, runner=0.1, sandboxes=0.1, client=1.8)
    aggregate_streaming(step, [TurnSample(0.1, 10)], 100.0, cpu, seconds=2.0)
    assert step.client_bound
    assert step.per_1000_events["runner"] == pytest.approx(10.0)


def test_an_empty_step_raises_instead_of_reporting_zeros() -> None:
    step = StepResult(config="standalone", sessions=10)
    with pytest.raises(NoSamples):
        aggregate_streaming(step, [], 100.0, CpuSnapshot(1.0, None, 1.0, 1.0), seconds=1.0)


def test_cpu_deltas_keep_a_missing_runner_missing() -> None:
    later = CpuSnapshot(gateway=3.0, runner=None, sandboxes=5.0, client=2.0)
    delta = later.minus(CpuSnapshot(gateway=1.0, runner=None, sandboxes=4.5, client=0.5))
    assert delta == CpuSnapshot(gateway=2.0, runner=None, sandboxes=0.5, client=1.5)


def test_idle_memory_per_stream_needs_an_open_stream() -> None:
    held = IdleResult(config="standalone", requested=100, opened=100,
                      rss_before_kib=50_000, rss_after_kib=51_000)
    assert held.kib_per_stream == pytest.approx(10.0)
    with pytest.raises(NoSamples):
        _ = IdleResult(config="standalone", requested=100).kib_per_stream


def test_a_failed_rung_is_reported_with_its_phase() -> None:
    failed = StepResult(config="standalone", sessions=1000, created=611,
                        error="389 of 1000 creates failed", failed_phase="create")
    table = ladder_tables([failed])
    assert "| standalone | 1000 | create | 389 of 1000 creates failed |" in table


def test_a_real_run_writes_samples(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.load", "--config", "standalone", "--ladder", "1,2",
         "--turns", "1", "--idle", "10", "--first-token-ms", "5", "--token-interval-ms", "0",
         "--tokens", "3", "--json-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    payload = json.loads((tmp_path / "load-latest.json").read_text())
    steps = payload["steps"]
    assert [s["sessions"] for s in steps] == [1, 2]
    assert all(s["error"] is None for s in steps)
    assert [len(s["ttft_samples_ms"]) for s in steps] == [1, 2]
    assert all(s["events"] > 0 and s["memory"]["processes"] > 0 for s in steps)
    assert payload["idle"][0]["opened"] == 10
    assert "## Ladder" in result.stdout
