"""OTLP/HTTP receiver: the reference payload, JSON encoding rules, partial success and bad input."""

from __future__ import annotations

import copy
import gzip
import json

import grpc
import httpx
import pytest
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub

from clew.receivers.otlp import to_otlp_json
from tests.conftest import CONFORMANCE, canonical_spans

REFERENCE = CONFORMANCE / "otlp" / "trace.json"
JSON = {"Content-Type": "application/json"}
PROTO = {"Content-Type": "application/x-protobuf"}


def _span(
    trace_id: str, span_id: str, name: str = "op", start: int = 1_700_000_000_000_000_000, **extra
) -> dict:
    return {
        "traceId": trace_id,
        "spanId": span_id,
        "name": name,
        "kind": 2,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(start + 1_000_000),
        **extra,
    }


def _request(*spans: dict, service: str = "svc") -> dict:
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
                "scopeSpans": [{"scope": {"name": "test"}, "spans": list(spans)}],
            }
        ]
    }


def _post(server, body: bytes | str, headers: dict) -> httpx.Response:
    return httpx.post(f"{server.otlp_http_url}/v1/traces", content=body, headers=headers, timeout=30)


def test_reference_payload_roundtrips_field_by_field(server):
    raw = REFERENCE.read_bytes()
    response = _post(server, raw, JSON)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {}  # no partialSuccess: nothing rejected
    sent = canonical_spans(json.loads(raw))
    (span_id,) = sent
    stored_doc = server.trace(sent[span_id]["span"]["traceId"])
    stored = canonical_spans(stored_doc)
    expected = sent[span_id]
    # OTLP/JSON writes the kind as an integer and every int64 as a string, as the reference does.
    assert stored[span_id] == expected


def test_json_accepts_enum_names_and_int64_numbers(server):
    span = _span("11112222333344445555666677778888", "1111222233334444", kind="SPAN_KIND_CLIENT")
    span["startTimeUnixNano"] = 1_700_000_000_000_000_000
    span["endTimeUnixNano"] = 1_700_000_000_002_000_000
    span["attributes"] = [{"key": "retries", "value": {"intValue": 3}}]
    assert _post(server, json.dumps(_request(span)), JSON).status_code == 200
    stored = canonical_spans(server.trace("11112222333344445555666677778888"))["1111222233334444"]["span"]
    assert stored["kind"] == 3
    assert stored["endTimeUnixNano"] == "1700000000002000000"
    assert stored["attributes"] == [{"key": "retries", "value": {"intValue": "3"}}]


