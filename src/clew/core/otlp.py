"""OTLP shapes shared by reads and writes: stored spans back into `TracesData` (grouped by resource
and scope as they were sent), and OTLP/JSON with hex ids."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import pyarrow as pa
from google.protobuf import json_format
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status, TracesData

from clew.core.attributes import attribute_list_to_keyvalues, row_keyvalues
from clew.core.model import RESOURCE_COLUMNS, SCOPE_COLUMNS, SpanBatch


def _key(value: Any) -> Any:
    """Hashable form of a row value (maps arrive as lists of pairs, tuples as dicts)."""
    if isinstance(value, list | tuple):
        return tuple(_key(v) for v in value)
    if isinstance(value, dict):
        return tuple((k, _key(v)) for k, v in value.items())
    return value


def nanos(ts: Any) -> int:
    """Nanoseconds of a timestamp as Arrow hands it to Python (integer, pandas Timestamp or datetime)."""
    if isinstance(ts, int):
        return ts
    return int(ts.value) if hasattr(ts, "value") else int(ts.timestamp() * 1_000_000_000)


_U64 = 2**64 - 1


def integer_times(table: pa.Table) -> pa.Table:
    """Timestamp columns as nanosecond integers: exact, and readable whatever a stored value is
    (an event time written before receivers dropped times past 2262 wrapped round, and turning it
    into a datetime failed every read of its trace)."""
    for i, f in enumerate(table.schema):
        if pa.types.is_timestamp(f.type):
            table = table.set_column(i, f.name, table.column(i).cast(pa.int64()))
        elif pa.types.is_list(f.type) and pa.types.is_timestamp(f.type.value_type):
            table = table.set_column(i, f.name, table.column(i).cast(pa.list_(pa.int64())))
    return table


def to_traces_data(batch: SpanBatch) -> TracesData:
    data = TracesData()
    resources: dict[Any, ResourceSpans] = {}
    scopes: dict[Any, ScopeSpans] = {}
    for row in integer_times(batch.table).to_pylist():
        rkey = tuple(_key(row[c]) for c in RESOURCE_COLUMNS)
        rs = resources.get(rkey)
        if rs is None:
            rs = data.resource_spans.add()
            rs.resource.CopyFrom(
                Resource(
                    attributes=row_keyvalues(row, "resource"),
                    dropped_attributes_count=row["resource_dropped"],
                )
            )
            rs.schema_url = row["resource_schema_url"]
            resources[rkey] = rs
        skey = (rkey, *(_key(row[c]) for c in SCOPE_COLUMNS))
        ss = scopes.get(skey)
        if ss is None:
            ss = rs.scope_spans.add()
            ss.scope.CopyFrom(
                InstrumentationScope(
                    name=row["scope_name"],
                    version=row["scope_version"],
                    attributes=attribute_list_to_keyvalues(row["scope_attributes"]),
                    dropped_attributes_count=row["scope_dropped"],
                )
            )
            ss.schema_url = row["scope_schema_url"]
            scopes[skey] = ss
        start = nanos(row["start_time"])
        span = Span(
            trace_id=row["trace_id"],
            span_id=row["span_id"],
            parent_span_id=row["parent_span_id"],
            trace_state=row["trace_state"],
            flags=row["flags"],
            name=row["name"],
            kind=row["kind"],
            start_time_unix_nano=start,
            end_time_unix_nano=start + row["duration"],
            attributes=row_keyvalues(row, "attributes"),
            dropped_attributes_count=row["dropped_attributes"],
            dropped_events_count=row["dropped_events"],
            dropped_links_count=row["dropped_links"],
        )
        if row["status_code"] or row["status_message"]:
            span.status.CopyFrom(Status(code=row["status_code"], message=row["status_message"]))
        for t, name, attrs, dropped in zip(
            row["events_time"],
            row["events_name"],
            row["events_attributes"],
            row["events_dropped"],
            strict=True,
        ):
            span.events.add(
                time_unix_nano=nanos(t) & _U64,  # as sent, for a time the Int64 column wrapped
                name=name,
                attributes=attribute_list_to_keyvalues(attrs),
                dropped_attributes_count=dropped,
            )
        for tid, sid, state, attrs, dropped, flags in zip(
            row["links_trace_id"],
            row["links_span_id"],
            row["links_trace_state"],
            row["links_attributes"],
            row["links_dropped"],
            row["links_flags"],
            strict=True,
        ):
            span.links.add(
                trace_id=tid,
                span_id=sid,
                trace_state=state,
                attributes=attribute_list_to_keyvalues(attrs),
                dropped_attributes_count=dropped,
                flags=flags,
            )
        ss.spans.append(span)
    return data


# --- OTLP/JSON: protobuf JSON with ids as hex ---------------------------------------------------

_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def convert_ids(doc: dict[str, Any], convert: Any, where: str = "") -> None:
    """Apply `convert` to every id field of a TracesData-shaped document, in place."""
    for ri, rs in enumerate(doc.get("resourceSpans") or []):
        for si, ss in enumerate((rs or {}).get("scopeSpans") or []):
            for pi, span in enumerate((ss or {}).get("spans") or []):
                path = f"{where}resourceSpans[{ri}].scopeSpans[{si}].spans[{pi}]"
                if not isinstance(span, dict):
                    continue
                for key in _ID_FIELDS:
                    if key in span:
                        span[key] = convert(span[key], f"{path}.{key}")
                for li, link in enumerate(span.get("links") or []):
                    if isinstance(link, dict):
                        for key in ("traceId", "spanId"):
                            if key in link:
                                link[key] = convert(link[key], f"{path}.links[{li}].{key}")


def _b64_to_hex(value: str, path: str) -> str:
    try:
        return base64.b64decode(value).hex()
    except binascii.Error:  # pragma: no cover - produced by protobuf itself
        return value


def to_otlp_json(message: Any) -> dict[str, Any]:
    """A TracesData/Export message as an OTLP/JSON document (hex ids, enums as integers)."""
    doc = json_format.MessageToDict(message, use_integers_for_enums=True)
    convert_ids(doc, _b64_to_hex)
    return doc
