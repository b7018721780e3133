"""Jaeger API beyond the conformance cases: dependencies, special tags, limits and lookback."""

from __future__ import annotations

import json
import time

import httpx

from tests.test_otlp_http import JSON, _post


def _span(
    trace: str, span: str, parent: str | None, name: str, kind: int, start: int, error: bool = False
) -> dict:
    out = {
        "traceId": trace,
        "spanId": span,
        "name": name,
        "kind": kind,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(start + 5_000_000),
    }
    if parent:
        out["parentSpanId"] = parent
    if error:
        out["status"] = {"code": 2, "message": "boom"}
    return out


def _resource(service: str, *spans: dict) -> dict:
    return {
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeSpans": [{"spans": list(spans)}],
    }


def _shop(server, trace: str, now: int) -> None:
    doc = {
        "resourceSpans": [
            _resource("frontend", _span(trace, "0000000000000001", None, "GET /", 2, now)),
            _resource(
                "cart",
                _span(trace, "0000000000000002", "0000000000000001", "get cart", 2, now + 1),
                _span(trace, "0000000000000003", "0000000000000002", "load", 1, now + 2),
                _span(trace, "0000000000000004", "0000000000000003", "SELECT", 3, now + 3, error=True),
            ),
            _resource("db", _span(trace, "0000000000000005", "0000000000000004", "query", 2, now + 4)),
        ]
    }
    assert _post(server, json.dumps(doc), JSON).status_code == 200


def test_dependencies_count_calls_between_services(server):
    now = time.time_ns()
    _shop(server, "a1" * 16, now - 60 * 10**9)
    _shop(server, "a2" * 16, now - 30 * 10**9)
    body = httpx.get(f"{server.http_url}/api/dependencies", params={"endTs": now // 10**6 + 1000}).json()
    assert body["data"] == [
        {"parent": "cart", "child": "db", "callCount": 2},
        {"parent": "frontend", "child": "cart", "callCount": 2},
    ]
    # a window that ends before both traces sees nothing
    early = httpx.get(
        f"{server.http_url}/api/dependencies",
        params={"endTs": (now - 120 * 10**9) // 10**6, "lookback": 1000},
    ).json()
    assert early["data"] == []


def test_special_tags_limit_and_lookback(server):
    now = time.time_ns()
    _shop(server, "b1" * 16, now - 10 * 10**9)
    _shop(server, "b2" * 16, now - 5 * 10**9)
    url = f"{server.http_url}/api/traces"

    def ids(**params) -> list[str]:
        body = httpx.get(url, params={"service": "cart", **params}).json()
        assert body["errors"] is None, body
        return [t["traceID"] for t in body["data"]]

    assert ids(tags='{"error": "true"}') == ["b2" * 16, "b1" * 16]  # newest first
    assert ids(tags='{"span.kind": "client"}', operation="SELECT") == ["b2" * 16, "b1" * 16]
    assert ids(tags='{"span.kind": "producer"}') == []
    assert ids(tag="error:true", limit=1) == ["b2" * 16]
    assert ids(lookback="1m") == ["b2" * 16, "b1" * 16]
    assert ids(end=(now - 7 * 10**9) // 1000, lookback="1m") == ["b1" * 16]
    assert ids(minDuration="4ms", maxDuration="6ms") == ["b2" * 16, "b1" * 16]
    assert ids(minDuration="6ms") == []
    several = httpx.get(url, params=[("traceID", "b1" * 16), ("traceID", "b2" * 16)]).json()
    assert [t["traceID"] for t in several["data"]] == ["b1" * 16, "b2" * 16]
    trace = several["data"][0]
    span = next(s for s in trace["spans"] if s["operationName"] == "SELECT")
    assert {"key": "error", "type": "bool", "value": True} in span["tags"]
    assert {"key": "otel.status_description", "type": "string", "value": "boom"} in span["tags"]
    assert {"key": "span.kind", "type": "string", "value": "client"} in span["tags"]
    assert trace["processes"][span["processID"]]["serviceName"] == "cart"
