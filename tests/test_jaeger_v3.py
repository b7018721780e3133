"""Jaeger's v3 API (issue 15, part 3) with the requests Jaeger UI's v3 client sends
(packages/jaeger-ui/src/api/v3/client.ts: snake_case `query.*`, RFC 3339 times, attributes as JSON)
and the IDL's camelCase names; answers shaped as Jaeger's own examples
(tests/conformance/jaeger/api_v3)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import pytest

from tests.conftest import CONFORMANCE, ServerProcess
from tests.shop_data import NOW, A, C

EXAMPLES = CONFORMANCE / "jaeger" / "api_v3"


def iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ns % 10**9:09d}Z"


WINDOW = {"query.start_time_min": iso(NOW - 4 * 3600 * 10**9), "query.start_time_max": iso(NOW + 10**9)}


@pytest.fixture
def jaeger(shop_server: ServerProcess) -> ServerProcess:
    """The shop's traces, on each store connection."""
    return shop_server


def get(proc: ServerProcess, path: str, **params: object) -> httpx.Response:
    return httpx.get(f"{proc.http_url}{path}", params=params, timeout=30)


def keys(doc: object) -> object:
    """The shape of a document: its keys, recursively (first element of lists)."""
    if isinstance(doc, dict):
        return {k: keys(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [keys(doc[0])] if doc else []
    return None


def test_services_and_operations(jaeger: ServerProcess) -> None:
    services = get(jaeger, "/api/v3/services").json()
    assert services == {"services": ["checkout", "frontend"]}
    assert set(services) == set(json.loads((EXAMPLES / "GetServices.json").read_text()))
    ops = get(jaeger, "/api/v3/operations", service="frontend").json()["operations"]
    assert {"name": "GET /checkout", "spanKind": "server"} in ops and {
        "name": "render",
        "spanKind": "internal",
    } in ops
    assert keys(ops[0]) == keys(json.loads((EXAMPLES / "GetOperations.json").read_text())["operations"][0])
    clients = get(jaeger, "/api/v3/operations", service="frontend", spanKind="client").json()["operations"]
    assert clients == [{"name": "HTTP POST", "spanKind": "client"}]


def test_a_trace_by_id_in_the_gateway_envelope(jaeger: ServerProcess) -> None:
    doc = get(jaeger, f"/api/v3/traces/{A}").json()
    spans = [s for rs in doc["result"]["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
    assert len(spans) == 5 and {s["traceId"] for s in spans} == {A}
    example = json.loads((EXAMPLES / "GetTrace.json").read_text())
    assert set(doc) == set(example) and set(doc["result"]) == set(example["result"])
    missing = get(jaeger, f"/api/v3/traces/{'0' * 31}1")
    assert missing.status_code == 404 and missing.json()["error"]["httpCode"] == 404


def test_search_and_summaries_as_jaeger_ui_asks(jaeger: ServerProcess) -> None:
    params = {
        **WINDOW,
        "query.service_name": "frontend",
        "query.span_name": "GET /checkout",
        "query.num_traces": "20",
        "query.duration_min": "1s",
    }
    summaries = get(jaeger, "/api/v3/trace-summaries", **params).json()["summaries"]
    assert [s["traceId"] for s in summaries] == [C]  # the 1.2 s checkout, not the 300 ms one
    (summary,) = summaries
    assert summary["rootServiceName"] == "frontend" and summary["rootOperationName"] == "GET /checkout"
    assert int(summary["maxEndTimeUnixNano"]) - int(summary["minStartTimeUnixNano"]) == 1_200_000_000
    assert summary["spanCount"] == 2 and summary["errorSpanCount"] == 0
    assert {s["name"] for s in summary["services"]} == {"frontend", "checkout"}
    example = json.loads((EXAMPLES / "FindTraceSummaries.json").read_text())["summaries"][0]
    assert set(summary) == set(example) and set(summary["services"][0]) == set(example["services"][0])

    # the IDL's camelCase names and attributes as JSON (Jaeger UI passes its tags that way)
    camel = {
        "query.serviceName": "checkout",
        "query.startTimeMin": WINDOW["query.start_time_min"],
        "query.startTimeMax": WINDOW["query.start_time_max"],
        "query.attributes": json.dumps({"http.status_code": "500"}),
    }
    found = get(jaeger, "/api/v3/traces", **camel).json()["result"]["resourceSpans"]
    assert {s["traceId"] for rs in found for ss in rs["scopeSpans"] for s in ss["spans"]} == {A}
    nothing = get(jaeger, "/api/v3/traces", **{**camel, "query.attributes": '{"http.status_code": "418"}'})
    assert nothing.status_code == 404 and nothing.json() == {
        "error": {"httpCode": 404, "message": "No traces found"}
    }


@pytest.mark.parametrize(
    "params",
    [
        {"query.service_name": "frontend"},  # no time range
        {**WINDOW},  # no service
        {**WINDOW, "query.service_name": "frontend", "query.start_time_min": "yesterday"},
        {**WINDOW, "query.service_name": "frontend", "query.duration_min": "fast"},
        {**WINDOW, "query.service_name": "frontend", "query.num_traces": "0"},
        {**WINDOW, "query.service_name": "frontend", "query.attributes": "[1]"},
    ],
)
def test_bad_parameters_are_400_in_the_gateway_shape(jaeger: ServerProcess, params: dict) -> None:
    response = get(jaeger, "/api/v3/trace-summaries", **params)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["httpCode"] == 400 and error["message"]


def test_times_past_what_nanoseconds_hold_are_the_ends_of_the_range(jaeger: ServerProcess) -> None:
    """A window ending in 2263 or starting in 1600 (outside 64-bit nanoseconds) finds what the same
    window ending in 2100 finds, instead of nothing (found by fuzzing)."""
    base = {"query.service_name": "frontend", "query.num_traces": "20"}
    within = {
        **base,
        "query.start_time_min": "1970-01-01T00:00:00Z",
        "query.start_time_max": "2100-01-01T00:00:00Z",
    }
    beyond = {
        **base,
        "query.start_time_min": "1600-01-01T00:00:00Z",
        "query.start_time_max": "2263-01-01T00:00:00Z",
    }
    found = get(jaeger, "/api/v3/trace-summaries", **within).json()["summaries"]
    assert found and get(jaeger, "/api/v3/trace-summaries", **beyond).json()["summaries"] == found
