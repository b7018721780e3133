"""Tempo's HTTP API on its own port (issue 15, part 1), with the requests Grafana's Tempo data source
sends (pkg/tsdb/tempo and the data source's frontend in grafana/grafana): health and version, TraceQL
search, tag discovery for the query builder, traces by id as protobuf (v2 first, v1 as fallback)."""

from __future__ import annotations

import math
from urllib.parse import quote

import httpx
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from tests.conftest import ServerProcess
from tests.shop_data import NOW, A, B, C, D

START, END = (NOW - 4 * 3600 * 10**9) // 10**9, NOW // 10**9 + 60
WINDOW = {"start": START, "end": END}


@pytest.fixture
def tempo(shop_server: ServerProcess) -> ServerProcess:
    """The shop's traces, on each store connection."""
    return shop_server


def get(proc: ServerProcess, path: str, **params: object) -> httpx.Response:
    return httpx.get(f"{proc.tempo_url}{path}", params=params, timeout=30)


def test_the_port_is_in_the_listening_line_and_answers_health_and_version(tempo: ServerProcess) -> None:
    line = next(line for line in tempo.output if line.startswith("clew listening"))
    assert f" tempo={tempo.tempo_port}" in line and tempo.tempo_port not in (0, tempo.http_port)
    assert get(tempo, "/api/echo").text == "echo"
    assert get(tempo, "/ready").status_code == 200
    info = get(tempo, "/api/status/buildinfo").json()
    assert info["version"].count(".") == 2 and "clew" in info["revision"]
    assert get(tempo, "/api/nothing").status_code == 404


def test_traceql_search_as_grafana_sends_it(tempo: ServerProcess) -> None:
    q = '{ resource.service.name = "checkout" && span.http.status_code = 500 }'
    doc = get(tempo, "/api/search", q=q, limit=20, spss=3, **WINDOW).json()
    (hit,) = doc["traces"]
    assert (
        hit["traceID"] == A
        and hit["rootServiceName"] == "frontend"
        and hit["rootTraceName"] == "GET /checkout"
    )
    assert hit["durationMs"] == 300 and hit["startTimeUnixNano"].isdigit()
    assert [s["name"] for s in hit["spanSet"]["spans"]] == ["POST /pay"] and hit["spanSet"]["matched"] == 1
    everything = get(tempo, "/api/search", q="{}", limit=20, **WINDOW).json()["traces"]
    assert {t["traceID"] for t in everything} == {A, B, C, D}
    bad = get(tempo, "/api/search", q="{ span.x = }", **WINDOW)
    assert bad.status_code == 400 and bad.headers["content-type"].startswith("text/plain") and bad.text


def test_the_older_tags_search_with_trace_durations(tempo: ServerProcess) -> None:
    found = get(tempo, "/api/search", tags='service.name=frontend name="GET /checkout"', **WINDOW).json()
    assert {t["traceID"] for t in found["traces"]} == {A, C}
    slow = get(tempo, "/api/search", tags="service.name=frontend", minDuration="1s", **WINDOW).json()
    assert [t["traceID"] for t in slow["traces"]] == [C]  # the trace's duration, not one span's
    quick = get(tempo, "/api/search", tags="service.name=frontend", maxDuration="100ms", **WINDOW).json()
    assert {t["traceID"] for t in quick["traces"]} == {B, D}
    typed = get(tempo, "/api/search", tags="http.status_code=500", **WINDOW).json()
    assert [t["traceID"] for t in typed["traces"]] == [A]  # an int attribute found by its text
    assert get(tempo, "/api/search", tags="x=1", minDuration="soon", **WINDOW).status_code == 400


