"""Tempo's HTTP API on its own port (issue 15, part 1), with the requests Grafana's Tempo data source
sends (pkg/tsdb/tempo and the data source's frontend in grafana/grafana): health and version, TraceQL
search, tag discovery for the query builder, traces by id as protobuf (v2 first, v1 as fallback)."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from tests.conftest import ServerProcess
from tests.shop_data import NOW, A, B, C, D, shop

START, END = (NOW - 4 * 3600 * 10**9) // 10**9, NOW // 10**9 + 60
WINDOW = {"start": START, "end": END}


@pytest.fixture(scope="module")
def tempo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("tempo") / "data").start()
    try:
        assert httpx.post(f"{proc.otlp_http_url}/v1/traces", json=shop(), timeout=30).status_code == 200
        yield proc
    finally:
        proc.stop()


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
