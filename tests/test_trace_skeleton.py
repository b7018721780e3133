"""A trace's skeleton (`/api/v1/traces/{id}/skeleton`: one array a field, computed by the engine) and
one span's details (`/api/v1/traces/{id}/spans/{spanId}`): how the UI opens a trace too big to fetch
whole (issue 16). Checked against the whole trace's OTLP/JSON, on each store connection."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.conftest import ServerProcess
from tests.shop_data import A


def _skeleton(server: ServerProcess, trace_id: str) -> httpx.Response:
    return httpx.get(f"{server.http_url}/api/v1/traces/{trace_id}/skeleton", timeout=30)


def test_the_skeleton_holds_every_span_as_the_whole_trace_does(shop_server: ServerProcess) -> None:
    sk = _skeleton(shop_server, A).json()
    whole = httpx.get(f"{shop_server.http_url}/api/v1/traces/{A}", timeout=30).json()
    spans = {
        s["spanId"]: (rs, s) for rs in whole["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]
    }
    assert sk["traceID"] == A and sk["spanCount"] == len(spans) == 5 and sk["full"] is True
    base = min(int(s["startTimeUnixNano"]) for _, s in spans.values())
    assert sk["startTimeUnixNano"] == str(base)
    c = sk["spans"]
    assert sorted(c["spanId"]) == sorted(spans) and all(len(v) == 5 for v in c.values())
    assert c["start"] == sorted(c["start"]) and c["start"][0] == 0  # in start order, from the trace's start
    for i, span_id in enumerate(c["spanId"]):
        rs, s = spans[span_id]
        service = next(
            a["value"]["stringValue"] for a in rs["resource"]["attributes"] if a["key"] == "service.name"
        )
        assert sk["services"][c["service"][i]] == service
        assert sk["names"][c["name"][i]] == s["name"]
        assert c["parentId"][i] == s.get("parentSpanId", "")
        assert c["start"][i] == int(s["startTimeUnixNano"]) - base
        assert c["duration"][i] == int(s["endTimeUnixNano"]) - int(s["startTimeUnixNano"])
        assert c["status"][i] == s.get("status", {}).get("code", 0)
        assert c["kind"][i] == s["kind"]
        assert c["attributes"][i] == len(s.get("attributes", []))
        assert c["events"][i] == len(s.get("events", [])) and c["links"][i] == []


def test_one_span_whole_and_the_refusals(shop_server: ServerProcess) -> None:
    url = f"{shop_server.http_url}/api/v1/traces/{A}/spans"
    doc = httpx.get(f"{url}/{'7' * 16}", timeout=30).json()
    ((rs,),) = [doc["resourceSpans"]]
    (span,) = rs["scopeSpans"][0]["spans"]
    assert span["name"] == "POST /pay" and span["status"]["message"] == "card declined"
    assert span["attributes"] == [{"key": "http.status_code", "value": {"intValue": "500"}}]
    assert {"key": "service.name", "value": {"stringValue": "checkout"}} in rs["resource"]["attributes"]
    assert httpx.get(f"{url}/{'f' * 16}", timeout=30).status_code == 404
    bad = httpx.get(f"{url}/xyz", timeout=30)
    assert bad.status_code == 400 and "16 hexadecimal" in bad.json()["error"]
    assert _skeleton(shop_server, "e" * 32).status_code == 404


def test_links_within_the_trace_and_the_configured_size(tmp_path: Path) -> None:
    """Links to spans of the same trace (follows-from) are in the skeleton; a trace over
    `full_trace_spans` is not `full`."""
    config = tmp_path / "clew.toml"
    config.write_text("full_trace_spans = 2\n")
    server = ServerProcess(tmp_path / "data", extra_args=["--config", str(config)]).start()
    try:
        now, trace = time.time_ns(), "1" * 32
        spans = [
            {"traceId": trace, "spanId": f"{i:016x}", "name": f"s{i}", "kind": 1,
             "startTimeUnixNano": str(now + i * 10**6), "endTimeUnixNano": str(now + (i + 1) * 10**6),
             **({"links": [{"traceId": trace, "spanId": f"{1:016x}"}, {"traceId": "2" * 32, "spanId": "3" * 16}]}
                if i == 3 else {})}
            for i in (1, 2, 3)
        ]  # fmt: skip
        body = {"resourceSpans": [{"resource": {}, "scopeSpans": [{"spans": spans}]}]}
        assert httpx.post(f"{server.otlp_http_url}/v1/traces", json=body, timeout=30).status_code == 200
        sk = _skeleton(server, trace).json()
        assert sk["spanCount"] == 3 and sk["full"] is False
        assert sk["spans"]["links"] == [[], [], [f"{1:016x}"]]  # the other trace's link is left out
    finally:
        server.stop()