def test_tag_discovery_for_the_query_builder(tempo: ServerProcess) -> None:
    v2 = get(tempo, "/api/v2/search/tags", **WINDOW).json()
    scopes = {s["name"]: s["tags"] for s in v2["scopes"]}
    assert {"service.name", "deployment.environment"} <= set(scopes["resource"])
    assert {"http.status_code", "db.system", "ratio", "user.vip"} <= set(scopes["span"])
    assert {"name", "status", "kind", "duration"} <= set(scopes["intrinsic"])
    only = get(tempo, "/api/v2/search/tags", scope="resource", **WINDOW).json()["scopes"]
    assert [s["name"] for s in only] == ["resource"]
    assert "http.status_code" in get(tempo, "/api/search/tags", **WINDOW).json()["tagNames"]

    services = get(tempo, "/api/v2/search/tag/resource.service.name/values", **WINDOW).json()["tagValues"]
    assert sorted(v["value"] for v in services) == ["checkout", "frontend"]
    assert all(v["type"] == "string" for v in services)
    codes = get(tempo, "/api/v2/search/tag/span.http.status_code/values", **WINDOW).json()["tagValues"]
    assert sorted((v["type"], v["value"]) for v in codes) == [("int", "200"), ("int", "500")]
    vip = get(tempo, "/api/v2/search/tag/.user.vip/values", **WINDOW).json()["tagValues"]
    assert vip == [{"type": "bool", "value": "true"}]
    # span names of one service: the query builder passes the service it has picked as q
    q = '{ resource.service.name = "checkout" }'
    names = get(tempo, "/api/v2/search/tag/name/values", q=q, **WINDOW).json()["tagValues"]
    assert sorted(v["value"] for v in names) == ["POST /pay", "cache.get", "db.query"]
    status = get(tempo, "/api/v2/search/tag/status/values", **WINDOW).json()["tagValues"]
    assert {v["value"] for v in status} == {"error", "unset"} and {v["type"] for v in status} == {"keyword"}
    v1 = get(tempo, "/api/search/tag/db.system/values", **WINDOW).json()
    assert v1 == {"tagValues": ["postgres"]}
    assert get(tempo, "/api/v2/search/tags", scope="bogus", **WINDOW).status_code == 400
    assert get(tempo, "/api/v2/search/tag/name/values", q="{ .a = 1 } >> { }", **WINDOW).status_code == 400


def _trace_of(body: bytes, v2: bool) -> TracesData:
    if v2:  # TraceByIDResponse: field 1 (length-delimited) is the Trace
        assert body[0] == 0x0A
        length, shift, i = 0, 0, 1
        while True:
            length |= (body[i] & 0x7F) << shift
            shift, i = shift + 7, i + 1
            if not body[i - 1] & 0x80:
                break
        assert len(body) == i + length
        body = body[i:]
    return TracesData.FromString(body)


