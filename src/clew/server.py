"""`clew serve`: every receiver and the http port on one asyncio loop, one writer thread, one store."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc as grpc_lib
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from clew.api.jaeger import TraceLogs, jaeger_routes
from clew.api.jaeger_v3 import jaeger_v3_routes
from clew.api.mcp import Sources, mcp_routes
from clew.api.native import DEFAULT_FULL_TRACE_SPANS, native_routes
from clew.api.tempo import metrics_routes, tempo_routes
from clew.assembly import Assembly, assemble, every
from clew.components.alerts import Alerts, Pipeline
from clew.components.base import Component
from clew.components.logs import Logs
from clew.components.red import Red
from clew.components.releases import Releases
from clew.components.servicegraph import ServiceGraph
from clew.config import Settings
from clew.core.errors import ClewError, ConfigError
from clew.core.identity import caller_of
from clew.core.language import QuerySyntaxError
from clew.core.limits import LimitsConfig
from clew.core.telemetry import OPENMETRICS, Metric, Sample, render
from clew.gateway.bodies import BodyBudget, BodyGuard
from clew.gateway.errors import Problem, handlers
from clew.gateway.fresh import FreshReads
from clew.gateway.hosts import LOOPBACK_NAMES, HostCheck
from clew.gateway.identity import IdentityMiddleware
from clew.gateway.keys import KEYS_FILE, FileKeyRing
from clew.gateway.limits import QueryGate, RequestSize, SpanRate, rate_limited
from clew.ingest.logged import LoggedWriter
from clew.ingest.wal import Wal, default_dir
from clew.ingest.writer import TELEMETRY as INGEST_TELEMETRY
from clew.ingest.writer import IngestStats, Writer, writer_metrics
from clew.receivers.otlp_grpc import grpc_server
from clew.receivers.otlp_http import otlp_http_app
from clew.receivers.zipkin import zipkin_app
from clew.store.instances import Instances
from clew.store.traces import TraceReader
from clew.web.app import SecurityHeaders, is_ui_path, not_found, ui_routes

log = logging.getLogger(__name__)


class PortRouter:
    """One uvicorn server on several sockets; the local port picks the application."""

    def __init__(self, apps: dict[int, ASGIApp]) -> None:
        self.apps = apps

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("server") or (None, None)
        app = self.apps.get(server[1]) if isinstance(server[1], int) else None
        if app is None:
            return
        await app(scope, receive, send)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: `serve()` installs handlers that stop everything."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets only when the listening
    # socket names its protocol, and without it every response waited ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


@dataclass(frozen=True, slots=True)
class Ports:
    otlp_grpc: int
    otlp_http: int
    zipkin: int
    http: int
    tempo: int

    def line(self) -> str:
        return (
            f"clew listening otlp-grpc={self.otlp_grpc} otlp-http={self.otlp_http} "
            f"zipkin={self.zipkin} http={self.http} tempo={self.tempo}"
        )


def _http_problem(request: Request, problem: Problem, exc: ClewError) -> Response:
    """Native endpoints answer `{"error": ...}` (with where a query failed to parse); Jaeger's answer
    in its envelope, as Jaeger UI and Grafana read them."""
    headers = dict(problem.headers)
    path = request.url.path
    if path.startswith("/api/v3/"):  # Jaeger's v3 gateway
        v3 = {"error": {"httpCode": problem.status, "message": problem.message}}
        return JSONResponse(v3, problem.status, headers=headers)
    if path.startswith("/api/") and not path.startswith("/api/v1/"):
        errors = [{"code": problem.status, "msg": problem.message}]
        body = {"data": None, "total": 0, "limit": 0, "offset": 0, "errors": errors}
        return JSONResponse(body, problem.status, headers=headers)
    extra: dict[str, object] = {}
    if isinstance(exc, QuerySyntaxError):
        extra = {"position": exc.position, "expected": exc.expected}
    return JSONResponse({"error": problem.message, **extra}, problem.status, headers=headers)


def _tempo_problem(request: Request, problem: Problem, exc: ClewError) -> Response:
    """Tempo answers errors as plain text, which Grafana shows as they are."""
    return PlainTextResponse(problem.message, problem.status, headers=dict(problem.headers))


def tempo_app(reader: TraceReader) -> Starlette:
    """The Tempo port (3200): Tempo's HTTP API for Grafana's Tempo data source."""

    async def missing(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("404 page not found", 404)

    return Starlette(
        routes=tempo_routes(reader),
        middleware=[Middleware(SecurityHeaders)],
        exception_handlers={**handlers(_tempo_problem), 404: missing},
    )


def http_app(
    reader: TraceReader,
    routes: list[BaseRoute],
    telemetry: list[Metric],
    metrics: Callable[[], list[Sample]],
    health: Callable[[], dict[str, object]] | None = None,
    full_trace_spans: int = DEFAULT_FULL_TRACE_SPANS,
    trace_logs: TraceLogs | None = None,
) -> Starlette:
    """The http port (16686): health, the native and Jaeger APIs, the components' routes, `/metrics`
    rendered from the declared telemetry, and the UI. `trace_logs` (tenant, trace id -> its log
    records) puts a trace's logs under its spans in Jaeger's trace view."""

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", **(health() if health is not None else {})})

    async def prometheus(request: Request) -> Response:
        caller = caller_of(request.scope)
        samples = [
            s
            for s in await asyncio.to_thread(metrics)
            # series of a tenant (RED) go to that tenant's callers only, every tenant to an admin key
            if caller.sees_every_tenant or s.labels.get("tenant", caller.tenant) == caller.tenant
        ]
        return Response(render(telemetry, samples), media_type=OPENMETRICS)

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/metrics", prometheus),
            *native_routes(reader, full_trace_spans),
            *jaeger_routes(reader, trace_logs),
            *jaeger_v3_routes(reader),
            *metrics_routes(reader, "/api/v1/metrics/query_range"),
            *routes,
            *ui_routes(),
        ],
        middleware=[Middleware(SecurityHeaders), Middleware(IdentityMiddleware)],
        exception_handlers={**handlers(_http_problem), 404: not_found},
    )


def pipeline_of(writer: IngestStats) -> Pipeline:
    """The alerts' view of the ingest writer (and of its log's commit lag)."""
    lag = writer.lag()[1] if isinstance(writer, LoggedWriter) else 0.0
    return Pipeline(writer.refused_spans, writer.failed_spans, lag)


def assembly_http_app(
    assembly: Assembly, writer: IngestStats | None = None, full_trace_spans: int = DEFAULT_FULL_TRACE_SPANS
) -> Starlette:
    """`http_app` over an assembly's reader and components (and the ingest writer's counters), with
    the MCP endpoint; its session manager is `app.state.mcp_sessions`, to run while serving."""
    telemetry = [*(INGEST_TELEMETRY if writer is not None else ()), *assembly.telemetry()]

    def metrics() -> list[Sample]:
        return [*(writer_metrics(writer) if writer is not None else ()), *assembly.metrics()]

    def health() -> dict[str, object]:
        """How far the committer is behind: acknowledged spans not yet queryable, and the age of
        the oldest (`/healthz`)."""
        health: dict[str, object] = {}
        if isinstance(writer, LoggedWriter):
            spans, age = writer.lag()
            health["ingest"] = {
                "uncommittedSpans": spans,
                "oldestUncommittedMs": round(age * 1000, 1),
                "inserts": writer.inserts,
                # inserts begun before their segment was sealed (their analysis hidden), and of
                # those, ended with nothing (no segment came for them in time)
                "begunInserts": writer.begun_inserts,
                "cancelledInserts": writer.cancelled_inserts,
            }
        if assembly.instances is not None:
            health["instance"] = {"name": assembly.instances.name, "leader": assembly.instances.leader}
        return health

    if writer is not None:
        assembly.component(Alerts).watch_pipeline(lambda: pipeline_of(writer))
    sources = Sources(
        assembly.reader,
        assembly.component(ServiceGraph).graph_dict,
        assembly.component(Red).timeline,
        assembly.component(Releases).compare,
        assembly.component(Alerts).alerts,
        assembly.component(Logs).trace_logs,
        assembly.component(Logs).search,
    )
    mcp, sessions = mcp_routes(sources)
    logs = assembly.component(Logs)
    app = http_app(
        assembly.reader,
        [*assembly.routes(), *mcp],
        telemetry,
        metrics,
        health,
        full_trace_spans,
        logs.trace_logs,
    )
    app.state.mcp_sessions = sessions
    return app


def ingest_writer(settings: Settings, assembly: Assembly) -> Writer | LoggedWriter:
    """The sink of the receivers: the write-ahead log and its committer (`wal_dir` "auto": in
    memory-backed storage, where there is some), or, with `wal_dir = "off"` or `fsync`, a writer that
    commits before answering (with `fsync`, into parts the engine has flushed to stable storage)."""
    directory = log_dir(settings)
    if directory is None or settings.fsync:
        return Writer(assembly.sink, settings.max_queue_spans, settings.max_batch_spans)
    return LoggedWriter(
        assembly.sink,
        Wal(directory, roll_spans=settings.commit_spans),
        settings.max_queue_spans,
        settings.commit_interval_ms / 1000,
        settings.commit_spans,
        idle_interval=settings.commit_idle_interval_ms / 1000,
        busy_spans=settings.commit_busy_spans,
        committers=settings.committers,
        memory_limit=settings.memory_limit_mib * 1024 * 1024,
        nice=settings.engine_nice,
    )


def log_dir(settings: Settings) -> Path | None:
    if settings.wal_dir == "auto":
        return default_dir(settings.data_dir)
    if settings.wal_dir and settings.wal_dir != "off":
        return Path(settings.wal_dir)
    return None


def replay_log(settings: Settings, assembly: Assembly) -> int:
    """Commit what a killed run acknowledged from the log (also when this run does not use one:
    a server restarted with `fsync` or without the log still owes those spans)."""
    directory = log_dir(settings) or default_dir(settings.data_dir)
    if directory is None or not directory.is_dir() or not any(directory.glob("*.wal")):
        return 0
    writer = LoggedWriter(assembly.sink, Wal(directory))
    spans = writer.replay()
    writer.close()
    return spans


async def _to_thread_to_the_end(fn: Callable[[int], None], arg: int) -> None:
    """`fn(arg)` in a thread; when cancelled, return only once the thread is done: a thread cannot be
    stopped, and the caller goes on to close the store that the work is using."""
    work = asyncio.ensure_future(asyncio.to_thread(fn, arg))
    try:
        await asyncio.shield(work)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await work
        raise


async def housekeeping(
    components: list[tuple[Component, int]],
    clock: Callable[[], int] = time.time_ns,
    instances: Instances | None = None,
) -> None:
    """Every component's periodic work, each at its own interval, one at a time off the loop. With
    several instances on one store, only the leader does it; one that becomes leader starts its
    components again first (what another leader did meanwhile is in the store)."""
    due = {id(c): 0 for c, _ in components}
    step = min((interval for _, interval in components), default=10**9)
    leading = instances is None
    while True:
        if instances is not None:
            was, leading = leading, instances.leader
            if leading and not was:
                log.info("instance %s leads the housekeeping", instances.name)
                for component, _ in components:
                    await asyncio.to_thread(component.start)
        if not leading:
            await asyncio.sleep(step / 1e9)
            continue
        for component, interval in components:
            now = clock()
            if now < due[id(component)]:
                continue
            due[id(component)] = now + interval
            try:
                await _to_thread_to_the_end(component.tick, now)
            except ClewError as exc:  # the next round tries again; nothing decided is lost meanwhile
                log.warning("%s: %s", component.name, exc)
            except Exception:  # a bug in one component must not stop the others' periodic work
                log.exception("%s: periodic work failed", component.name)
        await asyncio.sleep(step / 1e9)


async def renew_lease(instances: Instances) -> None:
    """This instance's lease, renewed until cancelled; a failed renewal is tried again next time
    (the lease outlives several)."""
    while True:
        await asyncio.sleep(instances.renew_every)
        try:
            await asyncio.to_thread(instances.renew)
        except ClewError as exc:
            log.warning("instance lease: %s", exc)


def key_ring(settings: Settings) -> FileKeyRing:
    """The keys of clew.toml and of the data directory's keys.json (`clew keys create`)."""
    return FileKeyRing(settings.keys, settings.data_dir / KEYS_FILE)


