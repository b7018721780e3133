"""`clew.instrument()`: one call to trace a Python service with OpenTelemetry and send the spans to clew.

    from clew import instrument
    instrument(service_name="checkout", service_version="1.5.0", environment="prod",
               endpoint="http://127.0.0.1:4318")

Sets up the SDK the way the OpenTelemetry docs recommend (resource, batch processor, OTLP exporter,
W3C propagation, parent-based sampling) and instruments the libraries that are installed. Exporting
never raises into the application: when clew is unreachable the SDK logs and drops. See
docs/instrumenting.md.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from opentelemetry import propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger(__name__)

# (module to import, instrumentor class path): each is used only when its library is installed
_LIBRARIES = [
    ("httpx", "opentelemetry.instrumentation.httpx:HTTPXClientInstrumentor"),
    ("requests", "opentelemetry.instrumentation.requests:RequestsInstrumentor"),
    ("sqlite3", "opentelemetry.instrumentation.sqlite3:SQLite3Instrumentor"),
    ("sqlalchemy", "opentelemetry.instrumentation.sqlalchemy:SQLAlchemyInstrumentor"),
    ("starlette", "opentelemetry.instrumentation.starlette:StarletteInstrumentor"),
    ("fastapi", "opentelemetry.instrumentation.fastapi:FastAPIInstrumentor"),
]


class _WithoutAsgiEvents(SpanExporter):
    """Drops the ASGI instrumentation's per-message `http send`/`http receive` spans: two or three
    per request, they double a trace's size and say nothing the server span does not."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        kept = [s for s in spans if not (s.attributes and "asgi.event.type" in s.attributes)]
        return self.inner.export(kept) if kept else SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def _exporter(endpoint: str, protocol: str, headers: dict[str, str] | None) -> SpanExporter:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"), headers=headers)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    url = endpoint.rstrip("/")
    return HttpExporter(endpoint=url if url.endswith("/v1/traces") else f"{url}/v1/traces", headers=headers)


def _propagators(b3: bool) -> TextMapPropagator:
    chosen: list[TextMapPropagator] = [TraceContextTextMapPropagator(), W3CBaggagePropagator()]
    if b3:
        from opentelemetry.propagators.b3 import B3MultiFormat

        chosen.append(B3MultiFormat())
    return CompositePropagator(chosen)


def _instrument_libraries(skip: Iterable[str]) -> list[str]:
    import importlib
    import importlib.util

    done = []
    for module, target in _LIBRARIES:
        if module in skip or importlib.util.find_spec(module) is None:
            continue
        path, _, name = target.partition(":")
        try:
            instrumentor = getattr(importlib.import_module(path), name)()
        except ImportError:
            continue  # the library is here but its OpenTelemetry instrumentation is not
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument()
        done.append(module)
    try:
        from opentelemetry.instrumentation.logging import LoggingInstrumentor

        # trace and span ids on every log record (otelTraceID, otelSpanID), for logs joined to traces
        if not LoggingInstrumentor().is_instrumented_by_opentelemetry:
            LoggingInstrumentor().instrument(set_logging_format=False, inject_trace_context=True)
        done.append("logging")
    except ImportError:
        pass
    return done


def instrument(
    service_name: str,
    service_version: str | None = None,
    environment: str | None = None,
    endpoint: str | None = None,
    protocol: Literal["http", "grpc"] = "http",
    sample_ratio: float = 1.0,
    b3: bool = False,
    resource_attributes: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    skip_libraries: Iterable[str] = (),
    export_delay_ms: int = 1000,
    asgi_event_spans: bool = False,
) -> TracerProvider:
    """Trace this process and send its spans to clew; returns the provider (flush it on exit).

    `endpoint` defaults to `OTEL_EXPORTER_OTLP_ENDPOINT` or clew on this machine (4318 for HTTP,
    4317 for gRPC). `sample_ratio` applies to traces this service starts; otherwise the caller's
    decision is followed (parent-based), so a trace is never cut in the middle.
    """
    if not 0.0 <= sample_ratio <= 1.0:
        raise ValueError(f"sample_ratio must be between 0 and 1, got {sample_ratio}")
    if protocol not in ("http", "grpc"):
        raise ValueError(f"protocol must be 'http' or 'grpc', got {protocol!r}")
    endpoint = (
        endpoint
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or ("http://127.0.0.1:4317" if protocol == "grpc" else "http://127.0.0.1:4318")
    )
    attributes: dict[str, Any] = {"service.name": service_name, "host.name": socket.gethostname()}
    if service_version:
        attributes["service.version"] = service_version
    if environment:
        attributes["deployment.environment"] = environment
        attributes["deployment.environment.name"] = environment
    attributes.update(resource_attributes or {})
    provider = TracerProvider(
        resource=Resource.create(attributes), sampler=ParentBased(TraceIdRatioBased(sample_ratio))
    )
    exporter = _exporter(endpoint, protocol, headers)
    if not asgi_event_spans:
        exporter = _WithoutAsgiEvents(exporter)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=export_delay_ms))
    trace.set_tracer_provider(provider)
    propagate.set_global_textmap(_propagators(b3))
    libraries = _instrument_libraries(skip_libraries)
    log.debug("clew.instrument: %s -> %s (%s); instrumented %s", service_name, endpoint, protocol, libraries)
    return provider
