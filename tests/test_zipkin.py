"""Zipkin v2 receiver: the SDK's Zipkin JSON exporter and hand-written Zipkin bodies."""

from __future__ import annotations

import gzip
import json

import httpx
import pytest
from opentelemetry.exporter.zipkin.json import ZipkinExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from tests.conftest import ServerProcess, canonical_spans

OTLP_KIND = {SpanKind.SERVER: 2, SpanKind.CLIENT: 3, SpanKind.INTERNAL: 1, SpanKind.PRODUCER: 4}


def _attrs(kvs: list[dict]) -> dict:
    return {kv["key"]: next(iter(kv["value"].values())) for kv in kvs}


def test_sdk_zipkin_exporter_roundtrip(server):
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "frontend"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.add_span_processor(
        SimpleSpanProcessor(ZipkinExporter(endpoint=f"{server.zipkin_url}/api/v2/spans"))
    )
    tracer = provider.get_tracer("zipkin-test")
    with tracer.start_as_current_span(
        "GET /", kind=SpanKind.SERVER, attributes={"http.status_code": 200}
    ) as root:
        root.add_event("cache miss")
        with tracer.start_as_current_span("publish", kind=SpanKind.PRODUCER) as child:
            child.set_attribute("queue", "orders")
            child.set_status(Status(StatusCode.ERROR, "broker down"))
    provider.shutdown()

    recorded = memory.get_finished_spans()
    trace_id = format(recorded[0].context.trace_id, "032x")
    stored = canonical_spans(server.trace(trace_id))
    assert len(stored) == len(recorded) == 2
    for span in recorded:
        got = stored[format(span.context.span_id, "016x")]
        s = got["span"]
        assert s["name"] == span.name
        assert s["kind"] == OTLP_KIND[span.kind]
        # Zipkin carries microseconds (the exporter rounds)
        assert int(s["startTimeUnixNano"]) % 1000 == 0
        assert abs(int(s["startTimeUnixNano"]) - span.start_time) < 1000
        duration_us = (span.end_time - span.start_time) // 1000
        assert abs(int(s["endTimeUnixNano"]) - int(s["startTimeUnixNano"]) - duration_us * 1000) <= 1000
        expected_parent = format(span.parent.span_id, "016x") if span.parent else None
        assert s.get("parentSpanId") == expected_parent
        assert _attrs(got["resource"]["attributes"]) == {"service.name": "frontend"}
        attrs = _attrs(s["attributes"])
        for key, value in span.attributes.items():
            assert attrs[key] == str(value)  # Zipkin tags are strings
    root_span = stored[format(recorded[1].context.span_id, "016x")]["span"]
    assert [e["name"] for e in root_span["events"]][0].startswith('{"cache miss"')
    child_span = stored[format(recorded[0].context.span_id, "016x")]["span"]
    assert child_span["status"] == {"code": 2, "message": "broker down"}
    # the exporter's otel.status_code and error tags carried the status: not kept as attributes
    assert not {"otel.status_code", "error"} & set(_attrs(child_span["attributes"]))


def _post(server, body, headers=None) -> httpx.Response:
    return httpx.post(
        f"{server.zipkin_url}/api/v2/spans",
        content=body,
        headers={"Content-Type": "application/json", **(headers or {})},
        timeout=30,
    )


@pytest.fixture
def server_keeping_ips(tmp_path):
    """Endpoint addresses are what this test checks; the default redaction masks IP addresses."""
    config = tmp_path / "clew.toml"
    config.write_text('[redaction.detectors]\nip = "off"\n')
    proc = ServerProcess(tmp_path / "data", extra_args=["--config", str(config)]).start()
    yield proc
    proc.stop()


