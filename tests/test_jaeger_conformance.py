"""Jaeger's own storage conformance cases, run through clew's Jaeger-compatible HTTP API.

Every fixture is written first (dates moved as Jaeger moves them), then every query runs; each must
return exactly its expected traces. Returned traces are compared with the fixtures: through the
Jaeger API shape (ids, names, times, references, typed tags, logs, processes) and, field by field,
through the native OTLP/JSON endpoint.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest

from tests.conftest import CONFORMANCE, canonical_spans

JAEGER = CONFORMANCE / "jaeger"
FIXTURES = sorted((JAEGER / "traces").glob("*.json"))
QUERIES = json.loads((JAEGER / "queries.json").read_text())
DAY_NS = 86_400 * 10**9


def _moved_dates() -> dict[date, date]:
    today = datetime.now(UTC).date()
    return {date(2017, 1, 26): today - timedelta(days=1), date(2017, 1, 25): today - timedelta(days=2)}


# Taken once: the fixtures and the queries' windows must move to the same days, even when the
# module runs across midnight UTC.
MOVED = _moved_dates()


def _move_ns(text: str) -> str:
    ns = int(text)
    day = datetime.fromtimestamp(ns // 10**9, UTC).date()
    target = MOVED.get(day)
    return str(ns + (target - day).days * DAY_NS) if target else text


def load_fixture(path) -> dict:
    """A fixture with every timestamp moved to recent days, keeping the time of day."""
    doc = json.loads(path.read_text())
    for rs in doc["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for span in ss["spans"]:
                for key in ("startTimeUnixNano", "endTimeUnixNano"):
                    span[key] = _move_ns(span[key])
                for event in span.get("events", []):
                    event["timeUnixNano"] = _move_ns(event["timeUnixNano"])
    return doc


def _trace_ids(doc: dict) -> set[str]:
    return {s["span"]["traceId"].lower() for s in canonical_spans(doc).values()}


def jaeger_id(hex32: str) -> str:
    return hex32[16:] if hex32.startswith("0" * 16) else hex32


@pytest.fixture(scope="module")
def loaded(store_server):
    """Every fixture written through OTLP/HTTP, once per store connection."""
    server = store_server
    fixtures = {}
    for path in FIXTURES:
        doc = load_fixture(path)
        response = httpx.post(
            f"{server.otlp_http_url}/v1/traces",
            json=doc,
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        assert response.status_code == 200, (path.name, response.text)
        assert response.json() == {}, path.name
        fixtures[path.stem] = doc
    return server, fixtures


def _time_param(text: str) -> int:
    """RFC 3339 in the query, with its date moved, as microseconds since the epoch."""
    for old, new in MOVED.items():
        text = text.replace(old.isoformat(), new.isoformat())
    return int(datetime.fromisoformat(text).timestamp() * 1_000_000)


def _tag_text(value) -> str:
    return json.dumps(value) if isinstance(value, bool) else str(value)


def _params(query: dict) -> dict:
    params = {
        "service": query["ServiceName"],
        "start": _time_param(query["StartTimeMin"]),
        "end": _time_param(query["StartTimeMax"]),
        "limit": query["NumTraces"],
    }
    if query["OperationName"]:
        params["operation"] = query["OperationName"]
    if query["Tags"]:
        params["tags"] = json.dumps({k: _tag_text(v) for k, v in query["Tags"].items()})
    if query["DurationMin"]:
        params["minDuration"] = f"{query['DurationMin']}ns"
    if query["DurationMax"]:
        params["maxDuration"] = f"{query['DurationMax']}ns"
    return params


_JAEGER_TYPES = {"stringValue": "string", "intValue": "int64", "doubleValue": "float64", "boolValue": "bool"}


def _expected_tag(kv: dict) -> dict:
    (kind, value), *_ = kv["value"].items()
    if kind == "intValue":
        value = int(value)
    if kind == "bytesValue":
        return {
            "key": kv["key"],
            "type": "binary",
            "value": base64.b64encode(base64.b64decode(value)).decode(),
        }
    return {"key": kv["key"], "type": _JAEGER_TYPES[kind], "value": value}


def _expected_tag_of(item: dict, key: str):
    return next((_expected_tag(kv)["value"] for kv in item.get("attributes", []) if kv["key"] == key), None)


def _check_jaeger_shape(trace: dict, fixture: dict) -> None:
    """The Jaeger JSON of a trace says what the OTLP fixture says."""
    spans = {s["spanID"]: s for s in trace["spans"]}
    expected = canonical_spans(fixture)
    assert set(spans) == set(expected)
    for span_id, item in expected.items():
        got, want = spans[span_id], item["span"]
        assert got["traceID"] == jaeger_id(want["traceId"])
        assert got["operationName"] == want.get("name", "")
        assert got["startTime"] == int(want["startTimeUnixNano"]) // 1000
        assert got["duration"] == (int(want["endTimeUnixNano"]) - int(want["startTimeUnixNano"])) // 1000
        refs = [(r["refType"], r["traceID"], r["spanID"]) for r in got["references"]]
        parent = [("CHILD_OF", got["traceID"], want["parentSpanId"])] if want.get("parentSpanId") else []
        links = [
            (
                "CHILD_OF" if _expected_tag_of(ln, "opentracing.ref_type") == "child_of" else "FOLLOWS_FROM",
                jaeger_id(ln["traceId"]),
                ln["spanId"],
            )
            for ln in want["links"]
        ]
        assert refs == parent + links
        for kv in want["attributes"]:
            assert _expected_tag(kv) in got["tags"], kv
        assert len(got["logs"]) == len(want["events"])
        for log, event in zip(got["logs"], want["events"], strict=True):
            assert log["timestamp"] == int(event["timeUnixNano"]) // 1000
            for kv in event["attributes"]:
                assert _expected_tag(kv) in log["fields"], kv
        process = trace["processes"][got["processID"]]
        resource = {kv["key"]: kv for kv in item["resource"]["attributes"]}
        assert process["serviceName"] == resource["service.name"]["value"]["stringValue"]
        for key, kv in resource.items():
            if key != "service.name":
                assert _expected_tag(kv) in process["tags"], kv


@pytest.mark.parametrize("case", QUERIES, ids=[q["Caption"] for q in QUERIES])
def test_jaeger_query(loaded, case):
    server, fixtures = loaded
    response = httpx.get(f"{server.http_url}/api/traces", params=_params(case["Query"]), timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["errors"] is None
    expected_ids = set().union(*(_trace_ids(fixtures[name]) for name in case["ExpectedFixtures"]))
    got = {t["traceID"]: t for t in body["data"]}
    assert set(got) == {jaeger_id(t) for t in expected_ids}
    assert body["total"] == len(expected_ids)
    for name in case["ExpectedFixtures"]:
        fixture = fixtures[name]
        (trace_id,) = _trace_ids(fixture)
        _check_jaeger_shape(got[jaeger_id(trace_id)], fixture)
        # every field, through the native API
        assert canonical_spans(server.trace(trace_id)) == _without_empty_status(canonical_spans(fixture))


def _without_empty_status(spans: dict) -> dict:
    for item in spans.values():
        if item["span"].get("status") == {}:
            del item["span"]["status"]
    return spans


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_trace_by_id_matches_fixture(loaded, path):
    server, fixtures = loaded
    fixture = fixtures[path.stem]
    (trace_id,) = _trace_ids(fixture)
    response = httpx.get(f"{server.http_url}/api/traces/{trace_id}", timeout=30)
    assert response.status_code == 200
    (trace,) = response.json()["data"]
    _check_jaeger_shape(trace, fixture)


def test_services_and_operations(loaded):
    server, fixtures = loaded
    services = {
        kv["value"]["stringValue"]
        for doc in fixtures.values()
        for item in canonical_spans(doc).values()
        for kv in item["resource"]["attributes"]
        if kv["key"] == "service.name"
    }
    body = httpx.get(f"{server.http_url}/api/services").json()
    assert set(body["data"]) == services and body["total"] == len(services)

    ops = httpx.get(f"{server.http_url}/api/services/query06-service/operations").json()["data"]
    assert ops == ["query06-operation"]
    typed = httpx.get(f"{server.http_url}/api/operations", params={"service": "query06-service"}).json()
    kinds = {item["span"].get("kind", 0) for item in canonical_spans(fixtures["opname_trace"]).values()}
    names = {0: "", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
    assert typed["data"] == [{"name": "query06-operation", "spanKind": names[k]} for k in sorted(kinds)]


def test_unknown_trace_and_bad_parameters(loaded):
    server, _ = loaded
    missing = httpx.get(f"{server.http_url}/api/traces/" + "ab" * 16)
    assert missing.status_code == 404
    assert missing.json() == {
        "data": None, "total": 0, "limit": 0, "offset": 0, "errors": [{"code": 404, "msg": "trace not found"}]
    }  # fmt: skip
    for params, reason in [
        ({}, "'service' is required"),
        ({"service": "x", "minDuration": "fast"}, "cannot parse duration 'fast'"),
        ({"service": "x", "tags": "{oops"}, "tags must be a JSON object"),
        ({"service": "x", "start": "yesterday"}, "start must be an integer"),
    ]:
        response = httpx.get(f"{server.http_url}/api/traces", params=params)
        assert response.status_code == 400
        assert reason in response.json()["errors"][0]["msg"]
