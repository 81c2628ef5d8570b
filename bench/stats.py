"""Summaries and tables shared by every benchmark: one definition of p50/p95/p99.

Percentiles use the nearest-rank method on the sorted samples (no interpolation),
so every reported figure is a value that was actually measured.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass


class NoSamples(ValueError):
    """A figure had no samples: the bench measured nothing and must say so, not print 0."""


@dataclass(frozen=True, slots=True)
class Summary:
    n: int
    p50: float
    p95: float
    p99: float
    mean: float
    min: float
    max: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def minus(self, other: Summary) -> Summary:
        """The per-statistic difference (self - other): the overhead table's rows."""
        return Summary(n=min(self.n, other.n), p50=self.p50 - other.p50,
                       p95=self.p95 - other.p95, p99=self.p99 - other.p99,
                       mean=self.mean - other.mean, min=self.min - other.min,
                       max=self.max - other.max)


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted samples; `fraction` in [0, 1]."""
    if not ordered:
        raise NoSamples("percentile of no samples")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction {fraction} is outside [0, 1]")
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def summarize(values: Iterable[float], scale: float = 1.0) -> Summary:
    """p50/p95/p99/mean/min/max of `values`, each multiplied by `scale` (e.g. 1000 for s → ms)."""
    ordered = sorted(v * scale for v in values)
    if not ordered:
        raise NoSamples("no samples to summarize")
    if any(not math.isfinite(v) for v in ordered):
        raise ValueError("a sample is not a finite number")
    return Summary(n=len(ordered), p50=percentile(ordered, 0.50),
                   p95=percentile(ordered, 0.95), p99=percentile(ordered, 0.99),
                   mean=statistics.fmean(ordered), min=ordered[0], max=ordered[-1])


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub markdown table; the first column is left-aligned, the rest right-aligned."""
    lines = ["| " + " | ".join(headers) + " |",
             "|---|" + "---:|" * (len(headers) - 1)]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"row {row!r} has {len(row)} cells, want {len(headers)}")
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return "\n".join(lines)


def ms(value: float, signed: bool = False) -> str:
    """A millisecond figure for a table: three decimals below 10 ms, one above."""
    digits = 3 if abs(value) < 10 else 1
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
