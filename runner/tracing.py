"""OpenTelemetry traces, off by default and free when off.

On when the process starts with `ASH_TRACING=1`, `OTEL_TRACES_EXPORTER` set (to
`otlp` or `console`) or `OTEL_EXPORTER_OTLP_ENDPOINT` set. `ENABLED` is decided once at
import; call sites check it (or `tracer() is None`) once per request, so with tracing
off no OpenTelemetry module is even imported and no no-op span is made.

The OpenTelemetry packages are the optional extra `otel`, imported only here and only
when tracing is on. Export is OTLP over HTTP/protobuf (no second gRPC stack beside the
runner's own, and the collector default port 4318 works for Jaeger and Tempo alike).

Used by both processes: the gateway and the runner each call `setup` with their own
service name. The parent of a span that starts a process's part of a trace comes from a
`traceparent` (`wire.traceparent`): malformed ones are ignored, starting a new trace.
"""

from __future__ import annotations

import os
from typing import Any

from wire import traceparent as tp

ENABLED: bool = (
    os.environ.get("ASH_TRACING", "") not in ("", "0")
    or os.environ.get("OTEL_TRACES_EXPORTER", "") in ("otlp", "console")
    or bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
)

_tracer: Any = None


def setup(service: str, exporter: Any = None) -> Any:
    """Install a tracer provider for `service` (idempotent per process); returns the
    tracer. `exporter` overrides the one the environment picks (tests pass an
    in-memory exporter)."""
    global _tracer
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        provider.add_span_processor(BatchSpanProcessor(_env_exporter()))
    _tracer = trace.get_tracer("ash", tracer_provider=provider)
    return _tracer


def _env_exporter() -> Any:
    if os.environ.get("OTEL_TRACES_EXPORTER") == "console" or not os.environ.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter
        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    return OTLPSpanExporter()


def tracer() -> Any:
    """The process's tracer, or None when tracing is off (or not set up)."""
    return _tracer


def parent_context(header: str | bytes | None) -> Any:
    """An OpenTelemetry context whose parent is `header`'s span, or None (a new trace)
    when the header is missing or malformed."""
    parent = tp.parse(header)
    if parent is None:
        return None
    from opentelemetry import trace
    span_context = trace.SpanContext(parent.trace_id, parent.span_id, is_remote=True,
                                     trace_flags=trace.TraceFlags(parent.flags & 0x01))
    return trace.set_span_in_context(trace.NonRecordingSpan(span_context))


def start_span(name: str, parent: Any = None, header: str | bytes | None = None,
               **attributes: Any) -> Any:
    """Start (not enter) a span under `parent` (a span), else under `header`'s
    context, else as a new trace. Only call with tracing set up."""
    from opentelemetry import trace
    context = trace.set_span_in_context(parent) if parent is not None \
        else parent_context(header)
    return _tracer.start_span(name, context=context, attributes=attributes or None)


def header_of(span: Any) -> str:
    """The `traceparent` that makes `span` the parent of a span in another process."""
    context = span.get_span_context()
    return tp.TraceParent(context.trace_id, context.span_id, int(context.trace_flags)).header()
