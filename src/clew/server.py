"""`clew serve`: every receiver and the http port on one asyncio loop, one writer thread, one store."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from clew.config import Settings
from clew.pipeline.sampling import Sampler, SamplingConfig
from clew.query.metrics_api import label_text
from clew.receivers.otlp_grpc import grpc_server
from clew.receivers.otlp_http import otlp_http_app
from clew.receivers.zipkin import zipkin_app
from clew.store import Store, StoreError, open_embedded
from clew.store.sampling import RetentionCounters
from clew.store.writer import Writer
from clew.web.app import http_app

log = logging.getLogger(__name__)


class PortRouter:
    """One uvicorn server on several sockets; the local port picks the application."""

    def __init__(self, apps: dict[int, ASGIApp]) -> None:
        self.apps = apps

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("server") or (None, None)
        app = self.apps.get(server[1])
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

    def line(self) -> str:
        return (
            f"clew listening otlp-grpc={self.otlp_grpc} otlp-http={self.otlp_http} "
            f"zipkin={self.zipkin} http={self.http}"
        )


def writer_counters(writer: Writer) -> dict[str, tuple[str, float]]:
    """clew's own figures on /metrics: (metric type, value)."""
    return {
        "clew_ingest_committed_spans": ("counter", writer.committed_spans),
        "clew_ingest_failed_spans": ("counter", writer.failed_spans),
        "clew_ingest_refused_spans": ("counter", writer.refused_spans),
        "clew_ingest_inserts": ("counter", writer.inserts),
        "clew_ingest_queued_spans": ("gauge", writer.pending_spans),
    }


def sampling_counters(sampler: Sampler | None, retention: RetentionCounters) -> dict[str, tuple[str, float]]:
    out: dict[str, tuple[str, float]] = {
        "clew_retention_runs": ("counter", retention.runs),
        "clew_retention_deleted_spans": ("counter", retention.deleted_spans),
    }
    if sampler is not None:
        c = sampler.counters
        out |= {
            "clew_sampling_ticks": ("counter", c.ticks),
            "clew_sampling_spans_seen": ("counter", c.spans_seen),
            "clew_sampling_traces_kept": ("counter", c.traces_kept),
            "clew_sampling_traces_dropped": ("counter", c.traces_dropped),
            "clew_sampling_traces_decided_early": ("counter", c.decided_early),
            "clew_sampling_late_spans": ("counter", c.late_spans),
            "clew_sampling_pending_traces": ("gauge", len(sampler.pending)),
        }
        for policy in sampler.config.policies:
            kept = c.kept_by_policy.get(policy.name, 0)
            out["clew_sampling_kept_by_policy" + label_text({"policy": policy.name})] = ("counter", kept)
    return out


async def housekeeping(store: Store, sampler: Sampler | None, config: SamplingConfig) -> None:
    """Tail-sampling decisions and processor counters every tick, the retention tiers every
    `retention_interval`."""
    next_expiry = 0
    while True:
        try:
            if sampler is not None:
                await asyncio.to_thread(sampler.tick)
            await asyncio.to_thread(store.processed.scan)
            now = time.time_ns()
            if now >= next_expiry:
                full_fidelity = config.full_fidelity if config.enabled else None
                await asyncio.to_thread(store.sampling.expire, now, full_fidelity, config.retention)
                next_expiry = now + config.retention_interval
        except StoreError as exc:  # the next round tries again; nothing decided is lost meanwhile
            print(f"clew: sampling/retention: {exc}", file=sys.stderr, flush=True)
        await asyncio.sleep(config.tick / 1e9)


async def serve(settings: Settings, on_ready: Callable[[Ports], None] | None = None) -> None:
    """Run until SIGTERM/SIGINT; then stop accepting, commit everything accepted, close the store."""
    store = open_embedded(settings.data_dir, settings.redaction, settings.enrich, sampling=settings.sampling)
    sampler = Sampler(store.sampling, settings.sampling) if settings.sampling.enabled else None
    writer = Writer(store, settings.max_queue_spans, settings.max_batch_spans)
    writer.start()
    chores = asyncio.create_task(housekeeping(store, sampler, settings.sampling))
    try:
        grpc = grpc_server(writer.write, settings.max_body_bytes)
        grpc_host = f"[{settings.host}]" if ":" in settings.host else settings.host
        grpc_port = grpc.add_insecure_port(f"{grpc_host}:{settings.otlp_grpc_port}")
        if grpc_port == 0:
            raise OSError(f"cannot bind OTLP/gRPC to {settings.host}:{settings.otlp_grpc_port}")
        sockets = [
            bind(settings.host, settings.otlp_http_port),
            bind(settings.host, settings.zipkin_port),
            bind(settings.host, settings.http_port),
        ]
        http_ports = [s.getsockname()[1] for s in sockets]
        ports = Ports(grpc_port, *http_ports)
        router = PortRouter(
            {
                ports.otlp_http: otlp_http_app(writer.write, settings.max_body_bytes),
                ports.zipkin: zipkin_app(writer.write, settings.max_body_bytes),
                ports.http: http_app(
                    store,
                    lambda: (
                        writer_counters(writer)
                        | store.processed.metrics()
                        | sampling_counters(sampler, store.sampling.counters)
                    ),
                ),
            }
        )
        config = uvicorn.Config(
            router,
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
        await server.serve(sockets=sockets)
        announcer.cancel()
        await grpc.stop(grace=10)
    finally:
        chores.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await chores
        writer.close()
        store.close()
    print("clew stopped: all accepted spans committed", file=sys.stderr, flush=True)
