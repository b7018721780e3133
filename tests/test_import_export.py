"""`clew import` and `clew export`: OTLP, Jaeger and Zipkin files in; OTLP and Jaeger JSON out."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from clew.assembly import open_embedded
from clew.components.retention import Retention
from tests.conftest import CONFORMANCE, ServerProcess, canonical_spans, spans_of

JAEGER = CONFORMANCE / "jaeger"


def clew(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clew.cli", *args], capture_output=True, text=True, timeout=120
    )


def _without_empty_status(spans: dict) -> dict:
    for item in spans.values():
        if item["span"].get("status") == {}:
            del item["span"]["status"]
    return spans


def test_otlp_files_roundtrip_and_jaeger_json_reimports(tmp_path):
    data = tmp_path / "data"
    names = ["example_trace", "link_attributes_trace", "scope_attributes_trace", "multi_spot_tags_trace"]
    files = [str(JAEGER / "traces" / f"{n}.json") for n in names]
    result = clew("import", *files, "--data-dir", str(data))
    assert result.returncode == 0, result.stderr
    assert "example_trace.json: 5 spans imported" in result.stdout

    out = clew("export", "00000000000000000000000000000011", "--data-dir", str(data))
    fixture = json.loads((JAEGER / "traces" / "example_trace.json").read_text())
    assert canonical_spans(json.loads(out.stdout)) == _without_empty_status(canonical_spans(fixture))

    jaeger = clew("export", "0000000000000011", "--format", "jaeger", "--data-dir", str(data))
    assert jaeger.returncode == 0, jaeger.stderr
    doc = json.loads(jaeger.stdout)
    assert [t["traceID"] for t in doc["data"]] == ["0000000000000011"]
    (tmp_path / "trace.jaeger.json").write_text(jaeger.stdout)
    again_dir = tmp_path / "again"
    assert clew("import", str(tmp_path / "trace.jaeger.json"), "--data-dir", str(again_dir)).returncode == 0
    again = clew("export", "0000000000000011", "--format", "jaeger", "--data-dir", str(again_dir))
    assert json.loads(again.stdout) == doc  # Jaeger -> OTLP -> Jaeger changes nothing

    # no sampler decided them (no server ran): the full-fidelity tier must not sweep them away later
    store = open_embedded(data)
    try:
        stored = store.reader.span_count()
        later = time.time_ns() + 3 * 3600 * 10**9
        assert store.component(Retention).expire(later) == 0  # full fidelity 1 h, retention 7 days
        assert store.reader.span_count() == stored > 0
    finally:
        store.close()


def test_jaeger_api_example_imports_with_its_meaning(tmp_path):
    data = tmp_path / "data"
    result = clew("import", str(JAEGER / "api-trace-example.json"), "--data-dir", str(data))
    assert result.returncode == 0, result.stderr
    doc = json.loads(clew("export", "1", "--data-dir", str(data)).stdout)
    spans = [s["span"] for s in spans_of(doc)]
    example = json.loads((JAEGER / "api-trace-example.json").read_text())
    assert len(spans) == len(example["spans"])
    by_name = {(s["name"], s["spanId"]): s for s in spans}
    op = by_name["some-operation", "0000000000000002"]
    attrs = {kv["key"]: kv["value"] for kv in op["attributes"]}
    assert attrs["peer.ipv4"] == {"intValue": "23456"}
    assert attrs["javascript_limit"] == {"intValue": "9223372036854775222"}
    assert attrs["temperature"] == {"doubleValue": 72.5}
    assert attrs["blob"] == {"bytesValue": "AAAwOQ=="}
    assert op["status"]["code"] == 2  # error=true
    assert "error" not in attrs
    conversion = by_name["test-general-conversion", "0000000000000002"]
    assert [e.get("name") for e in conversion["events"]] == ["some-event", None]
    assert conversion["events"][1]["attributes"] == [{"key": "x", "value": {"stringValue": "y"}}]
    reference = by_name["reference-test", "0000000000000004"]
    assert reference["parentSpanId"] == "0000000000000002"  # the CHILD_OF within the trace
    assert [
        (ln["traceId"][-2:], ln["attributes"][0]["value"]["stringValue"]) for ln in reference["links"]
    ] == [
        ("ff", "child_of"),
        ("01", "follows_from"),
    ]
    services = {
        kv["value"]["stringValue"]
        for item in spans_of(doc)
        for kv in item["resource"]["attributes"]
        if kv["key"] == "service.name"
    }
    assert services == {p["serviceName"] for p in example["processes"].values()}


def test_zipkin_file_and_bad_files(tmp_path):
    data = tmp_path / "data"
    zipkin = tmp_path / "zipkin.json"
    zipkin.write_text(
        json.dumps(
            [
                {
                    "traceId": "5af7183fb1d4cf5f",
                    "id": "6b221d5bc9e6496c",
                    "name": "get /api",
                    "kind": "SERVER",
                    "timestamp": 1556604172355737,
                    "duration": 1431,
                    "localEndpoint": {"serviceName": "backend"},
                    "tags": {"http.method": "GET"},
                }
            ]
        )
    )
    broken = tmp_path / "broken.json"
    broken.write_text('{"resourceSpans": [')
    odd = tmp_path / "odd.json"
    odd.write_text('{"hello": "world"}')
    missing = tmp_path / "missing.json"
    for bad, reason in [(broken, "invalid JSON"), (odd, "not OTLP/JSON"), (missing, "cannot read")]:
        result = clew("import", str(zipkin), str(bad), "--data-dir", str(data))
        assert result.returncode == 1
        assert f"{bad}: {reason}" in result.stderr
        # nothing was written: the good file before it is not stored either
        assert (
            not data.exists() or clew("export", "5af7183fb1d4cf5f", "--data-dir", str(data)).returncode == 1
        )
    result = clew("import", str(zipkin), "--data-dir", str(data))
    assert result.returncode == 0, result.stderr
    doc = json.loads(clew("export", "5af7183fb1d4cf5f", "--data-dir", str(data)).stdout)
    (span,) = [s["span"] for s in canonical_spans(doc).values()]
    assert span["name"] == "get /api" and span["kind"] == 2


def test_import_and_export_through_a_running_server(tmp_path):
    server = ServerProcess(tmp_path / "data").start()
    try:
        fixture = JAEGER / "traces" / "span_tags_trace.json"
        result = clew("import", str(fixture), "--url", server.otlp_http_url)
        assert result.returncode == 0, result.stderr
        out = clew("export", "00000000000000000000000000000001", "--url", server.http_url)
        assert out.returncode == 0, out.stderr
        expected = _without_empty_status(canonical_spans(json.loads(fixture.read_text())))
        assert canonical_spans(json.loads(out.stdout)) == expected
        jaeger = json.loads(clew("export", "1", "--format", "jaeger", "--url", server.http_url).stdout)
        assert [t["traceID"] for t in jaeger["data"]] == ["0000000000000001"]
        missing = clew("export", "ab" * 16, "--url", server.http_url)
        assert missing.returncode == 1 and "not found" in missing.stderr
    finally:
        server.stop()
