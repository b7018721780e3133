"""`clew.instrument()`: one call to trace a Python service with OpenTelemetry and send the spans to clew.

    from clew import instrument
    instrument(service_name="checkout", service_version="1.5.0", environment="prod",
               endpoint="http://127.0.0.1:4318")

Sets up the SDK the way the OpenTelemetry docs recommend (resource, batch processor, OTLP exporter,
W3C propagation, parent-based sampling), instruments the libraries that are installed and ships the
`logging` records with the ids of the span they were written in. Exporting never raises into the
application: when clew is unreachable the SDK logs and drops. See docs/instrumenting.md.
"""

from __future__ import annotations

import functools
import logging
import logging.config
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from types import FrameType
from typing import Any, Literal, ParamSpec, TypeVar

from opentelemetry import _logs, propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
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


def _log_exporter(endpoint: str, protocol: str, headers: dict[str, str] | None) -> LogRecordExporter:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter

        return GrpcLogExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"), headers=headers)
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter

    # the endpoint may name the traces path (accepted above): logs go beside it
    base = endpoint.rstrip("/").removesuffix("/v1/traces")
    return HttpLogExporter(endpoint=f"{base}/v1/logs", headers=headers)


# The exporters' own loggers (the SDK and its exporters, requests and urllib3 under OTLP/HTTP, grpc):
# shipping what they log about an export would cause another export, for ever.
_EXPORTER_LOGGERS = ("opentelemetry", "urllib3", "requests", "grpc")
# LoggingInstrumentor's additions to every record, for log formats; the shipped record carries the ids
_INJECTED = ("otelTraceID", "otelSpanID", "otelTraceSampled", "otelServiceName")


def _ships(record: logging.LogRecord) -> bool:
    """Not from an exporter's logger, nor written while the SDK exports: its batch processors
    suppress instrumentation around every export, which catches whatever library an exporter calls
    (and so drops records an app writes while it suppresses instrumentation itself)."""
    name = record.name
    if any(name == prefix or name.startswith(prefix + ".") for prefix in _EXPORTER_LOGGERS):
        return False
    return is_instrumentation_enabled()


class _ShippingHandler(LoggingHandler):
    """OpenTelemetry's logging handler, fit to sit on the root logger: it leaves out what would feed
    back into it (`_ships`), adds where the record was written (code.* attributes), and a failure in
    it is reported the way `logging`'s own handlers do, never raised into the code that logged."""

    def __init__(self, provider: LoggerProvider, level: int) -> None:
        super().__init__(level=level, logger_provider=provider, log_code_attributes=True)
        self.addFilter(_ships)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            super().emit(record)
        except Exception:
            self.handleError(record)

    def _get_attributes(self, record: logging.LogRecord) -> tuple[dict[str, Any], str | None]:
        attributes, event_name = super()._get_attributes(record)
        for key in _INJECTED:
            attributes.pop(key, None)
        return attributes, event_name


