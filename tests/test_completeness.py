"""`/api/v1/completeness` over known broken traces sent through OTLP."""

from __future__ import annotations

import time

import httpx

from tests.conftest import ServerProcess

MS = 10**6
NOW = time.time_ns() - 10 * 60 * 10**9


def span(trace: int, sid: int, parent: int | None, name: str, kind: int, start_ms: int, end_ms: int) -> dict:
    out = {
        "traceId": f"{trace:032x}",
        "spanId": f"{sid:016x}",
        "name": name,
        "kind": kind,
        "startTimeUnixNano": str(NOW + start_ms * MS),
        "endTimeUnixNano": str(NOW + end_ms * MS),
    }
    if parent is not None:
        out["parentSpanId"] = f"{parent:016x}"
    return out


def resource(service: str, spans: list[dict]) -> dict:
    return {
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeSpans": [{"spans": spans}],
    }


def broken_shop() -> dict:
    return {
        "resourceSpans": [
            # trace 1: frontend calls inventory, but the context does not travel: trace 2 starts fresh
            resource(
                "frontend",
                [span(1, 1, None, "GET /buy", 2, 0, 120), span(1, 2, 1, "POST /audit", 3, 10, 100)],
            ),
            resource("inventory", [span(2, 3, None, "POST /audit", 2, 20, 80)]),
            # trace 3: a healthy call, client with its server child
            resource(
                "frontend", [span(3, 4, None, "GET /ok", 2, 0, 50), span(3, 5, 4, "GET /stock", 3, 5, 40)]
            ),
            resource("inventory", [span(3, 6, 5, "GET /stock", 2, 10, 30)]),
            # trace 4: an orphan in worker (its parent never arrived)
            resource("worker", [span(4, 7, 99, "process", 5, 0, 10)]),
            # trace 5: two roots
            resource("batch", [span(5, 8, None, "a", 1, 0, 10), span(5, 9, None, "b", 1, 20, 30)]),
            # trace 6: clock skew, the child ends after its parent
            resource("api", [span(6, 10, None, "GET /slow", 2, 0, 50)]),
            resource("db", [span(6, 11, 10, "query", 2, 10, 90)]),
            # trace 7: not skew: the server span ends 16 ms after its client (within 25 ms + 10%)
            resource("api", [span(7, 12, None, "GET /late", 3, 0, 50)]),
            resource("db", [span(7, 13, 12, "query", 2, 5, 66)]),
        ]
    }


def test_each_kind_of_break_is_found_and_named(server: ServerProcess) -> None:
    response = httpx.post(f"{server.otlp_http_url}/v1/traces", json=broken_shop(), timeout=30)
    assert response.status_code == 200 and response.json() == {}
    report = httpx.get(f"{server.http_url}/api/v1/completeness", timeout=30).json()
    (gap,) = report["propagationGaps"]
    assert (gap["caller"], gap["callee"], gap["count"]) == ("frontend", "inventory", 1)
    assert gap["examples"] == [{"callerTrace": f"{1:032x}", "calleeTrace": f"{2:032x}"}]
    (orphan,) = report["orphans"]
    assert (orphan["service"], orphan["spans"], orphan["examples"]) == ("worker", 1, [f"{4:032x}"])
    assert report["multipleRoots"] == {"traces": 1, "examples": [f"{5:032x}"]}
    (skew,) = report["clockSkew"]
    assert (skew["parent"], skew["child"], skew["spans"]) == ("api", "db", 1)
    services = {s["service"]: s for s in report["services"]}
    assert services["inventory"]["traces"] == 2 and services["inventory"]["brokenTraces"] == 1
    assert services["inventory"]["brokenShare"] == 0.5
    assert services["frontend"]["brokenTraces"] == 0
    # a window before any of it is clean
    early = httpx.get(
        f"{server.http_url}/api/v1/completeness",
        params={"start": NOW / 1e9 - 7200, "end": NOW / 1e9 - 3700},
        timeout=30,
    ).json()
    assert early["propagationGaps"] == [] and early["orphans"] == [] and early["services"] == []


def test_a_trace_in_flight_is_not_called_broken(server: ServerProcess) -> None:
    """A child that ended moments ago waits for its parent (exported when it ends) before it is an
    orphan: one that ended over a minute ago is one."""
    now = time.time_ns()
    recent = span(20, 21, 22, "step", 1, 0, 5)
    recent["startTimeUnixNano"], recent["endTimeUnixNano"] = str(now - 2 * 10**9), str(now - 10**9)
    old = span(30, 31, 32, "step", 1, 0, 5)
    old["startTimeUnixNano"], old["endTimeUnixNano"] = str(now - 90 * 10**9), str(now - 89 * 10**9)
    doc = {"resourceSpans": [resource("flight", [recent, old])]}
    assert httpx.post(f"{server.otlp_http_url}/v1/traces", json=doc, timeout=30).status_code == 200
    report = httpx.get(f"{server.http_url}/api/v1/completeness", timeout=30).json()
    (orphan,) = report["orphans"]
    assert (orphan["service"], orphan["examples"]) == ("flight", [f"{30:032x}"])
