"""RED metrics from spans, through OTLP in and `/metrics` (parsed by prometheus_client's OpenMetrics
parser) and `/api/v1/metrics` out."""

from __future__ import annotations

import time

import httpx
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from tests.conftest import ServerProcess

MS = 10**6
NOW = time.time_ns() // (60 * 10**9) * 60 * 10**9 - 5 * 60 * 10**9  # a whole minute, five minutes ago


def spans(service: str, name: str, durations_ms: list[int], errors: int, trace_base: int) -> dict:
    out = []
    for i, d in enumerate(durations_ms):
        span = {
            "traceId": f"{trace_base + i:032x}",
            "spanId": f"{trace_base + i:016x}",
            "name": name,
            "kind": 2,
            "startTimeUnixNano": str(NOW + i * 10**9),
            "endTimeUnixNano": str(NOW + i * 10**9 + d * MS),
        }
        if i < errors:
            span["status"] = {"code": 2, "message": "boom"}
        out.append(span)
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
                "scopeSpans": [{"spans": out}],
            }
        ]
    }


def test_red_metrics_on_metrics_and_the_api(server: ServerProcess) -> None:
    url = f"{server.otlp_http_url}/v1/traces"
    # 10 calls of checkout: 2 errors; durations 10..100 ms, one slow outlier of 3 s
    durations = [10, 20, 30, 40, 50, 60, 70, 80, 90, 3000]
    assert (
        httpx.post(url, json=spans("checkout", "POST /pay", durations, 2, 0x100), timeout=30).status_code
        == 200
    )
    assert (
        httpx.post(url, json=spans("cart", "GET /items", [5, 5, 5], 0, 0x200), timeout=30).status_code == 200
    )
    response = httpx.get(f"{server.http_url}/metrics", timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    calls = {
        (s.labels["service"], s.labels["status_code"]): s
        for s in families["clew_spanmetrics_calls"].samples
        if s.name == "clew_spanmetrics_calls_total"
    }
    assert calls[("checkout", "error")].value == 2
    assert calls[("checkout", "unset")].value == 8
    assert calls[("cart", "unset")].value == 3
    # the error counter's exemplar points at a failed trace
    assert calls[("checkout", "error")].exemplar.labels["trace_id"] in (f"{0x100:032x}", f"{0x101:032x}")
    latency = [
        s
        for s in families["clew_spanmetrics_latency_seconds"].samples
        if s.labels.get("service") == "checkout" and s.labels.get("status_code") == "unset"
    ]
    buckets = {s.labels["le"]: s for s in latency if s.name.endswith("_bucket")}
    assert buckets["0.05"].value == 3  # 30, 40, 50 ms among the 8 without error
    assert buckets["0.1"].value == 7
    assert buckets["5"].value == 8 and buckets["+Inf"].value == 8
    assert buckets["5"].exemplar.labels["trace_id"] == f"{0x109:032x}"  # the slowest trace
    assert buckets["5"].exemplar.value == 3.0
    (total,) = [s for s in latency if s.name.endswith("_sum")]
    assert abs(total.value - 3.42) < 1e-6  # 30+...+90 ms + 3 s
    committed = next(s for s in families["clew_ingest_committed_spans"].samples)
    assert committed.value == 13
    # the UI's timeline: per step, rate, error rate and quantiles
    body = httpx.get(
        f"{server.http_url}/api/v1/metrics",
        params={"service": "checkout", "start": NOW / 1e9 - 60, "end": NOW / 1e9 + 600, "step": 600},
        timeout=30,
    ).json()
    (point,) = body["points"]
    assert point["calls"] == 10 and point["errors"] == 2
    assert point["errorRate"] == 0.2
    assert 40 <= point["p50Ms"] <= 70
    assert point["p99Ms"] > 1000


def test_metrics_api_refuses_bad_parameters(server: ServerProcess) -> None:
    for params, message in (
        ({"step": "90"}, "step must be a whole number of minutes"),
        ({"start": "x"}, "start must be a number"),
        ({"spanKind": "weird"}, "unknown spanKind"),
    ):
        response = httpx.get(f"{server.http_url}/api/v1/metrics", params=params, timeout=30)
        assert response.status_code == 400 and message in response.json()["error"]


def test_jaeger_monitor_api_answers_from_the_same_minutes(server: ServerProcess) -> None:
    url = f"{server.otlp_http_url}/v1/traces"
    durations = [10, 20, 30, 40, 50, 60, 70, 80, 90, 3000]
    assert (
        httpx.post(url, json=spans("checkout", "POST /pay", durations, 2, 0x300), timeout=30).status_code
        == 200
    )
    assert (
        httpx.post(url, json=spans("checkout", "GET /cart", [5, 5], 0, 0x400), timeout=30).status_code == 200
    )
    params = {"service": "checkout", "endTs": NOW // 10**6 + 600_000, "lookback": 1_200_000, "step": 600_000}
    calls = httpx.get(f"{server.http_url}/api/metrics/calls", params=params, timeout=30).json()
    assert calls["name"] == "service_call_rate" and calls["type"] == "GAUGE"
    (series,) = calls["metrics"]
    assert series["labels"] == [{"name": "service_name", "value": "checkout"}]
    assert sum(p["gaugeValue"]["doubleValue"] for p in series["metricPoints"]) * 600 == 12
    errors = httpx.get(
        f"{server.http_url}/api/metrics/errors", params={**params, "groupByOperation": "true"}, timeout=30
    ).json()
    assert errors["name"] == "service_operation_error_rate"
    by_operation = {
        next(label["value"] for label in m["labels"] if label["name"] == "operation"): m["metricPoints"]
        for m in errors["metrics"]
    }
    assert [p["gaugeValue"]["doubleValue"] for p in by_operation["POST /pay"]] == [0.2]
    assert [p["gaugeValue"]["doubleValue"] for p in by_operation["GET /cart"]] == [0.0]
    latencies = httpx.get(
        f"{server.http_url}/api/metrics/latencies", params={**params, "quantile": "0.5"}, timeout=30
    ).json()
    (series,) = latencies["metrics"]
    (point,) = series["metricPoints"]
    assert 5 <= point["gaugeValue"]["doubleValue"] <= 70  # ms
    assert httpx.get(f"{server.http_url}/api/metrics/calls", timeout=30).status_code == 400
    assert httpx.get(f"{server.http_url}/api/metrics/colour", params=params, timeout=30).status_code == 404
