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


def test_array_and_map_attributes_render_as_jaeger_renders_them(server):
    """As Jaeger's OTLP translator (pcommon `AsString`), in tags and process tags alike (issue 15)."""
    arr = {"arrayValue": {"values": [{"stringValue": "a"}, {"stringValue": "b"}, {"intValue": "3"}]}}
    kv = {
        "kvlistValue": {
            "values": [
                {"key": "z", "value": {"boolValue": True}},
                {"key": "a", "value": {"doubleValue": 1.5}},
            ]
        }
    }
    raw = {"bytesValue": "AQID"}
    trace = "ab" * 16
    body = {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "arr"}}, {"key": "hosts", "value": arr}]},
        "scopeSpans": [{"spans": [{
            "traceId": trace, "spanId": "cd" * 8, "name": "op", "kind": 2,
            "startTimeUnixNano": str(time.time_ns() - 10**9), "endTimeUnixNano": str(time.time_ns()),
            "attributes": [{"key": "list", "value": arr}, {"key": "map", "value": kv}, {"key": "raw", "value": raw}],
            "events": [{"name": "e", "timeUnixNano": str(time.time_ns() - 5 * 10**8), "attributes": [{"key": "ev", "value": arr}]}],
        }]}],
    }]}  # fmt: skip
    assert httpx.post(f"{server.otlp_http_url}/v1/traces", json=body, timeout=30).status_code == 200
    (doc,) = httpx.get(f"{server.http_url}/api/traces/{trace}", timeout=30).json()["data"]
    (span,) = doc["spans"]
    tags = {t["key"]: (t["type"], t["value"]) for t in span["tags"]}
    assert tags["list"] == ("string", '["a","b",3]')
    assert tags["map"] == ("string", '{"a":1.5,"z":true}')
    assert tags["raw"] == ("binary", "AQID")
    assert {f["key"]: f["value"] for f in span["logs"][0]["fields"]}["ev"] == '["a","b",3]'
    process = {t["key"]: t["value"] for t in doc["processes"][span["processID"]]["tags"]}
    assert process["hosts"] == '["a","b",3]'


def test_doubles_that_json_has_no_number_for_render_as_protobufs_json_writes_them(server):
    """OTLP carries NaN and the infinities as doubles (OTLP/JSON as "NaN", "Infinity", "-Infinity");
    JSON has no such numbers, and the Jaeger answer failed to render (a 500, found by fuzzing)."""
    trace = "ef" * 16
    doubles = [("nan", "NaN"), ("inf", "Infinity"), ("neg", "-Infinity"), ("one", 1.5)]
    now = time.time_ns()
    body = {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "odd"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": trace, "spanId": "12" * 8, "name": "op", "kind": 2,
            "startTimeUnixNano": str(now - 10**9), "endTimeUnixNano": str(now),
            "attributes": [{"key": k, "value": {"doubleValue": v}} for k, v in doubles]
            + [{"key": "in.map", "value": {"kvlistValue": {"values": [{"key": "d", "value": {"doubleValue": "NaN"}}]}}}],
        }]}],
    }]}  # fmt: skip
    assert httpx.post(f"{server.otlp_http_url}/v1/traces", json=body, timeout=30).status_code == 200
    by_id = httpx.get(f"{server.http_url}/api/traces/{trace}", timeout=30)
    found = httpx.get(
        f"{server.http_url}/api/traces", params={"service": "odd", "lookback": "1h"}, timeout=30
    )
    for response in (by_id, found):
        assert response.status_code == 200, response.text[:300]
        (doc,) = response.json()["data"]
        tags = {t["key"]: (t["type"], t["value"]) for t in doc["spans"][0]["tags"]}
        assert [tags[k] for k, _ in doubles] == [("float64", v) for _, v in doubles]
        assert tags["in.map"] == ("string", '{"d":"NaN"}')
