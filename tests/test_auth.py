"""API keys, roles and tenants (issue 12): the isolation matrix over every route of the http port
(walked from the app's route table, so a new route cannot be forgotten), both ingest ports and the
gRPC service, for each kind of caller; no answer to a tenant's key carries another tenant's names,
ids or values, /metrics included. Keys are made with the real `clew keys create`."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from starlette.routing import Mount, Route

from clew.assembly import open_embedded
from clew.server import assembly_http_app, tempo_app
from tests.conftest import ServerProcess, self_signed

GRPC_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
SECRET = {"shop": "shop-4f1c-value", "bank": "bank-9e2d-value"}
TRACE = {"shop": "5" * 32, "bank": "b" * 32}
SPAN = {"shop": "5" * 16, "bank": "b" * 16}


def _clew(*args: str, data_dir: Path) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "clew.cli", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout.strip()


def _otlp(tenant: str) -> bytes:
    request = trace_service_pb2.ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = f"{tenant}-svc"
    now = time.time_ns()
    span = rs.scope_spans.add().spans.add(
        trace_id=bytes.fromhex(TRACE[tenant]),
        span_id=bytes.fromhex(SPAN[tenant]),
        name=f"{tenant}-op",
        kind=2,
        start_time_unix_nano=now - 5_000_000,
        end_time_unix_nano=now,
    )
    span.attributes.add(key="note").value.string_value = SECRET[tenant]
    return request.SerializeToString()


def _otlp_logs(tenant: str) -> bytes:
    """A log line of `tenant`'s trace, carrying its secret, as OTLP protobuf."""
    request = logs_service_pb2.ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    rl.resource.attributes.add(key="service.name").value.string_value = f"{tenant}-svc"
    record = rl.scope_logs.add().log_records.add(
        time_unix_nano=time.time_ns() - 1_000_000,
        severity_number=9,
        trace_id=bytes.fromhex(TRACE[tenant]),
        span_id=bytes.fromhex(SPAN[tenant]),
    )
    record.body.string_value = f"{tenant}-op logged {SECRET[tenant]}"
    return request.SerializeToString()


