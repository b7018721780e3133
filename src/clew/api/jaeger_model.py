"""Stored spans as Jaeger's query API shows them (the JSON that Jaeger UI and Grafana read).

OTLP fields without a Jaeger slot become tags the way Jaeger's own OTLP translator does it:
`span.kind`, `otel.status_code`, `otel.status_description`, `error`, `otel.scope.name`,
`otel.scope.version`, `w3c.tracestate`. Parents are CHILD_OF references; links are FOLLOWS_FROM
(CHILD_OF when the link carries `opentracing.ref_type=child_of`).
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from clew.core.attributes import attribute_list_to_keyvalues, row_keyvalues
from clew.core.model import RESOURCE_COLUMNS, SpanBatch
from clew.core.otlp import integer_times, nanos

KIND_NAMES = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
STATUS_NAMES = {0: "UNSET", 1: "OK", 2: "ERROR"}
_JS_SAFE = 2**53 - 1


def jaeger_id(raw: bytes) -> str:
    """Lower-case hex; 64-bit ids (high half zero) print with 16 digits, as Jaeger prints them."""
    if len(raw) == 16 and raw[:8] == bytes(8):
        return raw[8:].hex()
    return raw.hex()


def _double(value: float) -> float | str:
    """A double as JSON takes it: NaN and the infinities (which OTLP carries) as the strings that
    protobuf's JSON mapping writes for them, since JSON has no such numbers."""
    return value if math.isfinite(value) else json.dumps(value)


def _tag(key: str, value: AnyValue) -> dict[str, Any]:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return {"key": key, "type": "string", "value": value.string_value}
    if kind == "bool_value":
        return {"key": key, "type": "bool", "value": value.bool_value}
    if kind == "int_value":
        v = value.int_value
        return {"key": key, "type": "int64", "value": v if abs(v) <= _JS_SAFE else str(v)}
    if kind == "double_value":
        return {"key": key, "type": "float64", "value": _double(value.double_value)}
    if kind == "bytes_value":
        return {"key": key, "type": "binary", "value": base64.b64encode(value.bytes_value).decode()}
    if kind is None:
        return {"key": key, "type": "string", "value": ""}
    # arrays and key-value lists: JSON of their plain values, as Jaeger's translator renders them
    # (pcommon's AsString: ["a","b","c"], {"k":"v"} with sorted keys, bytes in base64)
    return {
        "key": key,
        "type": "string",
        "value": json.dumps(_raw(value), separators=(",", ":"), sort_keys=True),
    }


