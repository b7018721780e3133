"""Trace files into OTLP requests: OTLP/JSON, Jaeger's API JSON and Zipkin v2 JSON, told apart by shape.

Jaeger's special tags go back to the OTLP fields they came from (`span.kind`, `otel.status_code`,
`otel.status_description`, `error`, `otel.scope.name`/`version`, `w3c.tracestate`); the first
CHILD_OF reference within the trace is the parent, every other reference a link that keeps its type
in `opentracing.ref_type`. Log fields become event attributes, the `event` field the event's name.

A file is read by `json_body.load_json` (the receivers' nesting, number and text limits) and taken
whole or not at all: anything malformed in it is a `BadRequest` saying what and where.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status

from clew.core.json_body import load_json
from clew.core.model import SpanKind, StatusCode
from clew.receivers.otlp import BadRequest, parse_json_document
from clew.receivers.zipkin import zipkin_to_otlp

_KINDS = {k.name.lower(): Span.SpanKind.Value(f"SPAN_KIND_{k.name}") for k in SpanKind if k.value}
_STATUS = {s.name: Status.StatusCode.Value(f"STATUS_CODE_{s.name}") for s in StatusCode}


def detect(doc: Any) -> str:
    """'otlp', 'jaeger' or 'zipkin', from the document's shape."""
    if isinstance(doc, dict) and "resourceSpans" in doc:
        return "otlp"
    if isinstance(doc, dict) and ("spans" in doc and "processes" in doc or isinstance(doc.get("data"), list)):
        return "jaeger"
    if isinstance(doc, list) and all(isinstance(s, dict) and "traceId" in s and "id" in s for s in doc):
        return "zipkin"
    raise BadRequest("not OTLP/JSON (resourceSpans), Jaeger JSON (data or spans+processes) or Zipkin v2 JSON")


def read_file(path: Path) -> ExportTraceServiceRequest:
    """The spans of one file as one OTLP request; `BadRequest` says what is wrong with it."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BadRequest(f"cannot read: {exc.strerror}") from exc
    return parse_file(raw)


def parse_file(raw: bytes) -> ExportTraceServiceRequest:
    """The spans of a file's content as one OTLP request; `BadRequest` says what is wrong with it."""
    doc = load_json(raw)
    kind = detect(doc)
    if kind == "otlp":
        return parse_json_document(doc)
    if kind == "zipkin":
        return zipkin_to_otlp(doc)
    traces = doc["data"] if isinstance(doc.get("data"), list) else [doc]
    request = ExportTraceServiceRequest()
    for i, trace in enumerate(traces):
        try:
            jaeger_to_otlp(trace, request)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            message = str(exc)[:200]
            raise BadRequest(f"Jaeger trace {i}: malformed ({type(exc).__name__}: {message})") from exc
    return request


def _value(tag: dict[str, Any]) -> AnyValue:
    kind: Any = tag.get("type", "string")
    value: Any = tag.get("value")
    if kind == "bool":
        return AnyValue(bool_value=bool(value))
    if kind == "int64":
        return AnyValue(int_value=int(value))
    if kind == "float64":
        return AnyValue(double_value=float(value))
    if kind == "binary":
        return AnyValue(bytes_value=base64.b64decode(value))
    return AnyValue(string_value=str(value))


def _id(text: str, width: int) -> bytes:
    return bytes.fromhex(text).rjust(width, b"\0")


def jaeger_to_otlp(trace: dict[str, Any], request: ExportTraceServiceRequest) -> None:
    """Append one Jaeger trace to `request`, one ResourceSpans a process."""
    resources: dict[str, ResourceSpans] = {}
    for pid, process in trace["processes"].items():
        rs = request.resource_spans.add()
        rs.resource.attributes.add(key="service.name").value.string_value = process["serviceName"]
        rs.resource.attributes.extend(
            KeyValue(key=t["key"], value=_value(t)) for t in process.get("tags") or []
        )
        resources[pid] = rs
    for js in trace["spans"]:
        trace_id = _id(js["traceID"], 16)
        span = Span(
            trace_id=trace_id,
            span_id=_id(js["spanID"], 8),
            name=js.get("operationName", ""),
            start_time_unix_nano=int(js["startTime"]) * 1000,
            end_time_unix_nano=(int(js["startTime"]) + int(js.get("duration", 0))) * 1000,
            flags=int(js.get("flags") or 0),
        )
        scope_name = scope_version = ""
        for tag in js.get("tags") or []:
            key = tag["key"]
            if key == "span.kind" and tag["value"] in _KINDS:
                span.kind = _KINDS[tag["value"]]
            elif key == "otel.status_code" and tag["value"] in _STATUS:
                span.status.code = _STATUS[tag["value"]]
            elif key == "otel.status_description":
                span.status.message = str(tag["value"])
            elif key == "error" and tag.get("type") == "bool":
                if tag["value"]:
                    span.status.code = Status.STATUS_CODE_ERROR
            elif key == "otel.scope.name":
                scope_name = str(tag["value"])
            elif key == "otel.scope.version":
                scope_version = str(tag["value"])
            elif key == "w3c.tracestate":
                span.trace_state = str(tag["value"])
            else:
                span.attributes.append(KeyValue(key=key, value=_value(tag)))
        for ref in js.get("references") or []:
            ref_trace, ref_span = _id(ref["traceID"], 16), _id(ref["spanID"], 8)
            child_of = ref.get("refType") == "CHILD_OF"
            if child_of and not span.parent_span_id and ref_trace == trace_id:
                span.parent_span_id = ref_span
                continue
            link = span.links.add(trace_id=ref_trace, span_id=ref_span)
            link.attributes.add(key="opentracing.ref_type").value.string_value = (
                "child_of" if child_of else "follows_from"
            )
        for log in js.get("logs") or []:
            event = span.events.add(time_unix_nano=int(log["timestamp"]) * 1000)
            for field in log.get("fields") or []:
                if field["key"] == "event" and not event.name:
                    event.name = str(field["value"])
                else:
                    event.attributes.append(KeyValue(key=field["key"], value=_value(field)))
        rs = resources[js["processID"]]
        scopes = [
            ss for ss in rs.scope_spans if (ss.scope.name, ss.scope.version) == (scope_name, scope_version)
        ]
        ss = scopes[0] if scopes else rs.scope_spans.add()
        ss.scope.name, ss.scope.version = scope_name, scope_version
        ss.spans.append(span)