def _bearer(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


# A request for every route of the http port that a read key for `shop` may make. A route added to
# the app without a line here fails `test_every_route_is_in_the_matrix`.
ROUTE_REQUESTS: dict[str, str] = {
    "/healthz": "/healthz",
    "/metrics": "/metrics",
    "/api/v1/openapi.json": "/api/v1/openapi.json",
    "/api/v1/search": "/api/v1/search?q={}",
    "/api/v1/traces/{trace_id}": f"/api/v1/traces/{TRACE['shop']}",
    "/api/v1/traces/{trace_id}/linked-from": f"/api/v1/traces/{TRACE['shop']}/linked-from?start=0",
    "/api/v1/traces/{trace_id}/skeleton": f"/api/v1/traces/{TRACE['shop']}/skeleton",
    "/api/v1/traces/{trace_id}/spans/{span_id}": f"/api/v1/traces/{TRACE['shop']}/spans/{SPAN['shop']}",
    "/api/services": "/api/services",
    "/api/operations": "/api/operations?service=shop-svc",
    "/api/services/{service}/operations": "/api/services/shop-svc/operations",
    "/api/traces": "/api/traces?service=shop-svc",
    "/api/traces/{trace_id}": f"/api/traces/{TRACE['shop']}",
    "/api/dependencies": "/api/dependencies",
    "/api/mcp": "/api/mcp",  # a JSON-RPC POST: MCP_CALL below
    "/api/v3/services": "/api/v3/services",
    "/api/v3/operations": "/api/v3/operations?service=shop-svc",
    "/api/v3/traces/{trace_id}": f"/api/v3/traces/{TRACE['shop']}",
    "/api/v3/traces": "/api/v3/traces?query.service_name=shop-svc&query.start_time_min=2020-01-01T00:00:00Z"
    "&query.start_time_max=2100-01-01T00:00:00Z",
    "/api/v3/trace-summaries": "/api/v3/trace-summaries?query.service_name=shop-svc"
    "&query.start_time_min=2020-01-01T00:00:00Z&query.start_time_max=2100-01-01T00:00:00Z",
    "/api/metrics/{which:str}": "/api/metrics/calls?service=shop-svc",
    "/api/v1/metrics": "/api/v1/metrics",
    "/api/v1/metrics/query_range": "/api/v1/metrics/query_range?q=%7B%7D%20%7C%20rate()",
    "/api/v1/traces/{trace_id}/sampling": f"/api/v1/traces/{TRACE['shop']}/sampling",
    "/api/v1/servicegraph": "/api/v1/servicegraph",
    "/api/v1/completeness": "/api/v1/completeness",
    "/api/v1/compare/releases": "/api/v1/compare/releases?service=shop-svc&baseline=1&candidate=2",
    "/api/v1/compare/attributes": "/api/v1/compare/attributes?service=shop-svc",
    "/api/v1/slos": "/api/v1/slos",
    "/api/v1/traces/{trace_id}/logs": f"/api/v1/traces/{TRACE['shop']}/logs",
    "/api/v1/logs": "/api/v1/logs?start=0",
    "/api/v1/logs/volume": "/api/v1/logs/volume?start=0",
    "/api/v1/alerts": "/api/v1/alerts",
    "/static": "/static/app.css",
    "/": "/",
    "/search": "/search",
    "/trace/{trace_id}": f"/trace/{TRACE['bank']}",
    "/dependencies": "/dependencies",
    "/compare": "/compare",
    "/monitor": "/monitor",
    "/releases": "/releases",
    "/alerts": "/alerts",
    "/logs": "/logs",
    "/signin": "/signin",
}
PUBLIC = {
    "/healthz",
    "/static",
    "/",
    "/search",
    "/trace/{trace_id}",
    "/dependencies",
    "/compare",
    "/monitor",
    "/releases",
    "/alerts",
    "/logs",
    "/signin",
}


# The same for the Tempo port, where every route needs a read key (Grafana's data source sends it).
TEMPO_ROUTE_REQUESTS: dict[str, str] = {
    "/api/echo": "/api/echo",
    "/api/metrics/query_range": "/api/metrics/query_range?q=%7B%7D%20%7C%20count_over_time()%20by%20(resource.service.name)",
    "/api/metrics/query": "/api/metrics/query?q=%7B%7D%20%7C%20rate()",
    "/ready": "/ready",
    "/api/status/buildinfo": "/api/status/buildinfo",
    "/api/search": "/api/search?q={}",
    "/api/search/tags": "/api/search/tags",
    "/api/v2/search/tags": "/api/v2/search/tags",
    "/api/search/tag/{tag}/values": "/api/search/tag/note/values",
    "/api/v2/search/tag/{tag}/values": "/api/v2/search/tag/resource.service.name/values",
    "/api/traces/{trace_id}": f"/api/traces/{TRACE['shop']}",
    "/api/v2/traces/{trace_id}": f"/api/v2/traces/{TRACE['shop']}",
}


def test_every_route_is_in_the_matrix(tmp_path: Path) -> None:
    store = open_embedded(tmp_path / "data")
    try:
        app = assembly_http_app(store)
        paths = {r.path for r in app.routes if isinstance(r, Route | Mount)}
        tempo = {r.path for r in tempo_app(store.reader).routes if isinstance(r, Route | Mount)}
    finally:
        store.close()
    assert paths == set(ROUTE_REQUESTS), f"routes missing from the matrix: {paths - set(ROUTE_REQUESTS)}"
    assert tempo == set(TEMPO_ROUTE_REQUESTS), f"missing: {tempo - set(TEMPO_ROUTE_REQUESTS)}"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory):
    data_dir = tmp_path_factory.mktemp("auth") / "data"
    keys = {
        "ingest-shop": _clew("keys", "create", "--role", "ingest", "--tenant", "shop", data_dir=data_dir),
        "ingest-bank": _clew("keys", "create", "--role", "ingest", "--tenant", "bank", data_dir=data_dir),
        "read-shop": _clew("keys", "create", "--role", "read", "--tenant", "shop", data_dir=data_dir),
        "read-bank": _clew("keys", "create", "--role", "read", "--tenant", "bank", data_dir=data_dir),
        "admin": _clew("keys", "create", "--role", "admin", "--name", "ops", data_dir=data_dir),
    }
    assert all(k.startswith("clew_") and len(k) > 40 for k in keys.values())
    server = ServerProcess(data_dir).start()
    try:
        # the key's tenant wins over the header: bank's ingest key cannot write into shop
        for tenant in ("shop", "bank"):
            response = server.post_otlp(
                _otlp(tenant), X_Scope_OrgID="shop", **_bearer(keys[f"ingest-{tenant}"])
            )
            assert response.status_code == 200, response.text
            logged = httpx.post(
                f"{server.otlp_http_url}/v1/logs",
                content=_otlp_logs(tenant),
                headers={
                    "Content-Type": "application/x-protobuf",
                    "X-Scope-OrgID": "shop",
                    **_bearer(keys[f"ingest-{tenant}"]),
                },
                timeout=30,
            )
            assert logged.status_code == 200, logged.text
        yield server, keys
    finally:
        server.stop()


