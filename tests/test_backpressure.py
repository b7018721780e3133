"""A full write queue answers 503 + Retry-After (HTTP) and UNAVAILABLE (gRPC), then recovers.

The server parts run in-process on real loopback sockets; the store is the real embedded one, with a
gate in front of `write` so that the queue can be held full for as long as the test needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import httpx
import uvicorn
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from clew.assembly import open_embedded
from clew.components.alerts import Alerts
from clew.core.model import OtlpBatch
from clew.ingest.writer import Writer
from clew.receivers.otlp_grpc import grpc_server
from clew.receivers.otlp_http import otlp_http_app
from clew.server import bind, pipeline_of


@contextlib.asynccontextmanager
async def serving(write: Callable[[OtlpBatch], Awaitable[None]]) -> AsyncIterator[tuple[int, int]]:
    """The OTLP/HTTP and OTLP/gRPC receivers in this process on loopback, writing to `write`: their
    ports, until the block ends."""
    sock = bind("127.0.0.1", 0)
    http = uvicorn.Server(uvicorn.Config(otlp_http_app(write, 1 << 20), log_level="warning"))
    http_task = asyncio.create_task(http.serve(sockets=[sock]))
    rpc = grpc_server(write, 1 << 20)
    grpc_port = rpc.add_insecure_port("127.0.0.1:0")
    await rpc.start()
    try:
        while not http.started:
            await asyncio.sleep(0.01)
        yield sock.getsockname()[1], grpc_port
    finally:
        http.should_exit = True
        await http_task
        await rpc.stop(grace=1)


class GatedStore:
    def __init__(self, inner) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.entered = threading.Event()

    def write(self, batch: OtlpBatch) -> None:
        self.entered.set()
        self.gate.wait(timeout=60)
        self.inner.sink.write(batch)  # spans or log records

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def _body(trace_byte: int, n: int = 25) -> bytes:
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    for i in range(n):
        spans.add(
            trace_id=bytes([trace_byte]) * 16,
            span_id=(i + 1).to_bytes(8, "big"),
            name="x",
            start_time_unix_nano=1_700_000_000_000_000_000,
            end_time_unix_nano=1_700_000_000_000_001_000,
        )
    return request.SerializeToString()


def test_full_queue_answers_retry_later(tmp_path):
    store = GatedStore(open_embedded(tmp_path / "data"))
    writer = Writer(store, max_queue_spans=30)
    writer.start()
    alerts = store.component(Alerts)  # clew's own pipeline alert, from the same writer's counters
    alerts.watch_pipeline(lambda: pipeline_of(writer))
    assert alerts.evaluate(time.time_ns()) == []

    async def scenario() -> None:
        async with serving(writer.write) as (port, grpc_port):
            url = f"http://127.0.0.1:{port}/v1/traces"
            headers = {"Content-Type": "application/x-protobuf"}
            async with httpx.AsyncClient(timeout=60) as client:
                first = asyncio.create_task(client.post(url, content=_body(1), headers=headers))
                await asyncio.to_thread(store.entered.wait, 30)  # the writer holds 25 spans
                refused = await client.post(url, content=_body(2), headers=headers)
                assert refused.status_code == 503
                assert refused.headers["Retry-After"] == "1"
                async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                    export = channel.unary_unary(
                        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                        request_serializer=None,
                        response_deserializer=None,
                    )
                    try:
                        await export(_body(3), timeout=30)
                        raise AssertionError("gRPC export was accepted while the queue was full")
                    except grpc.aio.AioRpcError as err:
                        assert err.code() == grpc.StatusCode.UNAVAILABLE
                    assert not first.done()  # still waiting for its commit
                    store.gate.set()
                    assert (await first).status_code == 200
                    retried = await client.post(url, content=_body(2), headers=headers)
                    assert retried.status_code == 200
                    await export(_body(3), timeout=30)

    try:
        asyncio.run(scenario())
    finally:
        writer.close()
    assert writer.pending_spans == 0
    assert store.reader.span_count() == 75
    fired = [e for e in alerts.evaluate(time.time_ns()) if e.name == "pipeline:refused"]
    assert [e.status for e in fired] == ["firing"] and "refused 50 spans" in fired[
        0
    ].summary  # by HTTP and by gRPC
    assert [a["name"] for a in alerts.alerts("any-tenant", time.time_ns())] == ["pipeline:refused"]
    store.close()