def exposure(settings: Settings, keys: FileKeyRing) -> frozenset[str] | None:
    """The host names the HTTP ports answer to (None: any). Listening beyond loopback without API
    keys is refused unless `insecure` says it is meant: anyone who reaches the address could write
    and read every tenant."""
    if settings.host in LOOPBACK_NAMES:
        return LOOPBACK_NAMES
    if not keys.active and not settings.insecure:
        raise ConfigError(
            f"refusing to listen on {settings.host} without authentication: create an API key "
            "(clew keys create --role admin) or add --insecure to accept that anyone who reaches "
            "this address can write and read every tenant"
        )
    return None


def _public(path: str) -> bool:
    return path == "/healthz" or is_ui_path(path)


def _tls(settings: Settings) -> tuple[str, str] | None:
    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise ConfigError("TLS needs both tls_cert and tls_key (--tls-cert, --tls-key)")
    if not settings.tls_cert:
        return None
    for path in (settings.tls_cert, settings.tls_key):
        if not Path(path).is_file():
            raise ConfigError(f"TLS file {path} does not exist")
    return settings.tls_cert, settings.tls_key


def gated_reads(
    app: ASGIApp, limits: LimitsConfig, flushed: Callable[[float], Awaitable[bool]] | None
) -> ASGIApp:
    """A query API behind its tenants' limits (`QueryGate`) and, with a write-ahead log, behind the
    wait for the log's commit (`FreshReads`) first: a read waiting for spans to be committed runs no
    query yet, so it holds none of its tenant's `max_concurrent_queries`. Held, a few readers polling
    for fresh spans took every slot while they waited, and the rest were refused 429 in a loop."""
    gated: ASGIApp = QueryGate(app, limits)
    return FreshReads(gated, flushed) if flushed is not None else gated