CALLERS = ["none", "wrong", "ingest-shop", "read-bank-as-shop", "read-shop", "admin"]


def _headers(caller: str, keys: dict[str, str]) -> dict[str, str]:
    return {
        "none": {},
        "wrong": _bearer("clew_" + "x" * 43),
        "ingest-shop": _bearer(keys["ingest-shop"]),
        "read-bank-as-shop": {**_bearer(keys["read-bank"]), "X-Scope-OrgID": "shop"},
        "read-shop": _bearer(keys["read-shop"]),
        "admin": {**_bearer(keys["admin"]), "X-Scope-OrgID": "shop"},
    }[caller]


MCP_CALL = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "tools/call",
    "params": {"name": "search", "arguments": {"query": "{ }", "minutes": 60}},
}
EXPECTED = {"none": 401, "wrong": 401, "ingest-shop": 403, "read-bank-as-shop": 403}


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("route", sorted(ROUTE_REQUESTS))
def test_isolation_matrix_of_the_http_port(secured, route: str, caller: str) -> None:
    server, keys = secured
    if route == "/api/mcp":  # an agent's tool call: the same keys, roles and tenants
        response = httpx.post(
            server.http_url + route, json=MCP_CALL, timeout=30,
            headers={**_headers(caller, keys), "Accept": "application/json, text/event-stream"},
        )  # fmt: skip
    else:
        response = httpx.get(
            server.http_url + ROUTE_REQUESTS[route], headers=_headers(caller, keys), timeout=30
        )
    if route in PUBLIC:
        assert response.status_code == 200, response.text
    elif caller in EXPECTED:
        assert response.status_code == EXPECTED[caller], response.text
        assert response.json()["error"]
        if response.status_code == 401:
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
    else:
        assert response.status_code == 200, (route, response.text)
    if caller != "admin" or route != "/metrics":
        for leaked in ("bank-svc", "bank-op", TRACE["bank"], SECRET["bank"]):
            assert leaked not in response.text, (route, caller, leaked)


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("route", sorted(TEMPO_ROUTE_REQUESTS))
def test_isolation_matrix_of_the_tempo_port(secured, route: str, caller: str) -> None:
    server, keys = secured
    url = server.tempo_url + TEMPO_ROUTE_REQUESTS[route]
    response = httpx.get(url, headers=_headers(caller, keys), timeout=30)
    if caller in EXPECTED:
        assert response.status_code == EXPECTED[caller], response.text
    else:
        assert response.status_code == 200, (route, response.text)
    for leaked in ("bank-svc", "bank-op", TRACE["bank"], SECRET["bank"]):
        assert leaked not in response.text, (route, caller, leaked)
    if caller == "read-shop" and route.startswith("/api/v2/search/tag/"):  # its own data is there
        assert "shop" in response.text