@pytest.mark.parametrize("v2", [True, False])
def test_traces_by_id_as_grafana_decodes_them(tempo: ServerProcess, v2: bool) -> None:
    path = f"/api/v2/traces/{A}" if v2 else f"/api/traces/{A}"
    response = httpx.get(
        f"{tempo.tempo_url}{path}", params=WINDOW, headers={"Accept": "application/protobuf"}, timeout=30
    )
    assert response.status_code == 200 and response.headers["content-type"] == "application/protobuf"
    trace = _trace_of(response.content, v2)
    spans = [s for rs in trace.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert sorted(s.name for s in spans) == [
        "GET /checkout",
        "HTTP POST",
        "POST /pay",
        "cache.get",
        "db.query",
    ]
    assert {s.trace_id.hex() for s in spans} == {A}
    as_json = get(tempo, path).json()
    batches = as_json["trace"]["resourceSpans"] if v2 else as_json["batches"]
    assert sum(len(ss["spans"]) for rs in batches for ss in rs["scopeSpans"]) == 5
    missing = httpx.get(f"{tempo.tempo_url}/api/v2/traces/{'0' * 31}1", timeout=30)
    assert missing.status_code == 404


def test_tenants_through_x_scope_orgid(tempo: ServerProcess) -> None:
    other = {"X-Scope-OrgID": "elsewhere"}
    search = httpx.get(
        f"{tempo.tempo_url}/api/search", params={"q": "{}", **WINDOW}, headers=other, timeout=30
    )
    assert search.json()["traces"] == []
    assert httpx.get(f"{tempo.tempo_url}/api/traces/{A}", headers=other, timeout=30).status_code == 404
    values = httpx.get(
        f"{tempo.tempo_url}/api/v2/search/tag/{quote('resource.service.name')}/values", params=WINDOW,
        headers=other, timeout=30,
    )  # fmt: skip
    assert values.json() == {"tagValues": []}


HOUR = 3600


def metrics(proc: ServerProcess, q: str, path: str = "/api/metrics/query_range", **params: object) -> dict:
    response = get(proc, path, q=q, **{**WINDOW, **params})
    assert response.status_code == 200, response.text
    return response.json()


def labels(series: dict) -> dict[str, str]:
    return {label["key"]: label["value"]["stringValue"] for label in series["labels"]}


def test_traceql_metrics_computed_in_the_engine(tempo: ServerProcess) -> None:
    """TraceQL metrics as Grafana's Tempo data source asks for them (`/api/metrics/query_range`,
    Prometheus-style series), over the shop's ten spans: six of frontend, four of checkout."""
    instant = metrics(tempo, "{ } | count_over_time() by (resource.service.name)", "/api/metrics/query")
    assert {labels(s)["resource.service.name"]: s["value"] for s in instant["series"]} == {
        "frontend": 6,
        "checkout": 4,
    }
    ranged = metrics(tempo, "{ } | rate()", step=f"{HOUR}s")
    (series,) = ranged["series"]
    assert labels(series) == {"__name__": "rate"} and series["promLabels"] == '{__name__="rate"}'
    times = [int(s["timestampMs"]) for s in series["samples"]]
    assert times == sorted(times) and all(
        b - a == HOUR * 1000 for a, b in zip(times, times[1:], strict=False)
    )
    assert sum(s["value"] for s in series["samples"]) * HOUR == pytest.approx(10)  # every span counted once
    assert {e["labels"][0]["value"]["stringValue"] for e in series["exemplars"]} <= {A, B, C, D}

    q = '{ resource.service.name = "checkout" } | quantile_over_time(duration, .5, 1)'
    by_p = {labels(s)["p"]: s["samples"] for s in metrics(tempo, q, step=f"{4 * HOUR + 60}s")["series"]}
    assert by_p["1"][0]["value"] == pytest.approx(1.1)  # seconds, as Tempo gives durations
    assert by_p["0.5"][0]["value"] == pytest.approx(0.145)  # between 50 ms and 240 ms

    hist = metrics(tempo, "{ } | histogram_over_time(duration)", step=f"{4 * HOUR + 60}s")["series"]
    buckets = {float(labels(s)["__bucket"]): sum(p["value"] for p in s["samples"]) for s in hist}
    assert sum(buckets.values()) == 10 and all(b == 2 ** round(math.log2(b)) for b in buckets)
    assert buckets[2.0] == 2  # trace C: the 1.2 s checkout and its 1.1 s payment, in (1 s, 2 s]

    statuses = metrics(tempo, "{ } | count_over_time() by (status) | topk(1)", step=f"{4 * HOUR + 60}s")
    assert [labels(s) for s in statuses["series"]] == [{"status": "unset"}]
    codes = metrics(tempo, "{ } | avg_over_time(span.http.status_code) by (name)", step=f"{4 * HOUR + 60}s")
    assert [(labels(s), s["samples"][0]["value"]) for s in codes["series"]] == [({"name": "POST /pay"}, 350)]


@pytest.mark.parametrize(
    ("q", "params"),
    [
        ("{ } | rate(duration)", {}),
        ("{ } | avg_over_time()", {}),
        ("{ status = error }", {}),
        ("{ } | quantile_over_time(duration, 2)", {}),
        ("{ } | rate()", {"step": "1ms"}),
        ("{ } | rate()", {"start": "yesterday"}),
    ],
)
def test_metrics_queries_clew_cannot_answer_are_400_with_the_reason(
    tempo: ServerProcess, q: str, params: dict
) -> None:
    response = get(tempo, "/api/metrics/query_range", q=q, **{**WINDOW, **params})
    assert response.status_code == 400 and response.text.strip()


def test_metrics_over_structural_queries_and_pipelines(tempo: ServerProcess) -> None:
    """Metrics over what SQL alone cannot decide: the search engine picks each trace's matching
    spans (the right side of `>>`, both filters of `&&`, the spans of a pipeline's spansets)."""
    window = {"step": f"{4 * HOUR + 60}s"}

    def total(q: str, by: str | None = None) -> dict[str | None, float]:
        answer = metrics(tempo, q, **window)
        assert answer["metrics"]["completed"] is True and answer["metrics"]["inspectedTraces"] >= 1
        return {
            labels(s).get(by) if by else None: sum(p["value"] for p in s["samples"]) for s in answer["series"]
        }

    # checkout's spans below frontend's: A's 7, 8 and 9, C's e; not frontend's own children
    below = '{ resource.service.name = "frontend" } >> { resource.service.name = "checkout" }'
    assert total(f"{below} | count_over_time() by (resource.service.name)", "resource.service.name") == {
        "checkout": 4
    }
    assert total("{ } | count() > 3 | count_over_time()") == {None: 5}  # trace A's five spans
    assert total('{ status = error } && { name = "db.query" } | count_over_time()') == {None: 2}
    longest = metrics(
        tempo, '{ resource.service.name = "frontend" } >> { } | max_over_time(duration)', **window
    )
    (series,) = longest["series"]
    assert series["samples"][0]["value"] == pytest.approx(1.1)  # C's payment, under frontend
    assert series["exemplars"][0]["labels"][0]["value"]["stringValue"] == C
    q = '{ name = "GET /checkout" } >> { } | quantile_over_time(duration, 0, 1) by (name)'
    quantiles = {
        (labels(s)["name"], labels(s)["p"]): s["samples"][0]["value"]
        for s in metrics(tempo, q, **window)["series"]
    }
    assert quantiles[("POST /pay", "0")] == pytest.approx(0.24)
    assert quantiles[("POST /pay", "1")] == pytest.approx(1.1)
    # compare() over checkout's spans below frontend: A's failed payment against the rest
    answer = metrics(tempo, f"{below} | compare({{ status = error }})", "/api/metrics/query")
    counts = {
        (labels(s)["__meta_type"], k, v): s["value"]
        for s in answer["series"]
        for k, v in labels(s).items()
        if k != "__meta_type"
    }
    assert counts[("selection", "name", "POST /pay")] == 1 and counts[("baseline", "name", "POST /pay")] == 1
    assert counts[("baseline", "span.db.system", "postgres")] == 1
    assert counts[("baseline", "status", "unset")] == 3 and ("selection", "status", "unset") not in counts
    assert answer["metrics"]["completed"] is True


def test_metrics_see_only_the_callers_tenant(tempo: ServerProcess) -> None:
    response = httpx.get(
        f"{tempo.tempo_url}/api/metrics/query", params={"q": "{ } | count_over_time()", **WINDOW},
        headers={"X-Scope-OrgID": "elsewhere"}, timeout=30,
    )  # fmt: skip
    assert response.json()["series"] == []


def test_compare_splits_spans_into_selection_and_baseline(tempo: ServerProcess) -> None:
    """`compare()`: every attribute value's count in the selection and in the rest (the baseline),
    the top N values of each, and an error series for an attribute that had more."""
    q = '{ resource.service.name = "checkout" } | compare({ status = error })'
    series = metrics(tempo, q, "/api/metrics/query")["series"]
    counts = {
        (labels(s)["__meta_type"], k, v): s["value"]
        for s in series
        for k, v in labels(s).items()
        if k != "__meta_type"
    }
    assert counts[("selection", "span.http.status_code", "500")] == 1
    assert counts[("selection", "name", "POST /pay")] == 1
    assert counts[("baseline", "span.http.status_code", "200")] == 1
    assert counts[("baseline", "status", "unset")] == 3
    assert counts[("baseline", "resource.deployment.environment", "prod")] == 1
    assert ("selection", "span.db.system", "postgres") not in counts
    top1 = metrics(tempo, q.replace("})", "}, 1)"), "/api/metrics/query")["series"]
    errors = [s for s in top1 if any(lbl["key"] == "__meta_error" for lbl in s["labels"])]
    assert {lbl["key"] for s in errors for lbl in s["labels"]} >= {"__meta_error", "name"}
    assert next(lbl for s in errors for lbl in s["labels"] if lbl["key"] == "name")["value"] == {}
    ranged = metrics(tempo, q, step=f"{4 * HOUR + 60}s")["series"]
    assert all(len(s["samples"]) >= 1 for s in ranged)
    assert get(tempo, "/api/metrics/query", q="{ } | compare(1)", **WINDOW).status_code == 400
