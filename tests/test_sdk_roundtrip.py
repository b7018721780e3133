"""Spans sent by the real OpenTelemetry SDK exporters come back from the store with every field intact."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from clew.receivers.otlp import to_otlp_json
from tests.conftest import canonical_spans


def _record(exporter) -> list:
    """Emit a small trace of every field type through `exporter`; return what the SDK recorded."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": "checkout", "host.cores": 2, "deployment.canary": True, "zones": ["a", "b"]}
        )
    )
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer(
        "shop.checkout", "1.2.3", schema_url="https://opentelemetry.io/schemas/1.21.0"
    )
    remote = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "opaque-value")]),
    )
    ctx = trace.set_span_in_context(trace.NonRecordingSpan(remote))
    with tracer.start_as_current_span(
        "POST /checkout",
        context=ctx,
        kind=SpanKind.SERVER,
        attributes={
            "http.method": "POST",
            "http.status_code": 500,
            "cart.total": 12.5,
            "user.vip": False,
            "cart.items": ["apple", "pear"],
            "cart.quantities": [1, 2, 3],
            "cart.flags": [True, False],
            "cart.prices": [1.5, 2.25],
        },
    ) as root:
        root.add_event("validated", {"items": 2, "note": "ok"})
        with tracer.start_as_current_span(
            "charge card",
            kind=SpanKind.CLIENT,
            links=[Link(remote, {"link.reason": "retry", "attempt": 2})],
        ) as child:
            child.set_status(Status(StatusCode.ERROR, "card declined"))
            child.record_exception(ValueError("declined"))
        with tracer.start_as_current_span("render", kind=SpanKind.INTERNAL):
            pass
        root.set_status(Status(StatusCode.OK))
    provider.shutdown()
    return list(memory.get_finished_spans())


def _normalise(spans: dict) -> dict:
    for item in spans.values():
        if item["span"].get("status") == {}:
            del item["span"]["status"]
    return spans


def _check_roundtrip(server, recorded: list) -> None:
    assert len(recorded) == 3
    trace_id = format(recorded[0].context.trace_id, "032x")
    sent = _normalise(canonical_spans(to_otlp_json(encode_spans(recorded))))
    stored_doc = server.trace(trace_id)
    assert stored_doc is not None
    stored = _normalise(canonical_spans(stored_doc))
    assert stored.keys() == sent.keys()
    for span_id, item in sent.items():
        assert stored[span_id] == item, span_id

    # The types that matter most, spelled out.
    root = next(i["span"] for i in stored.values() if i["span"]["name"] == "POST /checkout")
    attrs = {kv["key"]: kv["value"] for kv in root["attributes"]}
    assert attrs["http.status_code"] == {"intValue": "500"}
    assert attrs["cart.total"] == {"doubleValue": 12.5}
    assert attrs["user.vip"] == {"boolValue": False}
    assert attrs["cart.quantities"] == {
        "arrayValue": {"values": [{"intValue": "1"}, {"intValue": "2"}, {"intValue": "3"}]}
    }
    assert root["traceState"] == "vendor=opaque-value"
    assert root["parentSpanId"] == "b7ad6b7169203331"
    child = next(i["span"] for i in stored.values() if i["span"]["name"] == "charge card")
    assert child["status"] == {"code": 2, "message": "card declined"}
    assert child["links"][0]["spanId"] == "b7ad6b7169203331"
    assert [e["name"] for e in child["events"]] == ["exception"]


def test_otlp_http_protobuf_sdk_roundtrip(server):
    exporter = HttpExporter(endpoint=f"{server.otlp_http_url}/v1/traces")
    _check_roundtrip(server, _record(exporter))


def test_otlp_http_gzip_sdk_roundtrip(server):
    exporter = HttpExporter(endpoint=f"{server.otlp_http_url}/v1/traces", compression=HttpCompression.Gzip)
    _check_roundtrip(server, _record(exporter))


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_otlp_grpc_sdk_roundtrip(server, compression):
    import grpc

    exporter = GrpcExporter(
        endpoint=f"127.0.0.1:{server.grpc_port}",
        insecure=True,
        compression=grpc.Compression.Gzip if compression else None,
    )
    _check_roundtrip(server, _record(exporter))