def test_zipkin_mapping_of_endpoints_shared_spans_and_64bit_ids(server_keeping_ips):
    server = server_keeping_ips
    client = {
        "traceId": "5af7183fb1d4cf5f",
        "id": "352bff9a74ca9ad2",
        "name": "get /api",
        "kind": "CLIENT",
        "timestamp": 1556604172355000,
        "duration": 2000,
        "localEndpoint": {"serviceName": "frontend"},
        "remoteEndpoint": {"serviceName": "backend", "ipv4": "10.1.2.3", "port": 8080},
        "tags": {"http.method": "GET", "error": "timeout"},
    }
    shared = {
        "traceId": "5af7183fb1d4cf5f",
        "id": "352bff9a74ca9ad2",
        "name": "get /api",
        "kind": "SERVER",
        "shared": True,
        "timestamp": 1556604172355737,
        "duration": 1431,
        "localEndpoint": {"serviceName": "backend", "ipv4": "192.168.99.1", "port": 3306},
        "annotations": [{"timestamp": 1556604172355800, "value": "wr"}],
        "tags": {"http.path": "/api"},
    }
    body = gzip.compress(json.dumps([client, shared]).encode())
    response = _post(server, body, {"Content-Encoding": "gzip"})
    assert response.status_code == 202, response.text

    stored = canonical_spans(server.trace("5af7183fb1d4cf5f"))  # 64-bit id finds the padded trace
    assert len(stored) == 2
    c = stored["352bff9a74ca9ad2"]
    assert c["span"]["traceId"] == "00000000000000005af7183fb1d4cf5f"
    assert c["span"]["kind"] == 3
    assert c["span"]["status"] == {"code": 2, "message": "timeout"}
    assert _attrs(c["span"]["attributes"]) == {  # the error tag became the status, not a tag too
        "http.method": "GET",
        "peer.service": "backend",
        "net.peer.ip": "10.1.2.3",
        "net.peer.port": "8080",
    }
    (server_id,) = [k for k in stored if k != "352bff9a74ca9ad2"]
    s = stored[server_id]
    assert s["span"]["parentSpanId"] == "352bff9a74ca9ad2"
    assert s["span"]["kind"] == 2
    assert _attrs(s["resource"]["attributes"]) == {"service.name": "backend"}
    assert s["span"]["events"] == [{"name": "wr", "timeUnixNano": "1556604172355800000", "attributes": []}]
    assert s["span"]["startTimeUnixNano"] == "1556604172355737000"
    assert s["span"]["endTimeUnixNano"] == str((1556604172355737 + 1431) * 1000)
    # a retry of the same body maps the shared span to the same id
    assert _post(server, body, {"Content-Encoding": "gzip"}).status_code == 202
    again = canonical_spans(server.trace("5af7183fb1d4cf5f"))
    assert set(again) == set(stored)


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"{not json", 400, "invalid JSON"),
        (b'{"traceId": "1"}', 400, "JSON list"),
        (b'[{"traceId": "zz", "id": "1111222233334444"}]', 400, "span[0].traceId: not a hex string"),
        (
            b'[{"traceId": "5af7183fb1d4cf5f", "id": "1111222233334444", "timestamp": "soon"}]',
            400,
            "timestamp",
        ),
        (b"[5]", 400, "span[0]: expected a JSON object"),
    ],
)
def test_zipkin_bad_input(server, body, status, reason):
    response = _post(server, body)
    assert response.status_code == status
    assert reason in response.json()["error"]


def test_zipkin_wrong_content_type(server):
    response = _post(server, b"[]", {"Content-Type": "application/x-protobuf"})
    assert response.status_code == 415


@pytest.mark.parametrize(
    ("tags", "status", "kept"),
    [
        ({"otel.status_code": "ERROR"}, {"code": 2}, {}),  # an error without a message is an error
        ({"otel.status_code": "ERROR", "otel.status_description": "no stock"}, {"code": 2, "message": "no stock"}, {}),
        ({"otel.status_code": "STATUS_CODE_OK", "a": "b"}, {"code": 1}, {"a": "b"}),
        ({"otel.status_description": "alone"}, {}, {"otel.status_description": "alone"}),
        ({"error": "true"}, {"code": 2}, {}),
        ({"error": "disk full", "otel.status_code": "ERROR", "otel.status_description": "io"},
         {"code": 2, "message": "io"}, {"error": "disk full"}),
    ],
)  # fmt: skip
def test_status_tags_become_the_status_as_the_collector_reads_them(server, tags, status, kept):
    span_id = f"{abs(hash(json.dumps(tags, sort_keys=True))) % 16**15:016x}"
    body = [{"traceId": "6b" * 8, "id": span_id, "name": "s", "timestamp": 1556604172355000, "duration": 10,
             "localEndpoint": {"serviceName": "z"}, "tags": tags}]  # fmt: skip
    assert _post(server, json.dumps(body).encode()).status_code == 202
    got = canonical_spans(server.trace("6b" * 8))[span_id]["span"]
    assert {k: v for k, v in got.get("status", {}).items() if v} == status
    assert _attrs(got["attributes"]) == kept