def test_a_read_key_sees_its_tenant_and_admin_sees_all(secured) -> None:
    server, keys = secured
    shop = httpx.get(f"{server.http_url}/api/services", headers=_bearer(keys["read-shop"]), timeout=30)
    assert shop.json()["data"] == ["shop-svc"]
    bank = httpx.get(f"{server.http_url}/api/services", headers=_bearer(keys["read-bank"]), timeout=30)
    assert bank.json()["data"] == ["bank-svc"]
    # another tenant's trace is not found, not forbidden: its existence is not told
    response = httpx.get(
        f"{server.http_url}/api/v1/traces/{TRACE['bank']}", headers=_bearer(keys["read-shop"]), timeout=30
    )
    assert response.status_code == 404
    admin = _bearer(keys["admin"])
    for tenant in ("shop", "bank"):
        response = httpx.get(
            f"{server.http_url}/api/v1/traces/{TRACE[tenant]}",
            headers={**admin, "X-Scope-OrgID": tenant},
            timeout=30,
        )
        assert response.status_code == 200 and SECRET[tenant] in response.text
    metrics = httpx.get(f"{server.http_url}/metrics", headers=admin, timeout=30).text
    assert 'service="shop-svc"' in metrics and 'service="bank-svc"' in metrics
    metrics = httpx.get(f"{server.http_url}/metrics", headers=_bearer(keys["read-shop"]), timeout=30).text
    assert 'service="shop-svc"' in metrics and "bank" not in metrics
    # Grafana's data sources send Basic auth: the key is the password
    response = httpx.get(f"{server.http_url}/api/services", auth=("grafana", keys["read-bank"]), timeout=30)
    assert response.json()["data"] == ["bank-svc"]


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("port", ["otlp-http", "zipkin", "otlp-grpc"])
def test_isolation_matrix_of_the_ingest_ports(secured, port: str, caller: str) -> None:
    server, keys = secured
    headers = _headers(caller, keys)
    expected = {"none": 401, "wrong": 401, "ingest-shop": 200, "admin": 200}.get(caller, 403)
    if port == "otlp-grpc":
        codes = {
            200: grpc.StatusCode.OK,
            401: grpc.StatusCode.UNAUTHENTICATED,
            403: grpc.StatusCode.PERMISSION_DENIED,
        }
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = trace_service_pb2_grpc.TraceServiceStub(channel)
            request = trace_service_pb2.ExportTraceServiceRequest.FromString(_otlp("shop"))
            metadata = [(k.lower(), v) for k, v in headers.items()]
            try:
                stub.Export(request, metadata=metadata, timeout=30)
                code = grpc.StatusCode.OK
            except grpc.RpcError as exc:
                code = exc.code()
        assert code == codes[expected]
        return
    if port == "otlp-http":
        url, body, kind = f"{server.otlp_http_url}/v1/traces", _otlp("shop"), "application/x-protobuf"
    else:
        span = {
            "traceId": TRACE["shop"],
            "id": os.urandom(8).hex(),
            "name": "shop-op",
            "timestamp": time.time_ns() // 1000,
            "duration": 10,
            "localEndpoint": {"serviceName": "shop-svc"},
        }
        url, body, kind = (
            f"{server.zipkin_url}/api/v2/spans",
            httpx.Request("POST", "/", json=[span]).content,
            "application/json",
        )
    response = httpx.post(url, content=body, headers={**headers, "Content-Type": kind}, timeout=30)
    assert response.status_code in ((200, 202) if expected == 200 else (expected,)), response.text


def test_logs_follow_the_keys_tenant_and_need_an_ingest_key(secured) -> None:
    server, keys = secured
    for tenant in ("shop", "bank"):
        response = httpx.get(
            f"{server.http_url}/api/v1/logs?start=0", headers=_bearer(keys[f"read-{tenant}"]), timeout=30
        )
        bodies = [log["body"] for log in response.json()["logs"]]
        assert bodies == [f"{tenant}-op logged {SECRET[tenant]}"]
    url = f"{server.otlp_http_url}/v1/logs"
    for key, status in ((None, 401), (keys["read-shop"], 403)):
        response = httpx.post(
            url,
            content=_otlp_logs("shop"),
            headers={"Content-Type": "application/x-protobuf", **_bearer(key)},
            timeout=30,
        )
        assert response.status_code == status, response.text