# the one shipping handler on the root logger; a later instrument() replaces it (two would ship each
# record twice)
_handler: _ShippingHandler | None = None

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _our_handler_aside(configure: Callable[_P, _R]) -> Callable[_P, _R]:
    @functools.wraps(configure)
    def configure_without_it(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        root = logging.getLogger()
        held = _handler if _handler in root.handlers else None
        if held is not None:
            root.removeHandler(held)
        try:
            return configure(*args, **kwargs)
        finally:
            if held is not None:
                root.addHandler(held)

    return configure_without_it


_config_guarded = False


def _guard_logging_config() -> None:
    """`logging.basicConfig()` does nothing while the root logger has a handler, and `dictConfig` and
    `fileConfig` remove the root's handlers: an app that configures its logging after instrument()
    would silently lose its console output, or its logs in clew. So each runs with our handler set
    aside (OpenTelemetry's logging instrumentation does the same for its handler)."""
    global _config_guarded
    if not _config_guarded:
        _config_guarded = True
        # (basicConfig's stubs are overloads, which a ParamSpec keeps only as one signature)
        logging.basicConfig = _our_handler_aside(logging.basicConfig)  # type: ignore[assignment]
        logging.config.dictConfig = _our_handler_aside(logging.config.dictConfig)
        logging.config.fileConfig = _our_handler_aside(logging.config.fileConfig)


def _ship_logs(provider: LoggerProvider | None, level: int) -> _ShippingHandler | None:
    """Puts the shipping handler on the root logger in place of any earlier one (None: takes it off)."""
    global _handler
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
        _handler = None
    if provider is not None:
        _handler = _ShippingHandler(provider, level)
        root.addHandler(_handler)
        _guard_logging_config()
    return _handler


class _LogsAlongside(SpanProcessor):
    """Flushes and shuts down the logs with the spans: the TracerProvider instrument() returns is what
    apps already flush on exit (`provider.shutdown()`), and that one call now sends the last logs too."""

    def __init__(self, logs: LoggerProvider, handler: logging.Handler | None) -> None:
        self.logs, self.handler = logs, handler

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.logs.force_flush(timeout_millis)

    def shutdown(self) -> None:
        if self.handler is not None:  # first: nothing more goes to a pipeline that is shutting down
            logging.getLogger().removeHandler(self.handler)
        self.logs.shutdown()


def _level(level: int | str | None) -> int:
    if level is None:
        return logging.NOTSET
    if isinstance(level, str):
        number = logging.getLevelName(level.strip().upper())
        if not isinstance(number, int):
            raise ValueError(f"log_level must be a logging level such as 'INFO', got {level!r}")
        return number
    return level


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

        # trace and span ids on every log record (otelTraceID, otelSpanID), for log formats; its own
        # handler stays off: instrument() ships logs with one of its own (_ShippingHandler)
        if not LoggingInstrumentor().is_instrumented_by_opentelemetry:
            LoggingInstrumentor().instrument(
                set_logging_format=False, inject_trace_context=True, enable_log_auto_instrumentation=False
            )
        done.append("logging")
    except ImportError:
        pass
    return done


def _flush_on_sigterm(provider: TracerProvider) -> None:
    """Flush the spans and logs still queued when SIGTERM ends the process, then end it by the signal
    as before. The SDK flushes at exit, but a process that SIGTERM ends (`docker stop`, Kubernetes;
    uvicorn raises the signal again once it has shut down) skips exit handlers, and its last batches
    were lost. Only where SIGTERM has no handler of the application's, and from the main thread
    (the only one that can set one)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        provider.shutdown()
        signal.raise_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)


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
    logs: bool = True,
    log_level: int | str | None = logging.INFO,
) -> TracerProvider:
    """Trace this process and send its spans and logs to clew; returns the TracerProvider, whose
    `force_flush()` and `shutdown()` flush the logs as well. Both are flushed at exit, and on SIGTERM
    when the application has no handler of its own for it.

    `endpoint` defaults to `OTEL_EXPORTER_OTLP_ENDPOINT` or clew on this machine (4318 for HTTP,
    4317 for gRPC). `sample_ratio` applies to traces this service starts; otherwise the caller's
    decision is followed (parent-based), so a trace is never cut in the middle. With `logs`, a
    handler on the root logger ships the records of `log_level` and above (None: all) that the
    loggers let through, each with the trace and span it was written in; the LoggerProvider is set
    as the global one (`opentelemetry._logs.get_logger_provider()`; once per process, like the
    TracerProvider).
    """
    level = _level(log_level)
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
    resource = Resource.create(attributes)
    provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(sample_ratio)))
    exporter = _exporter(endpoint, protocol, headers)
    if not asgi_event_spans:
        exporter = _WithoutAsgiEvents(exporter)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=export_delay_ms))
    if logs:
        logger_provider = LoggerProvider(resource=resource)
        logger_provider.add_log_record_processor(
            BatchLogRecordProcessor(
                _log_exporter(endpoint, protocol, headers), schedule_delay_millis=export_delay_ms
            )
        )
        _logs.set_logger_provider(logger_provider)  # set once per process, as the TracerProvider is
        provider.add_span_processor(_LogsAlongside(logger_provider, _ship_logs(logger_provider, level)))
    else:
        _ship_logs(None, logging.NOTSET)
    trace.set_tracer_provider(provider)
    _flush_on_sigterm(provider)
    propagate.set_global_textmap(_propagators(b3))
    libraries = _instrument_libraries(skip_libraries)
    shipped = logging.getLevelName(level) if logs else "off"
    log.debug(
        "clew.instrument: %s -> %s (%s); %s; logs %s", service_name, endpoint, protocol, libraries, shipped
    )
    return provider
