"""OpenTelemetry tracing, on only when OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) is set.

Then the server gets OpenTelemetry's gRPC server interceptor (a span per
RPC, continuing the caller's W3C `traceparent`), asyncpg is instrumented (a
span per SQL statement) and `span("embedding")` marks the model step;
spans leave in batches over OTLP/HTTP (protobuf), configured by the
standard OTEL_* variables (OTEL_SERVICE_NAME, OTEL_EXPORTER_OTLP_HEADERS,
...). Unset, nothing here is imported beyond this module and span() is a
null context: no tracing cost.

The packages are the `tracing` extra (pip install 'faraday-memory-service[tracing]'):
their instrumentations are beta, and they patch asyncpg process-wide, so
they stay out of installs that do not trace.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")

# The tracer of span(), while tracing is on.
_tracer: Any = None


@dataclass
class Tracing:
    """Tracing of a running server: its interceptor goes first, shutdown() flushes and undoes."""

    interceptor: Any  # a grpc.aio.ServerInterceptor
    _provider: Any

    def force_flush(self, timeout_millis: int = 5000) -> bool:
        return bool(self._provider.force_flush(timeout_millis))

    def shutdown(self) -> None:
        global _tracer
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

        _tracer = None
        AsyncPGInstrumentor().uninstrument()  # type: ignore[no-untyped-call]
        self._provider.shutdown()


def wanted(environ: dict[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return any(env.get(name) for name in ENDPOINT_VARIABLES)


def start(service_name: str = "faraday-memory") -> Tracing | None:
    """Tracing as the environment configures it, or None when no endpoint is set.

    ValueError when an endpoint is set but the `tracing` extra is missing.
    """
    global _tracer
    if not wanted():
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
        from opentelemetry.instrumentation.grpc import aio_server_interceptor
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise ValueError(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set, but the tracing packages are not installed:"
            " pip install 'faraday-memory-service[tracing]'"
        ) from exc
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, when set, win over the default name.
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    # Not the global provider: it can be set once per process, and tests start
    # and stop servers; every instrumentation here is handed this one.
    instrumentor = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()  # a previous server's provider
    instrumentor.instrument(tracer_provider=provider)
    _tracer = provider.get_tracer("memory_service")
    interceptor = aio_server_interceptor(tracer_provider=provider)  # type: ignore[no-untyped-call]
    return Tracing(interceptor, provider)


def span(name: str) -> contextlib.AbstractContextManager[Any]:
    """A child span of the current one while tracing is on; else a no-op."""
    tracer = _tracer
    if tracer is None:
        return contextlib.nullcontext()
    return tracer.start_as_current_span(name)  # type: ignore[no-any-return]


def current_trace_id() -> str:
    """The current span's trace id in hex, or "" (tracing off, or no span)."""
    if _tracer is None:
        return ""
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else ""
