"""Numbers in query parameters: anything that is not a finite number in range gets a 400 naming the
parameter and its range, on every read API, and never reaches the engine (issue 12, finding 5).
Engine failures reach clients without the engine's own text (finding 7)."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import ServerProcess
from tests.shop_data import A

BAD_SECONDS = ["nan", "NaN", "inf", "-inf", "1e300", "-1", "9223372037", "1" * 400, "abc"]
TIME_RANGE_ROUTES = [
    "/api/v1/search?q={}&start={v}",
    "/api/v1/search?q={}&end={v}",
    "/api/v1/metrics?start={v}",
    "/api/v1/metrics?end={v}",
    "/api/v1/servicegraph?end={v}",
    "/api/v1/completeness?start={v}",
]
BAD_INTEGERS = ["1e30", "1" * 40, "nan", "-5", "99999999999999999999999"]
INTEGER_ROUTES = [
    "/api/traces?service=frontend&limit={v}",
    "/api/traces?service=frontend&start={v}",
    "/api/traces?service=frontend&end={v}",
    "/api/dependencies?endTs={v}",
    "/api/dependencies?lookback={v}",
    "/api/metrics/calls?service=frontend&endTs={v}",
    "/api/metrics/latencies?service=frontend&quantile={v}",
    "/api/v1/metrics?step={v}",
    "/api/v1/search?q={}&limit={v}",
    "/api/v1/search?q={}&spss={v}",
]


def _get(server: ServerProcess, path: str) -> httpx.Response:
    return httpx.get(server.http_url + path, timeout=30)


@pytest.mark.parametrize("route", TIME_RANGE_ROUTES)
@pytest.mark.parametrize("value", BAD_SECONDS)
def test_time_ranges_out_of_range_are_refused(shop_server: ServerProcess, route: str, value: str):
    response = _get(shop_server, route.replace("{v}", value))
    assert response.status_code == 400, (route, value, response.text)
    name = "start" if "start=" in route else "end"
    assert name in response.json()["error"]


@pytest.mark.parametrize("route", INTEGER_ROUTES)
@pytest.mark.parametrize("value", BAD_INTEGERS)
def test_integers_out_of_range_are_refused(shop_server: ServerProcess, route: str, value: str):
    response = _get(shop_server, route.replace("{v}", value))
    assert response.status_code == 400, (route, value, response.text)
    body = response.json()
    assert (body.get("error") or body["errors"][0]["msg"]).strip()


def test_durations_beyond_what_is_stored_are_refused(shop_server: ServerProcess):
    response = _get(shop_server, "/api/traces?service=frontend&minDuration=2562048h")
    assert response.status_code == 400
    assert "2562047h" in response.text
    # the longest that is stored still answers (nothing lasts that long)
    response = _get(shop_server, "/api/traces?service=frontend&minDuration=2562047h&lookback=8760h")
    assert response.status_code == 200 and response.json()["data"] == []


def test_the_edges_of_each_range_answer(shop_server: ServerProcess):
    assert _get(shop_server, "/api/v1/search?q={}&start=0&end=9223372036").status_code == 200
    response = _get(shop_server, "/api/traces?service=frontend&limit=1000&lookback=8760h")
    assert response.status_code == 200
    assert _get(shop_server, "/api/traces?service=frontend&limit=1001").status_code == 400
    assert _get(shop_server, f"/api/v1/traces/{A}").status_code == 200


def test_backslashes_in_any_value_are_taken_as_sent(server: ServerProcess):
    """Finding 3: `\\` in a service name, a Jaeger tag or a path segment is a plain character (no
    escape decoding, no engine error), so `C:\\temp\\x` is found exactly and `\\x61` is not `a`."""
    span = {
        "traceId": "c" * 32,
        "spanId": "1" * 16,
        "name": "open",
        "startTimeUnixNano": "1700000000000000000",
        "endTimeUnixNano": "1700000000001000000",
        "attributes": [{"key": "path", "value": {"stringValue": "C:\\temp\\x"}}],
    }
    doc = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "a\\b"}}]},
                              "scopeSpans": [{"spans": [span]}]}]}  # fmt: skip
    assert httpx.post(f"{server.otlp_http_url}/v1/traces", json=doc, timeout=30).status_code == 200
    window = {"start": "1699999990000000", "end": "1700000010000000"}
    for service, found in (("a\\b", 1), ("\\", 0), ("a\\\\b", 0)):
        response = _get(server, "/api/traces?" + httpx.QueryParams({"service": service, **window}).__str__())
        assert response.status_code == 200 and len(response.json()["data"]) == found, service
    response = _get(server, "/api/services/a%5Cb/operations")
    assert response.status_code == 200 and response.json()["data"] == ["open"]
    assert _get(server, "/api/services/%5C/operations").json()["data"] == []
    for tags, found in (
        ('{"path":"C:\\\\temp\\\\x"}', 1),
        ('{"path":"C:\\\\temp\\\\x61"}', 0),
        ('{"path":"C:"}', 0),
    ):
        params = httpx.QueryParams({"service": "a\\b", "tags": tags, **window})
        response = _get(server, f"/api/traces?{params}")
        assert response.status_code == 200 and len(response.json()["data"]) == found, tags
    response = _get(
        server, "/api/v1/search?" + str(httpx.QueryParams({"q": '{ .path = "C:\\\\temp\\\\x" }', "start": 0}))
    )
    assert response.status_code == 200 and [t["traceID"] for t in response.json()["traces"]] == ["c" * 32]
