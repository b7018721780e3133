"""Limits per tenant (issue 12): spans a second (429 / RESOURCE_EXHAUSTED with RetryInfo, one
tenant's limit never touching another's), queries at once (429), and the time a query may run (the
engine stops it: 422 naming the budget, and the next query answers normally)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from clew.config import Settings
from clew.core.budget import QUERY_SECONDS
from clew.core.errors import ConfigError
from clew.core.limits import LimitsConfig, TenantLimits
from clew.gateway.identity import IdentityMiddleware
from clew.gateway.limits import QueryGate
from clew.server import gated_reads
from tests.conftest import ServerProcess
from tests.test_durability import SPANS_PER_REQUEST, _request

CONFIG = """
[limits]
spans_per_second = 20
query_timeout_s = 20
[limits.tenants.big]
spans_per_second = 1000000
[limits.tenants.bulk]
spans_per_second = 1000000
[limits.tenants.narrow]
spans_per_second = 1000000
max_attributes_per_span = 3
[limits.tenants.tiny]
spans_per_second = 1000000
max_request_bytes = 500
[limits.tenants.hurried]
query_timeout_s = 0.001
"""


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("limits")
    (directory / "clew.toml").write_text(CONFIG)
    server = ServerProcess(directory / "data", extra_args=["--config", str(directory / "clew.toml")]).start()
    try:
        yield server
    finally:
        server.stop()


def _post(server: ServerProcess, tenant: str) -> httpx.Response:
    return server.post_otlp(_request(os.urandom(16)), X_Scope_OrgID=tenant)


def test_a_tenant_over_its_span_rate_gets_429_and_others_do_not(limited: ServerProcess) -> None:
    answers = [_post(limited, "small").status_code for _ in range(12)]  # 300 spans against 20 a second
    assert 200 in answers and 429 in answers, answers
    refused = _post(limited, "small")
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert b"spans_per_second" in refused.content
    # the busy tenant never held up another one
    assert all(_post(limited, "big").status_code == 200 for _ in range(12))
    # over gRPC: RESOURCE_EXHAUSTED with RetryInfo, which OTLP exporters retry
    with grpc.insecure_channel(f"127.0.0.1:{limited.grpc_port}") as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        request = trace_service_pb2.ExportTraceServiceRequest.FromString(_request(os.urandom(16)))
        with pytest.raises(grpc.RpcError) as caught:
            for _ in range(12):
                stub.Export(request, metadata=[("x-scope-orgid", "small")], timeout=30)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = dict(caught.value.trailing_metadata())["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(details)
    info = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info) and info.retry_delay.seconds >= 1


def test_a_query_past_its_budget_is_stopped_with_422(limited: ServerProcess) -> None:
    for tenant in ("hurried", *["bulk"] * 8):
        assert _post(limited, tenant).status_code == 200
    query = '{ name =~ "st.*p-[0-9]+" && .i > 3 } | count() > 2'
    response = httpx.get(
        f"{limited.http_url}/api/v1/search",
        params={"q": query},
        headers={"X-Scope-OrgID": "hurried"},
        timeout=30,
    )
    assert response.status_code == 422, response.text
    assert "query_timeout_s" in response.json()["error"]
    # the budget was the tenant's and the statement's: the next query of another tenant is whole
    response = httpx.get(
        f"{limited.http_url}/api/v1/search",
        params={"q": query, "limit": 100},
        headers={"X-Scope-OrgID": "bulk"},
        timeout=30,
    )
    assert response.status_code == 200
    assert len(response.json()["traces"]) == 8
    assert all(t["spanCount"] == SPANS_PER_REQUEST for t in response.json()["traces"])


def test_queries_at_once_are_bounded_per_tenant() -> None:
    """The gate around a real Starlette app whose queries wait until released."""
    release = asyncio.Event()
    seen: list[float | None] = []

    async def slow(request: Request) -> JSONResponse:
        seen.append(QUERY_SECONDS.get())
        await release.wait()
        return JSONResponse({"ok": True})

    config = LimitsConfig(TenantLimits(max_concurrent_queries=2, query_timeout_s=7), {})
    app = IdentityMiddleware(QueryGate(Starlette(routes=[Route("/api/slow", slow)]), config))

    async def run() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            held = [asyncio.create_task(client.get("/api/slow")) for _ in range(2)]
            while len(seen) < 2:
                await asyncio.sleep(0.01)
            third = await client.get("/api/slow")
            other = asyncio.create_task(client.get("/api/slow", headers={"X-Scope-OrgID": "other"}))
            while len(seen) < 3:
                await asyncio.sleep(0.01)
            release.set()
            done = [r.status_code for r in await asyncio.gather(*held, other)]
            after = await client.get("/api/slow")
            assert third.json()["error"].startswith("tenant 'default' already runs 2 queries")
            return [third.status_code, *done, after.status_code]

    assert asyncio.run(run()) == [429, 200, 200, 200, 200]
    assert seen == [7, 7, 7, 7]


def test_a_read_waiting_for_the_log_holds_no_query_slot() -> None:
    """Reads wait for the write-ahead log's commit before the gate, not inside it: three readers
    of a tenant allowed one query at a time all wait for the commit, none refused meanwhile."""
    committed = asyncio.Event()
    waiting: list[float] = []

    async def flushed(timeout: float) -> bool:
        waiting.append(timeout)
        await committed.wait()
        return True

    async def fast(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    config = LimitsConfig(TenantLimits(max_concurrent_queries=1), {})
    app = IdentityMiddleware(gated_reads(Starlette(routes=[Route("/api/fast", fast)]), config, flushed))

    async def run() -> tuple[int, list[bool], list[int]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            reads = [asyncio.create_task(client.get("/api/fast")) for _ in range(3)]
            for _ in range(500):  # bounded: a refused read never calls `flushed`
                if len(waiting) == 3 or any(r.done() for r in reads):
                    break
                await asyncio.sleep(0.01)
            answered_early = [r.done() for r in reads]
            committed.set()
            return len(waiting), answered_early, [r.status_code for r in await asyncio.gather(*reads)]

    waited, answered_early, statuses = asyncio.run(run())
    assert waited == 3 and answered_early == [False, False, False]
    assert 200 in statuses and set(statuses) <= {200, 429}


def test_limits_are_checked_when_read(tmp_path: Path) -> None:
    config = tmp_path / "clew.toml"
    for text, message in (
        ("[limits]\nspans_per_secnd = 1\n", "unknown limit 'spans_per_secnd'"),
        ("[limits]\nspans_per_second = -1\n", "from 0 up"),
        ("[limits.tenants.a]\nmax_concurrent_queries = 0\n", "above 0"),
    ):
        config.write_text(text)
        with pytest.raises(ConfigError, match=message):
            Settings.load(config)
    config.write_text(CONFIG)
    limits = Settings.load(config).limits
    assert limits.of("big").spans_per_second == 1_000_000 and limits.of("big").query_timeout_s == 20
    assert limits.of("anyone").spans_per_second == 20


def _attributes_request(tenant_trace: bytes, count: int, long_value: str) -> bytes:
    request = trace_service_pb2.ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "wide"
    span = rs.scope_spans.add().spans.add(
        trace_id=tenant_trace,
        span_id=os.urandom(8),
        name="wide",
        start_time_unix_nano=10**18,
        end_time_unix_nano=10**18 + 5,
    )
    span.dropped_attributes_count = 2
    span.attributes.add(key="long").value.string_value = long_value
    for i in range(count):
        span.attributes.add(key=f"s{i:03d}").value.string_value = f"v{i}"
    span.attributes.add(key="n").value.int_value = 7
    return request.SerializeToString()


def _stored_span(server: ServerProcess, trace: bytes, tenant: str) -> dict:
    doc = httpx.get(
        f"{server.http_url}/api/v1/traces/{trace.hex()}", headers={"X-Scope-OrgID": tenant}, timeout=30
    ).json()
    return doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]


def test_attributes_beyond_the_limits_are_dropped_and_cut_never_refused(limited: ServerProcess) -> None:
    long_value = "é" * 40_000  # characters, not bytes, are what is counted
    for tenant, attributes, dropped in (("bulk", 128, 2 + 202 - 128), ("narrow", 3, 2 + 202 - 3)):
        trace = os.urandom(16)
        response = limited.post_otlp(_attributes_request(trace, 200, long_value), X_Scope_OrgID=tenant)
        assert response.status_code == 200 and response.content == b""  # no partial success: nothing refused
        span = _stored_span(limited, trace, tenant)
        kept = {a["key"]: a["value"] for a in span["attributes"]}
        assert len(kept) == attributes, tenant
        assert span["droppedAttributesCount"] == dropped
        assert kept["long"]["stringValue"] == "é" * 32768
        assert "n" not in kept  # strings are kept first, the integer went over the limit
        assert {"long", "s000", "s001"} <= set(kept)


@pytest.mark.parametrize(
    ("long_value", "stored"),
    [
        ("é" * 40_000, "é" * 32768),  # under the count limit, a value past the length is still cut
        ("é" * 20_000, "é" * 20_000),  # 40,000 bytes but 20,000 characters: kept whole
        ("x" * 32768, "x" * 32768),  # at the limit: kept
        ("short", "short"),  # a span within both limits is stored as sent
    ],
    ids=["cut", "multibyte-kept", "at-the-limit", "within"],
)
def test_a_value_is_cut_by_characters_whatever_the_attribute_count(
    limited: ServerProcess, long_value: str, stored: str
) -> None:
    trace = os.urandom(16)
    response = limited.post_otlp(_attributes_request(trace, 5, long_value), X_Scope_OrgID="bulk")
    assert response.status_code == 200
    span = _stored_span(limited, trace, "bulk")
    kept = {a["key"]: a["value"] for a in span["attributes"]}
    assert kept["long"]["stringValue"] == stored
    assert [a["key"] for a in span["attributes"]] == ["long", "s000", "s001", "s002", "s003", "s004", "n"]
    assert kept["s004"]["stringValue"] == "v4" and kept["n"]["intValue"] == "7"
    assert span["droppedAttributesCount"] == 2  # what the sender had dropped, nothing more


def test_a_tenants_request_size_limit(limited: ServerProcess) -> None:
    body = _request(os.urandom(16))
    assert len(body) > 500
    for url, content, kind in (
        (f"{limited.otlp_http_url}/v1/traces", body, "application/x-protobuf"),
        (f"{limited.zipkin_url}/api/v2/spans", b"[" + b" " * 600 + b"]", "application/json"),
    ):
        response = httpx.post(
            url, content=content, headers={"Content-Type": kind, "X-Scope-OrgID": "tiny"}, timeout=30
        )
        assert response.status_code == 413 and b"max_request_bytes" in response.content
    with grpc.insecure_channel(f"127.0.0.1:{limited.grpc_port}") as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Export(request, metadata=[("x-scope-orgid", "tiny")], timeout=30)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_request_bytes" in (caught.value.details() or "")
        stub.Export(request, metadata=[("x-scope-orgid", "bulk")], timeout=30)
    # the same body from a tenant without that limit is taken
    assert _post(limited, "bulk").status_code == 200