def test_without_keys_metrics_show_only_the_callers_tenant(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    try:
        for tenant in ("shop", "bank"):
            assert server.post_otlp(_otlp(tenant), X_Scope_OrgID=tenant).status_code == 200
        shop = httpx.get(f"{server.http_url}/metrics", headers={"X-Scope-OrgID": "shop"}, timeout=30).text
        assert 'service="shop-svc"' in shop and "bank" not in shop
        default = httpx.get(f"{server.http_url}/metrics", timeout=30).text
        assert "shop-svc" not in default and "bank-svc" not in default
        # tenant names follow one documented rule
        response = httpx.get(f"{server.http_url}/api/services", headers={"X-Scope-OrgID": "a/b"}, timeout=30)
        assert response.status_code == 400 and "not valid" in response.json()["error"]
    finally:
        server.stop()


def test_listening_beyond_loopback_without_keys_is_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "clew.cli",
            "serve",
            "--data-dir",
            str(tmp_path / "data"),
            "--host",
            "0.0.0.0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "refusing to listen on 0.0.0.0 without authentication" in result.stderr
    assert "--insecure" in result.stderr


def test_a_foreign_host_header_is_refused(secured) -> None:
    """DNS rebinding: a page on evil.example re-pointed at 127.0.0.1 sends its own name as Host."""
    server, keys = secured
    response = httpx.get(
        f"{server.http_url}/api/services",
        headers={"Host": "evil.example", **_bearer(keys["admin"])},
        timeout=30,
    )
    assert response.status_code == 400 and "evil.example" in response.json()["error"]
    for host in ("localhost", f"127.0.0.1:{server.http_port}", f"[::1]:{server.http_port}"):
        response = httpx.get(f"{server.http_url}/healthz", headers={"Host": host}, timeout=30)
        assert response.status_code == 200, host


def test_keys_are_stored_hashed_listed_and_revoked_at_once(secured) -> None:
    server, keys = secured
    stored = (server.data_dir / "keys.json").read_text()
    assert all(k not in stored for k in keys.values())
    assert oct((server.data_dir / "keys.json").stat().st_mode)[-3:] == "600"
    listing = _clew("keys", "list", data_dir=server.data_dir)
    assert "admin" in listing and "ops" in listing and keys["admin"] not in listing
    key = _clew("keys", "create", "--role", "read", "--tenant", "shop", data_dir=server.data_dir)
    assert httpx.get(f"{server.http_url}/api/services", headers=_bearer(key), timeout=30).status_code == 200
    key_id = next(
        line.split()[0] for line in _clew("keys", "list", data_dir=server.data_dir).splitlines()[-1:]
    )
    _clew("keys", "revoke", key_id, data_dir=server.data_dir)
    assert httpx.get(f"{server.http_url}/api/services", headers=_bearer(key), timeout=30).status_code == 401


def test_tls_on_every_port(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server = ServerProcess(
        tmp_path / "data", extra_args=["--tls-cert", str(cert), "--tls-key", str(key)]
    ).start(https=True, verify=ssl.create_default_context(cafile=str(cert)))
    try:
        with httpx.Client(verify=ssl.create_default_context(cafile=str(cert)), timeout=30) as client:
            url = f"https://127.0.0.1:{server.otlp_http_port}/v1/traces"
            response = client.post(
                url, content=_otlp("shop"), headers={"Content-Type": "application/x-protobuf"}
            )
            assert response.status_code == 200
            assert client.get(f"https://127.0.0.1:{server.http_port}/api/services").json()["data"] == [
                "shop-svc"
            ]
        with pytest.raises(httpx.HTTPError):  # plain HTTP is not answered
            httpx.get(f"http://127.0.0.1:{server.http_port}/healthz", timeout=5)
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{server.grpc_port}", credentials) as channel:
            stub = trace_service_pb2_grpc.TraceServiceStub(channel)
            stub.Export(trace_service_pb2.ExportTraceServiceRequest.FromString(_otlp("bank")), timeout=30)
        with httpx.Client(verify=ssl.create_default_context(cafile=str(cert)), timeout=30) as client:
            services = client.get(f"https://127.0.0.1:{server.http_port}/api/services").json()["data"]
            assert services == ["bank-svc", "shop-svc"]
    finally:
        server.stop()


def test_the_cli_reads_as_a_key_and_a_tenant(secured) -> None:
    """`clew search/trace/export --url` take `--key` (or CLEW_API_KEY) and `--tenant` (finding 6)."""
    server, keys = secured

    def clew(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "clew.cli", *args, "--url", server.http_url],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **(env or {})},
        )

    refused = clew("trace", TRACE["bank"])
    assert refused.returncode != 0 and "401" in refused.stderr
    shown = clew("trace", TRACE["bank"], "--key", keys["read-bank"])
    assert shown.returncode == 0 and "bank-op" in shown.stdout
    hidden = clew("trace", TRACE["bank"], "--key", keys["read-shop"])
    assert hidden.returncode != 0 and "not found" in hidden.stderr
    exported = clew("export", TRACE["shop"], "--tenant", "shop", env={"CLEW_API_KEY": keys["admin"]})
    assert exported.returncode == 0 and SECRET["shop"] in exported.stdout
    found = clew("search", "{ }", "--since", "1d", "--key", keys["admin"], "--tenant", "bank", "--json")
    assert found.returncode == 0 and TRACE["bank"] in found.stdout and TRACE["shop"] not in found.stdout


def test_setting_slos_needs_an_admin_key_and_stays_in_the_tenant(secured) -> None:
    server, keys = secured
    url = f"{server.http_url}/api/v1/slos"
    body = {"slos": [{"name": "shop-up", "service": "shop-svc", "objective": 99.9}]}
    read = httpx.put(url, json=body, headers=_bearer(keys["read-shop"]), timeout=30)
    assert read.status_code == 403 and "admin" in read.json()["error"]
    admin = httpx.put(url, json=body, headers=_headers("admin", keys), timeout=30)
    assert admin.status_code == 200, admin.text
    shop = httpx.get(url, headers=_bearer(keys["read-shop"]), timeout=30).json()["slos"]
    assert [s["name"] for s in shop] == ["shop-up"] and shop[0]["events"] >= 1  # the shop's spans
    assert httpx.get(url, headers=_bearer(keys["read-bank"]), timeout=30).json()["slos"] == []
