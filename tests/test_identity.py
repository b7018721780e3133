"""One identity seam: the caller's tenant is resolved once per request (HTTP middleware, gRPC
interceptor) and every API reads it from there, Jaeger's included, so tenants never see each other.

Spans come from the real OpenTelemetry SDK over OTLP/HTTP and OTLP/gRPC (the tenant in a header and
in call metadata) into a real `clew serve`; every read goes over HTTP.
"""

from __future__ import annotations

import time

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from tests.conftest import ServerProcess

TENANTS = {"acme": "http", "globex": "grpc", None: "http"}  # None: no header, the default tenant


def _send(server: ServerProcess, tenant: str | None, transport: str) -> str:
    """A two-service trace of `tenant` (services named after it); returns its trace id."""
    headers = {"x-scope-orgid": tenant} if tenant else None
    if transport == "grpc":
        exporter = GrpcExporter(endpoint=f"127.0.0.1:{server.grpc_port}", insecure=True, headers=headers)
    else:
        exporter = HttpExporter(endpoint=f"{server.otlp_http_url}/v1/traces", headers=headers)
    name = tenant or "default"
    providers = []
    for service in (f"{name}-web", f"{name}-db"):
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        providers.append(provider)
    web, db = (p.get_tracer("test") for p in providers)
    with web.start_as_current_span("GET /", kind=SpanKind.SERVER) as root:
        with db.start_as_current_span("query", kind=SpanKind.SERVER):
            pass
    return f"{root.get_span_context().trace_id:032x}"


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory):
    server = ServerProcess(tmp_path_factory.mktemp("identity") / "data").start()
    try:
        traces = {tenant: _send(server, tenant, transport) for tenant, transport in TENANTS.items()}
        yield server, traces
    finally:
        server.stop()


def _get(server: ServerProcess, path: str, tenant: str | None, **params: str) -> httpx.Response:
    headers = {"X-Scope-OrgID": tenant} if tenant else {}
    return httpx.get(f"{server.http_url}{path}", params=params, headers=headers, timeout=30)


@pytest.mark.parametrize("tenant", list(TENANTS))
def test_jaeger_api_sees_only_the_callers_tenant(tenants, tenant):
    server, traces = tenants
    name = tenant or "default"
    services = _get(server, "/api/services", tenant).json()["data"]
    assert services == [f"{name}-db", f"{name}-web"]
    for other, trace_id in traces.items():
        response = _get(server, f"/api/traces/{trace_id}", tenant)
        if other == tenant:
            assert response.status_code == 200
            assert {p["serviceName"] for p in response.json()["data"][0]["processes"].values()} == {
                f"{name}-web",
                f"{name}-db",
            }
        else:
            assert response.status_code == 404, other
    found = _get(server, "/api/traces", tenant, service=f"{name}-web", lookback="1h").json()["data"]
    assert [t["traceID"] for t in found] == [traces[tenant]]
    # another tenant's service name finds nothing, even when asked for by name
    stranger = "acme" if tenant != "acme" else "globex"
    assert _get(server, "/api/traces", tenant, service=f"{stranger}-web").json()["data"] == []
    operations = _get(server, f"/api/services/{name}-web/operations", tenant).json()["data"]
    assert operations == ["GET /"]
    assert _get(server, f"/api/services/{stranger}-web/operations", tenant).json()["data"] == []
    end = str(int(time.time() * 1000) + 60_000)
    edges = _get(server, "/api/dependencies", tenant, endTs=end, lookback="3600000").json()["data"]
    assert edges == [{"parent": f"{name}-web", "child": f"{name}-db", "callCount": 1}]


@pytest.mark.parametrize("tenant", list(TENANTS))
def test_native_api_sees_only_the_callers_tenant(tenants, tenant):
    server, traces = tenants
    for other, trace_id in traces.items():
        expected = 200 if other == tenant else 404
        assert _get(server, f"/api/v1/traces/{trace_id}", tenant).status_code == expected
        assert _get(server, f"/api/v1/traces/{trace_id}/sampling", tenant).status_code == 200
    hits = _get(server, "/api/v1/search", tenant, q="{ }").json()["traces"]
    assert [h["traceID"] for h in hits] == [traces[tenant]]
    graph = _get(server, "/api/v1/servicegraph", tenant).json()
    assert {n["service"] for n in graph["nodes"]} == {
        f"{tenant or 'default'}-web",
        f"{tenant or 'default'}-db",
    }


def test_grpc_tenant_travels_in_call_metadata(tenants):
    """The gRPC-sent trace belongs to the tenant its metadata named, not to the default one."""
    server, traces = tenants
    assert _get(server, f"/api/v1/traces/{traces['globex']}", "globex").status_code == 200
    assert _get(server, f"/api/v1/traces/{traces['globex']}", None).status_code == 404