def _raw(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_raw(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _raw(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    if kind == "double_value":
        return _double(value.double_value)
    return getattr(value, kind) if kind is not None else None


def _tags(kvs: list[KeyValue]) -> list[dict[str, Any]]:
    return [_tag(kv.key, kv.value) for kv in kvs]


def _string_tag(key: str, value: str) -> dict[str, Any]:
    return {"key": key, "type": "string", "value": value}


def to_jaeger_traces(batch: SpanBatch) -> list[dict[str, Any]]:
    """One Jaeger trace per trace id in the batch, in order of first appearance."""
    traces: dict[bytes, dict[str, Any]] = {}
    processes: dict[bytes, dict[Any, str]] = {}
    seen: dict[bytes, set[bytes]] = {}
    for row in integer_times(batch.table).to_pylist():
        trace_id: bytes = row["trace_id"]
        trace = traces.get(trace_id)
        if trace is None:
            trace = traces[trace_id] = {
                "traceID": jaeger_id(trace_id),
                "spans": [],
                "processes": {},
                "warnings": None,
            }
            processes[trace_id] = {}
            seen[trace_id] = set()
        if row["span_id"] in seen[trace_id]:  # a duplicate span id: keep the first
            continue
        seen[trace_id].add(row["span_id"])
        process_key = tuple(
            tuple(map(tuple, row[c])) if isinstance(row[c], list) else row[c] for c in RESOURCE_COLUMNS
        )
        pid = processes[trace_id].get(process_key)
        if pid is None:
            pid = processes[trace_id][process_key] = f"p{len(processes[trace_id]) + 1}"
            resource = row_keyvalues(row, "resource")
            trace["processes"][pid] = {
                "serviceName": row["service_name"],
                "tags": _tags([kv for kv in resource if kv.key != "service.name"]),
            }
        trace["spans"].append(_span(row, pid))
    return list(traces.values())


def _span(row: dict[str, Any], pid: str) -> dict[str, Any]:
    trace_hex = jaeger_id(row["trace_id"])
    references = []
    if row["parent_span_id"]:
        references.append(
            {"refType": "CHILD_OF", "traceID": trace_hex, "spanID": row["parent_span_id"].hex()}
        )
    for tid, sid, attrs in zip(
        row["links_trace_id"], row["links_span_id"], row["links_attributes"], strict=True
    ):
        child_of = any(a["key"] == "opentracing.ref_type" and a["value"] == b"child_of" for a in attrs)
        references.append(
            {
                "refType": "CHILD_OF" if child_of else "FOLLOWS_FROM",
                "traceID": jaeger_id(tid),
                "spanID": sid.hex(),
            }
        )
    tags = _tags(row_keyvalues(row, "attributes"))
    if row["kind"] in KIND_NAMES:
        tags.append(_string_tag("span.kind", KIND_NAMES[row["kind"]]))
    if row["status_code"]:
        tags.append(_string_tag("otel.status_code", STATUS_NAMES.get(row["status_code"], "UNSET")))
        if row["status_code"] == 2:
            tags.append({"key": "error", "type": "bool", "value": True})
    if row["status_message"]:
        tags.append(_string_tag("otel.status_description", row["status_message"]))
    if row["scope_name"]:
        tags.append(_string_tag("otel.scope.name", row["scope_name"]))
    if row["scope_version"]:
        tags.append(_string_tag("otel.scope.version", row["scope_version"]))
    tags += _tags(attribute_list_to_keyvalues(row["scope_attributes"]))
    if row["trace_state"]:
        tags.append(_string_tag("w3c.tracestate", row["trace_state"]))
    logs = []
    for t, name, attrs in zip(row["events_time"], row["events_name"], row["events_attributes"], strict=True):
        fields = [_string_tag("event", name)] if name else []
        logs.append(
            {"timestamp": nanos(t) // 1000, "fields": fields + _tags(attribute_list_to_keyvalues(attrs))}
        )
    return {
        "traceID": trace_hex,
        "spanID": row["span_id"].hex(),
        "operationName": row["name"],
        "references": references,
        "flags": row["flags"] & 0xFF,
        "startTime": nanos(row["start_time"]) // 1000,
        "duration": row["duration"] // 1000,
        "tags": tags,
        "logs": logs,
        "processID": pid,
        "warnings": None,
    }


def add_log_records(traces: list[dict[str, Any]], records: list[dict[str, Any]]) -> None:
    """OTLP log records (clew's log JSON) as Jaeger span logs of the span each was written in:
    `message` (the body, JSON for a structured one), `level`, then the record's attributes. A
    record of no span of the trace is left out (Jaeger has nowhere to put it)."""
    spans = {span["spanID"]: span for trace in traces for span in trace["spans"]}
    for record in records:
        span = spans.get(record["spanId"])
        if span is None:
            continue
        body = record["body"]
        message = body if isinstance(body, str) else json.dumps(body, separators=(",", ":"), sort_keys=True)
        fields = [_string_tag("message", message)]
        if record["severityText"]:
            fields.append(_string_tag("level", record["severityText"]))
        fields += [_plain_tag(key, value) for key, value in record["attributes"].items()]
        span["logs"].append({"timestamp": int(record["timeUnixNano"]) // 1000, "fields": fields})
    for span in spans.values():
        span["logs"].sort(key=lambda log: log["timestamp"])


def _plain_tag(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "type": "bool", "value": value}
    if isinstance(value, int):
        return {"key": key, "type": "int64", "value": value if abs(value) <= _JS_SAFE else str(value)}
    if isinstance(value, float):
        return {"key": key, "type": "float64", "value": _double(value)}
    if isinstance(value, str):
        return _string_tag(key, value)
    return _string_tag(key, json.dumps(value, separators=(",", ":"), sort_keys=True))