def test_protobuf_request_gets_protobuf_response(server):
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.add(
        trace_id=bytes.fromhex("aa" * 16),
        span_id=bytes.fromhex("bb" * 8),
        name="proto",
        start_time_unix_nano=1_700_000_000_000_000_000,
        end_time_unix_nano=1_700_000_000_100_000_000,
    )
    body = gzip.compress(request.SerializeToString())
    response = _post(server, body, {**PROTO, "Content-Encoding": "gzip"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-protobuf"
    parsed = ExportTraceServiceResponse.FromString(response.content)
    assert not parsed.HasField("partial_success")
    stored = canonical_spans(server.trace("aa" * 16))
    assert stored["bb" * 8]["resource"]["attributes"] == []
    assert stored["bb" * 8]["span"]["name"] == "proto"


INVALID = [
    ("trace_id must be 16 bytes, got 8", _span("0102030405060708", "1111222233334444")),
    ("trace_id is all zeros", _span("0" * 32, "1111222233334444")),
    ("span_id must be 8 bytes, got 4", _span("c1" * 16, "01020304")),
    ("span_id is all zeros", _span("c1" * 16, "0" * 16)),
    (
        "end time is before start time",
        {**_span("c1" * 16, "2222333344445555"), "endTimeUnixNano": "1600000000000000000"},
    ),
]


@pytest.mark.parametrize("encoding", ["json", "protobuf"])
def test_invalid_spans_are_rejected_one_by_one(server, encoding):
    good = [_span("c1" * 16, f"{i:016x}", name=f"good-{i}") for i in range(1, 4)]
    doc = _request(*good, *[bad for _, bad in INVALID])
    if encoding == "json":
        response = _post(server, json.dumps(doc), JSON)
        partial = response.json()["partialSuccess"]
        rejected, message = int(partial["rejectedSpans"]), partial["errorMessage"]
    else:
        request = _json_to_proto(doc)
        response = _post(server, request.SerializeToString(), PROTO)
        partial = ExportTraceServiceResponse.FromString(response.content).partial_success
        rejected, message = partial.rejected_spans, partial.error_message
    assert response.status_code == 200
    assert rejected == len(INVALID)
    for reason, _ in INVALID:
        assert reason in message
    stored = canonical_spans(server.trace("c1" * 16))
    assert sorted(s["span"]["name"] for s in stored.values()) == ["good-1", "good-2", "good-3"]


def _json_to_proto(doc: dict) -> ExportTraceServiceRequest:
    from clew.receivers.otlp import parse_json_request

    return parse_json_request(json.dumps(doc).encode())


def _assert_store_unchanged(server, before: dict) -> None:
    assert server.trace("5b8efff798038103d269b633813fc60c") == before


@pytest.fixture
def seeded(server):
    assert _post(server, REFERENCE.read_bytes(), JSON).status_code == 200
    return server, server.trace("5b8efff798038103d269b633813fc60c")


def _garbage_bodies() -> list[tuple[str, bytes, dict, int, str]]:
    ref = json.loads(REFERENCE.read_text())
    bad_hex = copy.deepcopy(ref)
    bad_hex["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"] = "not-hex"
    truncated = _json_to_proto(ref).SerializeToString()[:-7]
    return [
        ("truncated protobuf", truncated, PROTO, 400, "cannot decode"),
        ("random bytes", bytes(range(256)) * 4, PROTO, 400, "cannot decode"),
        ("invalid json", b'{"resourceSpans": [', JSON, 400, "invalid JSON"),
        ("json not an object", b"[1, 2]", JSON, 400, "JSON object"),
        ("json wrong types", b'{"resourceSpans": [{"scopeSpans": 5}]}', JSON, 400, "invalid OTLP/JSON"),
        ("bad hex id", json.dumps(bad_hex).encode(), JSON, 400, "not a hex string"),
        ("wrong content type", REFERENCE.read_bytes(), {"Content-Type": "text/plain"}, 415, "Content-Type"),
        ("no content type", REFERENCE.read_bytes(), {}, 415, "Content-Type"),
        ("broken gzip", b"\x1f\x8b\x08\x00garbage", {**JSON, "Content-Encoding": "gzip"}, 400, "gzip"),
        (
            "unknown encoding",
            REFERENCE.read_bytes(),
            {**JSON, "Content-Encoding": "br"},
            415,
            "Content-Encoding",
        ),
        ("too large", b"x" * (16 * 1024 * 1024 + 1), PROTO, 413, "over the limit"),
        (
            "gzip bomb",
            gzip.compress(b"\0" * (64 * 1024 * 1024)),
            {**PROTO, "Content-Encoding": "gzip"},
            413,
            "over the limit",
        ),
    ]


@pytest.mark.parametrize("case", _garbage_bodies(), ids=lambda c: c[0])
def test_bad_input_is_refused_with_a_reason_and_changes_nothing(seeded, case):
    server, before = seeded
    _, body, headers, status, reason = case
    response = _post(server, body, headers)
    assert response.status_code == status, response.text
    if response.headers.get("content-type", "").startswith("application/x-protobuf"):
        message = Status.FromString(response.content).message
    else:
        message = response.json()["message"]
    assert reason in message
    _assert_store_unchanged(server, before)
    assert httpx.get(f"{server.http_url}/healthz").status_code == 200


def test_grpc_bad_input_and_partial_success(seeded):
    server, before = seeded
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        export = channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=None,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as err:
            export(b"\xff\xff\xff garbage", timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "cannot decode" in err.value.details()

        doc = _request(_span("d1" * 16, "1111222233334444"), _span("0102", "2222333344445555"))
        response = TraceServiceStub(channel).Export(_json_to_proto(doc), timeout=10)
    assert response.partial_success.rejected_spans == 1
    assert "trace_id must be 16 bytes" in response.partial_success.error_message
    assert len(canonical_spans(server.trace("d1" * 16))) == 1
    _assert_store_unchanged(server, before)


def test_exported_json_matches_the_protobuf_json_mapping():
    """Our OTLP/JSON writer and reader agree with each other on the reference payload."""
    from clew.receivers.otlp import parse_json_request

    ref = json.loads(REFERENCE.read_text())
    again = to_otlp_json(parse_json_request(json.dumps(ref).encode()))
    assert canonical_spans(again) == canonical_spans(ref)
