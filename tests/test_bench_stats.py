"""The bench's statistics: a figure the bench prints is a value it measured."""

import pytest

from bench.stats import NoSamples, markdown_table, ms, percentile, summarize


def test_nearest_rank_percentiles_pick_measured_samples() -> None:
    values = [float(v) for v in range(1, 101)]
    summary = summarize(reversed(values))
    assert (summary.p50, summary.p95, summary.p99) == (50.0, 95.0, 99.0)
    assert (summary.min, summary.max, summary.n) == (1.0, 100.0, 100)
    assert summary.mean == pytest.approx(50.5)


def test_a_single_sample_is_every_percentile() -> None:
    summary = summarize([0.004], scale=1000)
    assert summary.p50 == summary.p99 == summary.mean == pytest.approx(4.0)


def test_p99_of_small_samples_is_the_maximum() -> None:
    assert percentile([1.0, 2.0, 3.0], 0.99) == 3.0
    assert percentile([1.0, 2.0, 3.0], 0.0) == 1.0


def test_no_samples_is_an_error_not_a_zero() -> None:
    with pytest.raises(NoSamples):
        summarize([])


def test_a_non_finite_sample_is_rejected() -> None:
    with pytest.raises(ValueError):
        summarize([1.0, float("nan")])


def test_overhead_is_the_difference_per_statistic() -> None:
    via_runner = summarize([3.0, 4.0, 5.0])
    standalone = summarize([1.0, 1.5, 2.0])
    overhead = via_runner.minus(standalone)
    assert overhead.p50 == pytest.approx(2.5)
    assert overhead.mean == pytest.approx(2.5)


def test_markdown_table_rejects_a_ragged_row() -> None:
    assert markdown_table(["figure", "p50"], [["TTFT", ms(1.23456)]]).splitlines() == [
        "| figure | p50 |", "|---|---:|", "| TTFT | 1.235 |"]
    with pytest.raises(ValueError):
        markdown_table(["figure", "p50"], [["TTFT"]])


def test_signed_milliseconds_show_their_sign() -> None:
    assert ms(0.25, signed=True) == "+0.250"
    assert ms(-12.34, signed=True) == "-12.3"
