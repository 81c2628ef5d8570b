"""Traces: W3C trace context parsing, parenting across processes, and zero cost when off."""

from __future__ import annotations

import subprocess
import sys

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from runner import tracing
from wire import traceparent as tp

GOOD = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.mark.parametrize("bad", [
    None, "", "garbage", GOOD.upper(), "ff" + GOOD[2:], GOOD + "-x",
    "00-" + "0" * 32 + "-00f067aa0ba902b7-01", "00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16
    + "-01", "\u00e9" * 55, b"\xff" * 55, "x" * 10_000,
])
def test_a_malformed_traceparent_is_ignored(bad: str | bytes | None) -> None:
    assert tp.parse(bad) is None


def test_a_valid_traceparent_round_trips() -> None:
    parsed = tp.parse(GOOD.encode())
    assert parsed is not None and parsed.header() == GOOD


@pytest.mark.timeout(30)
def test_a_span_from_a_traceparent_joins_its_trace_and_a_hostile_one_starts_a_new_trace() -> None:
    exporter = InMemorySpanExporter()
    tracing.setup("test", exporter)
    tracing.start_span("hop", header=GOOD).end()
    tracing.start_span("hostile", header="00-zz").end()
    hop, hostile = exporter.get_finished_spans()
    assert hop.context.trace_id == 0x4bf92f3577b34da6a3ce929d0e0e4736
    assert hop.parent is not None and hop.parent.span_id == 0x00f067aa0ba902b7
    assert hostile.parent is None and hostile.context.trace_id != hop.context.trace_id
    child = tracing.start_span("child", header=tracing.header_of(
        tracing.start_span("root")))
    child.end()
    assert exporter.get_finished_spans()[-1].parent is not None


@pytest.mark.timeout(60)
def test_with_tracing_off_no_opentelemetry_module_is_imported() -> None:
    code = ("import sys, gateway.app, gateway.cli, runner.cli, runner.grpc_server, runner.tracing\n"
            "assert not runner.tracing.ENABLED and runner.tracing.tracer() is None\n"
            "print([m for m in sys.modules if m.startswith('opentelemetry')])")
    env = {k: v for k, v in __import__("os").environ.items()
           if not k.startswith("OTEL_") and k != "ASH_TRACING"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=50, check=True)
    assert out.stdout.strip() == "[]"
