"""The query language through `GET /api/v1/search` on a real server, over a small shop of known traces."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import ServerProcess
from tests.shop_data import MS, NOW, A, B, C, D


def search(server: ServerProcess, q: str, **params: object) -> httpx.Response:
    return httpx.get(f"{server.http_url}/api/v1/search", params={"q": q, **params}, timeout=30)


def found(server: ServerProcess, q: str, **params: object) -> list[str]:
    response = search(server, q, **params)
    assert response.status_code == 200, response.text
    return [t["traceID"] for t in response.json()["traces"]]


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("{ }", [C, A, B]),
        ("{ status = error }", [A]),
        ("{ status != error && kind = server }", [C, A, B]),
        ("{ span.http.status_code >= 500 }", [A]),
        ("{ span.http.status_code = 200 }", [C]),
        ('{ span.http.status_code = "500" }', []),  # types matter: the attribute is an int
        ("{ duration > 1s }", [C]),
        ("{ duration >= 240ms && duration < 1.1s }", [A]),
        ('{ name =~ "GET /check.*" }', [C, A]),
        ('{ name =~ "check" }', []),  # regexes match the whole value
        ('{ name !~ "GET.*" && kind = server }', [C, A]),
        ('{ resource.deployment.environment = "prod" }', [C]),
        ('{ .deployment.environment = "prod" }', [C]),
        ('{ service = "checkout" && statusMessage = "card declined" }', [A]),
        ('{ resource.service.name = "frontend" && (name = "render" || name = "GET /old") }', [B]),
        ("{ span.user.vip = true }", [B]),
        ("{ span.ratio > 0.25 }", [B]),
        ("{ .db.system != nil }", [A]),
        ('{ span.db.system = nil && service = "checkout" }', [C, A]),
        ('{ resource.service.name = "frontend" } > { service = "checkout" }', [C, A]),
        ('{ kind = server && service = "frontend" } > { service = "checkout" }', [C]),
        ('{ kind = server && service = "frontend" } >> { name = "db.query" }', [A]),
        ('{ name = "GET /home" } >> { name = "db.query" }', []),
        ('{ name = "db.query" } ~ { name = "cache.get" }', [A]),
        ('{ name = "db.query" } ~ { name = "db.query" }', []),  # a span is not its own sibling
        ('{ name = "db.query" } && { name = "render" }', []),
        ('{ name = "db.query" } || { name = "render" }', [A, B]),
        ('({ name = "db.query" } || { name = "render" }) && { kind = internal }', [B]),
        ("{ } | count() > 4", [A]),
        ("{ } | count() = 2", [C, B]),
        ('{ service = "frontend" } | avg(duration) > 500ms', [C]),
        ('{ service = "checkout" } | max(duration) < 1s | min(duration) >= 5ms', [A]),
        ("{ kind = client } | sum(duration) = 305ms", [A]),
        ("{ } | avg(span.ratio) > 0.1", [B]),
        ('{ name = "x\' OR 1=1 --" }', []),  # values are parameters, never SQL text
    ],
)
def test_query_finds_exactly_the_expected_traces(
    shop_server: ServerProcess, q: str, expected: list[str]
) -> None:
    assert found(shop_server, q) == expected


def test_summary_describes_the_trace_and_its_matching_spans(shop_server: ServerProcess) -> None:
    response = search(shop_server, "{ status = error }")
    doc = response.json()
    assert doc["metrics"]["completed"] is True
    (trace,) = doc["traces"]
    assert trace["traceID"] == A
    assert trace["rootServiceName"] == "frontend"
    assert trace["rootTraceName"] == "GET /checkout"
    assert trace["startTimeUnixNano"] == str(NOW - 10 * 60 * 10**9)
    assert trace["durationMs"] == 300
    assert (trace["spanCount"], trace["errorCount"]) == (5, 1)
    assert trace["serviceStats"] == {
        "checkout": {"spanCount": 3, "errorCount": 1},
        "frontend": {"spanCount": 2, "errorCount": 0},
    }
    assert trace["spanSet"]["matched"] == 1
    (hit,) = trace["spanSet"]["spans"]
    assert (hit["spanID"], hit["service"], hit["name"], hit["status"]) == (
        "7" * 16,
        "checkout",
        "POST /pay",
        "error",
    )
    assert hit["durationNanos"] == str(240 * MS)


def test_structural_query_returns_the_right_hand_spans(shop_server: ServerProcess) -> None:
    doc = search(shop_server, '{ name = "db.query" } ~ { }').json()
    (trace,) = doc["traces"]
    assert [s["name"] for s in trace["spanSet"]["spans"]] == ["cache.get"]


def test_limit_and_spans_per_trace(shop_server: ServerProcess) -> None:
    assert found(shop_server, "{ }", limit=1) == [C]
    assert found(shop_server, "{ } | count() > 0", limit=2) == [C, A]
    (trace,) = search(shop_server, '{ service = "checkout" && kind = client }', spss=1).json()["traces"]
    assert trace["spanSet"]["matched"] == 2
    assert len(trace["spanSet"]["spans"]) == 1


def test_time_range_defaults_to_the_last_hour(shop_server: ServerProcess) -> None:
    assert D not in found(shop_server, "{ }")
    start = (NOW - 4 * 3600 * 10**9) / 10**9
    end = (NOW - 2 * 3600 * 10**9) / 10**9
    assert found(shop_server, "{ }", start=start, end=end) == [D]


def test_tenants_do_not_see_each_other(shop_server: ServerProcess) -> None:
    response = httpx.get(
        f"{shop_server.http_url}/api/v1/search",
        params={"q": "{ }"},
        headers={"X-Scope-OrgID": "someone-else"},
        timeout=30,
    )
    assert response.status_code == 200
    assert response.json()["traces"] == []


@pytest.mark.parametrize(
    ("q", "position", "fragment"),
    [
        ('{ name = "x"', 13, "'}'"),
        ("{ name = }", 10, "a string"),
        ("{ name # 1 }", 8, "comparison operator"),
        ("{ } | count() >", 16, "a number"),
        ("{ } { }", 5, "structural operator"),
    ],
)
def test_syntax_errors_name_the_position_and_what_was_expected(
    shop_server: ServerProcess, q: str, position: int, fragment: str
) -> None:
    response = search(shop_server, q)
    assert response.status_code == 400
    body = response.json()
    assert body["position"] == position, body
    assert any(fragment in e for e in body["expected"]), body
    assert f"column {position}" in body["error"]


@pytest.mark.parametrize(
    ("q", "message"),
    [
        ("{ colour = 1 }", "unknown intrinsic 'colour'"),
        ("{ status = 5 }", "status compares with = or != to one of unset, ok, error"),
        ("{ duration > 10 }", "duration compares with a duration"),
        ('{ name =~ "(" }', "invalid regular expression"),
        ("{ name = server }", "compares with a quoted string"),
        ("{ } | avg() > 1", "avg() needs a field"),
        ("", "the query is empty"),
    ],
)
def test_meaningless_queries_are_refused_with_a_reason(
    shop_server: ServerProcess, q: str, message: str
) -> None:
    response = search(shop_server, q)
    assert response.status_code == 400
    assert message in response.json()["error"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "parameter 'q' is required"),
        ({"q": "{ }", "limit": "0"}, "limit must be"),
        ({"q": "{ }", "limit": "ten"}, "limit must be a number"),
        ({"q": "{ }", "start": "10", "end": "5"}, "start must not be after end"),
    ],
)
def test_bad_parameters_are_400(shop_server: ServerProcess, params: dict, message: str) -> None:
    response = httpx.get(f"{shop_server.http_url}/api/v1/search", params=params, timeout=30)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_openapi_describes_the_native_api(shop_server: ServerProcess) -> None:
    doc = httpx.get(f"{shop_server.http_url}/api/v1/openapi.json", timeout=30).json()
    assert doc["openapi"].startswith("3.")
    assert {
        "/api/v1/search",
        "/api/v1/traces/{traceID}",
        "/api/v1/traces/{traceID}/linked-from",
        "/api/v1/traces/{traceID}/skeleton",
        "/api/v1/traces/{traceID}/spans/{spanID}",
        "/api/v1/openapi.json",
    } <= set(doc["paths"])
    params = {p["name"] for p in doc["paths"]["/api/v1/search"]["get"]["parameters"]}
    assert {"q", "start", "end", "limit"} <= params