async def serve(settings: Settings, on_ready: Callable[[Ports], None] | None = None) -> None:
    """Run until SIGTERM/SIGINT; then stop accepting, commit everything accepted, close the store."""
    keys = key_ring(settings)
    hosts = exposure(settings, keys)
    tls = _tls(settings)
    assembly = assemble(settings)
    # what a killed run acknowledged, before anything new
    await asyncio.to_thread(replay_log, settings, assembly)
    writer = ingest_writer(settings, assembly)
    writer.start()
    instances = assembly.instances
    lease = None
    if instances is not None:  # registered before the ports open: the leader waits for what we commit
        await asyncio.to_thread(instances.renew)
        lease = asyncio.create_task(renew_lease(instances))
    chores = asyncio.create_task(housekeeping(every(assembly.components), instances=instances))
    try:
        http = assembly_http_app(assembly, writer, settings.full_trace_spans)
        flushed = writer.flushed if isinstance(writer, LoggedWriter) else None
        reads = gated_reads(http, settings.limits, flushed)
        tempo_reads = gated_reads(tempo_app(assembly.reader), settings.limits, flushed)
        rate = SpanRate(settings.limits)
        sink = rate_limited(writer.write, rate)
        grpc = grpc_server(sink, settings.max_body_bytes, keys, settings.limits)
        grpc_host = f"[{settings.host}]" if ":" in settings.host else settings.host
        address = f"{grpc_host}:{settings.otlp_grpc_port}"
        if tls is None:
            grpc_port = grpc.add_insecure_port(address)
        else:
            pair = (Path(tls[1]).read_bytes(), Path(tls[0]).read_bytes())
            grpc_port = grpc.add_secure_port(address, grpc_lib.ssl_server_credentials([pair]))
        if grpc_port == 0:
            raise OSError(f"cannot bind OTLP/gRPC to {settings.host}:{settings.otlp_grpc_port}")
        sockets = [
            bind(settings.host, settings.otlp_http_port),
            bind(settings.host, settings.zipkin_port),
            bind(settings.host, settings.http_port),
            bind(settings.host, settings.tempo_port),
        ]
        http_ports = [s.getsockname()[1] for s in sockets]
        ports = Ports(grpc_port, *http_ports)
        router = PortRouter(
            {
                ports.otlp_http: IdentityMiddleware(
                    RequestSize(otlp_http_app(sink, settings.max_body_bytes), settings.limits), keys, "ingest"
                ),
                ports.zipkin: IdentityMiddleware(
                    RequestSize(zipkin_app(sink, settings.max_body_bytes), settings.limits), keys, "ingest"
                ),
                ports.http: IdentityMiddleware(reads, keys, "read", _public),
                ports.tempo: IdentityMiddleware(tempo_reads, keys, "read"),
            }
        )
        guarded = BodyGuard(
            HostCheck(router, hosts), settings.body_timeout_s, BodyBudget(settings.max_inflight_body_bytes)
        )
        config = uvicorn.Config(
            guarded,
            limit_concurrency=settings.max_connections,
            ssl_certfile=tls[0] if tls else None,
            ssl_keyfile=tls[1] if tls else None,
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=30,
            h11_max_incomplete_event_size=settings.max_body_bytes,
        )
        server = _Server(config)
        loop = asyncio.get_running_loop()

        def stop() -> None:
            server.should_exit = True

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)
        await grpc.start()

        async def announce() -> None:
            while not server.started and not server.should_exit:
                await asyncio.sleep(0.01)
            if server.started:
                print(ports.line(), flush=True)
                if on_ready is not None:
                    on_ready(ports)

        announcer = asyncio.create_task(announce())
        async with http.state.mcp_sessions.run():
            await server.serve(sockets=sockets)
        announcer.cancel()
        await grpc.stop(grace=10)
    finally:
        for task in (chores, lease):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        writer.close()
        if instances is not None:
            with contextlib.suppress(ClewError):  # others take over once the lease runs out
                instances.leave()
        assembly.close()
    print("clew stopped: all accepted spans committed", file=sys.stderr, flush=True)
