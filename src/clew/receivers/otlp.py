"""Decode OTLP trace requests (protobuf or OTLP/JSON) into a columnar `SpanBatch`.

This is the hot ingest path: each attribute is touched once and appended straight to column lists;
resource and scope columns are built once per resource/scope and expanded with Arrow's `take`.
Invalid spans are dropped one by one and counted, as OTLP's `partial_success` asks.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from clew.attributes import anyvalue_json, keyvalues_json
from clew.model import COLUMNS, DEFAULT_TENANT, SPAN_SCHEMA, TS, SpanBatch

_Z16 = bytes(16)
_Z8 = bytes(8)
_MAP_TYPES = {name: arrow_type for name, _, arrow_type in COLUMNS}


class BadRequest(ValueError):
    """The body as a whole cannot be decoded: answered with 400 and the reason."""


@dataclass(slots=True)
class Decoded:
    batch: SpanBatch
    rejected: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def error_message(self) -> str:
        return "; ".join(f"{n} span(s): {reason}" for reason, n in self.reasons.most_common())


class _Attrs:
    """Column lists for one attribute set split into the five typed maps."""

    __slots__ = ("sk", "sv", "so", "ik", "iv", "io", "fk", "fv", "fo", "bk", "bv", "bo", "ck", "cv", "co")

    def __init__(self) -> None:
        self.sk: list[str] = []
        self.sv: list[str] = []
        self.ik: list[str] = []
        self.iv: list[int] = []
        self.fk: list[str] = []
        self.fv: list[float] = []
        self.bk: list[str] = []
        self.bv: list[bool] = []
        self.ck: list[str] = []
        self.cv: list[str] = []
        self.so = [0]
        self.io = [0]
        self.fo = [0]
        self.bo = [0]
        self.co = [0]

    def add(self, kvs: Any) -> None:
        """Append one row. Kept for resources and scopes; the span loop inlines the same walk."""
        for kv in kvs:
            v = kv.value
            w = v.WhichOneof("value")
            if w == "string_value":
                self.sk.append(kv.key)
                self.sv.append(v.string_value)
            elif w == "int_value":
                self.ik.append(kv.key)
                self.iv.append(v.int_value)
            elif w == "double_value":
                self.fk.append(kv.key)
                self.fv.append(v.double_value)
            elif w == "bool_value":
                self.bk.append(kv.key)
                self.bv.append(v.bool_value)
            else:
                self.ck.append(kv.key)
                self.cv.append(anyvalue_json(v))
        self.end_row()

    def end_row(self) -> None:
        self.so.append(len(self.sk))
        self.io.append(len(self.ik))
        self.fo.append(len(self.fk))
        self.bo.append(len(self.bk))
        self.co.append(len(self.ck))

    def arrays(self, prefix: str) -> dict[str, pa.Array]:
        def m(suffix: str, off: list[int], keys: list[str], vals: list[Any], vtype: pa.DataType) -> pa.Array:
            arr = pa.MapArray.from_arrays(
                pa.array(off, pa.int32()), pa.array(keys, pa.string()), pa.array(vals, vtype)
            )
            return arr.cast(_MAP_TYPES[f"{prefix}_{suffix}"])

        return {
            f"{prefix}_string": m("string", self.so, self.sk, self.sv, pa.string()),
            f"{prefix}_int": m("int", self.io, self.ik, self.iv, pa.int64()),
            f"{prefix}_float": m("float", self.fo, self.fk, self.fv, pa.float64()),
            f"{prefix}_bool": m("bool", self.bo, self.bk, self.bv, pa.bool_()),
            f"{prefix}_complex": m("complex", self.co, self.ck, self.cv, pa.string()),
        }


def _list_array(offsets: list[int], values: list[Any], vtype: pa.DataType) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, vtype))


def decode_protobuf(body: bytes, tenant: str = DEFAULT_TENANT) -> Decoded:
    req = ExportTraceServiceRequest()
    try:
        req.ParseFromString(body)
    except DecodeError as exc:
        raise BadRequest(f"cannot decode ExportTraceServiceRequest protobuf: {exc}") from exc
    return decode_request(req, tenant)


def decode_request(req: ExportTraceServiceRequest, tenant: str = DEFAULT_TENANT) -> Decoded:
    reasons: Counter[str] = Counter()
    trace_ids: list[bytes] = []
    span_ids: list[bytes] = []
    parents: list[bytes] = []
    states: list[str] = []
    flags: list[int] = []
    names: list[str] = []
    kinds: list[int] = []
    starts: list[int] = []
    durations: list[int] = []
    status_codes: list[int] = []
    status_messages: list[str] = []
    dropped_attrs: list[int] = []
    dropped_events: list[int] = []
    dropped_links: list[int] = []
    resource_index: list[int] = []
    scope_index: list[int] = []
    ev_off = [0]
    ev_time: list[int] = []
    ev_name: list[str] = []
    ev_attrs: list[str] = []
    ev_dropped: list[int] = []
    ln_off = [0]
    ln_trace: list[bytes] = []
    ln_span: list[bytes] = []
    ln_state: list[str] = []
    ln_attrs: list[str] = []
    ln_dropped: list[int] = []
    ln_flags: list[int] = []

    attrs = _Attrs()
    sk, sv, ik, iv, fk, fv = attrs.sk, attrs.sv, attrs.ik, attrs.iv, attrs.fk, attrs.fv
    bk, bv, ck, cv = attrs.bk, attrs.bv, attrs.ck, attrs.cv
    so, io, fo, bo, co = attrs.so, attrs.io, attrs.fo, attrs.bo, attrs.co

    res_attrs = _Attrs()
    services: list[str] = []
    res_dropped: list[int] = []
    res_schema: list[str] = []
    scope_names: list[str] = []
    scope_versions: list[str] = []
    scope_attrs: list[str] = []
    scope_dropped: list[int] = []
    scope_schema: list[str] = []

    for ri, rs in enumerate(req.resource_spans):
        resource = rs.resource
        service = "unknown_service"
        for kv in resource.attributes:
            if kv.key == "service.name" and kv.value.WhichOneof("value") == "string_value":
                service = kv.value.string_value
        services.append(service)
        res_attrs.add(resource.attributes)
        res_dropped.append(resource.dropped_attributes_count)
        res_schema.append(rs.schema_url)
        for ss in rs.scope_spans:
            si = len(scope_names)
            scope = ss.scope
            scope_names.append(scope.name)
            scope_versions.append(scope.version)
            scope_attrs.append(keyvalues_json(scope.attributes))
            scope_dropped.append(scope.dropped_attributes_count)
            scope_schema.append(ss.schema_url)
            for sp in ss.spans:
                tid = sp.trace_id
                sid = sp.span_id
                psid = sp.parent_span_id
                start = sp.start_time_unix_nano
                end = sp.end_time_unix_nano
                if len(tid) != 16:
                    reasons[f"trace_id must be 16 bytes, got {len(tid)}"] += 1
                    continue
                if tid == _Z16:
                    reasons["trace_id is all zeros"] += 1
                    continue
                if len(sid) != 8:
                    reasons[f"span_id must be 8 bytes, got {len(sid)}"] += 1
                    continue
                if sid == _Z8:
                    reasons["span_id is all zeros"] += 1
                    continue
                if psid and len(psid) != 8:
                    reasons[f"parent_span_id must be empty or 8 bytes, got {len(psid)}"] += 1
                    continue
                if start == 0:
                    reasons["start time is missing"] += 1
                    continue
                if end < start:
                    reasons["end time is before start time"] += 1
                    continue
                trace_ids.append(tid)
                span_ids.append(sid)
                parents.append(b"" if psid == _Z8 else psid)
                states.append(sp.trace_state)
                flags.append(sp.flags)
                names.append(sp.name)
                kinds.append(sp.kind)
                starts.append(start)
                durations.append(end - start)
                status = sp.status
                status_codes.append(status.code)
                status_messages.append(status.message)
                dropped_attrs.append(sp.dropped_attributes_count)
                dropped_events.append(sp.dropped_events_count)
                dropped_links.append(sp.dropped_links_count)
                resource_index.append(ri)
                scope_index.append(si)
                for kv in sp.attributes:
                    v = kv.value
                    w = v.WhichOneof("value")
                    if w == "string_value":
                        sk.append(kv.key)
                        sv.append(v.string_value)
                    elif w == "int_value":
                        ik.append(kv.key)
                        iv.append(v.int_value)
                    elif w == "double_value":
                        fk.append(kv.key)
                        fv.append(v.double_value)
                    elif w == "bool_value":
                        bk.append(kv.key)
                        bv.append(v.bool_value)
                    else:
                        ck.append(kv.key)
                        cv.append(anyvalue_json(v))
                so.append(len(sk))
                io.append(len(ik))
                fo.append(len(fk))
                bo.append(len(bk))
                co.append(len(ck))
                if sp.events:
                    for ev in sp.events:
                        ev_time.append(ev.time_unix_nano)
                        ev_name.append(ev.name)
                        ev_attrs.append(keyvalues_json(ev.attributes))
                        ev_dropped.append(ev.dropped_attributes_count)
                ev_off.append(len(ev_time))
                if sp.links:
                    for ln in sp.links:
                        ln_trace.append(ln.trace_id)
                        ln_span.append(ln.span_id)
                        ln_state.append(ln.trace_state)
                        ln_attrs.append(keyvalues_json(ln.attributes))
                        ln_dropped.append(ln.dropped_attributes_count)
                        ln_flags.append(ln.flags)
                ln_off.append(len(ln_trace))

    n = len(trace_ids)
    rejected = sum(reasons.values())
    if n == 0:
        return Decoded(SpanBatch.empty(), rejected, reasons)
    resources = pa.table(
        {
            "service_name": pa.array(services, pa.string()),
            **res_attrs.arrays("resource"),
            "resource_dropped": pa.array(res_dropped, pa.uint32()),
            "resource_schema_url": pa.array(res_schema, pa.string()),
        }
    ).take(pa.array(resource_index, pa.int32()))
    scopes = pa.table(
        {
            "scope_name": pa.array(scope_names, pa.string()),
            "scope_version": pa.array(scope_versions, pa.string()),
            "scope_attributes": pa.array(scope_attrs, pa.string()),
            "scope_dropped": pa.array(scope_dropped, pa.uint32()),
            "scope_schema_url": pa.array(scope_schema, pa.string()),
        }
    ).take(pa.array(scope_index, pa.int32()))

    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        "tenant": pa.array([tenant] * n, pa.string()),
        "trace_id": pa.array(trace_ids, pa.binary(16)),
        "span_id": pa.array(span_ids, pa.binary(8)),
        "parent_span_id": pa.array(parents, pa.binary()),
        "trace_state": pa.array(states, pa.string()),
        "flags": pa.array(flags, pa.uint32()),
        "name": pa.array(names, pa.string()),
        "kind": pa.array(kinds, pa.uint8()),
        "start_time": pa.array(starts, pa.int64()).cast(TS),
        "duration": pa.array(durations, pa.uint64()),
        "status_code": pa.array(status_codes, pa.uint8()),
        "status_message": pa.array(status_messages, pa.string()),
        **{name: resources.column(name) for name in resources.column_names},
        **{name: scopes.column(name) for name in scopes.column_names},
        **attrs.arrays("attributes"),
        "dropped_attributes": pa.array(dropped_attrs, pa.uint32()),
        "dropped_events": pa.array(dropped_events, pa.uint32()),
        "dropped_links": pa.array(dropped_links, pa.uint32()),
        "events_time": _list_array(ev_off, ev_time, pa.int64()).cast(pa.list_(TS)),
        "events_name": _list_array(ev_off, ev_name, pa.string()),
        "events_attributes": _list_array(ev_off, ev_attrs, pa.string()),
        "events_dropped": _list_array(ev_off, ev_dropped, pa.uint32()),
        "links_trace_id": _list_array(ln_off, ln_trace, pa.binary()),
        "links_span_id": _list_array(ln_off, ln_span, pa.binary()),
        "links_trace_state": _list_array(ln_off, ln_state, pa.string()),
        "links_attributes": _list_array(ln_off, ln_attrs, pa.string()),
        "links_dropped": _list_array(ln_off, ln_dropped, pa.uint32()),
        "links_flags": _list_array(ln_off, ln_flags, pa.uint32()),
    }
    table = pa.table(columns, schema=SPAN_SCHEMA)
    return Decoded(SpanBatch(table), rejected, reasons)


# --- OTLP/JSON ---------------------------------------------------------------------------------

_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def _convert_ids(doc: dict[str, Any], convert: Any, where: str = "") -> None:
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


def _hex_to_b64(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{path}: expected a hex string, got {type(value).__name__}")
    try:
        return base64.b64encode(bytes.fromhex(value)).decode()
    except ValueError as exc:
        raise BadRequest(f"{path}: not a hex string: {value[:40]!r}") from exc


def _b64_to_hex(value: str, path: str) -> str:
    try:
        return base64.b64decode(value).hex()
    except binascii.Error:  # pragma: no cover - produced by protobuf itself
        return value


def parse_json_request(body: bytes) -> ExportTraceServiceRequest:
    """OTLP/JSON (hex ids, enums as ints or names, int64 as strings) into the protobuf request."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"invalid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise BadRequest("invalid OTLP/JSON: the body must be a JSON object with resourceSpans")
    try:
        _convert_ids(doc, _hex_to_b64)
        return json_format.ParseDict(doc, ExportTraceServiceRequest(), ignore_unknown_fields=True)
    except BadRequest:
        raise
    except (json_format.ParseError, AttributeError, TypeError, ValueError) as exc:
        raise BadRequest(f"invalid OTLP/JSON: {exc}") from exc


def decode_json(body: bytes, tenant: str = DEFAULT_TENANT) -> Decoded:
    return decode_request(parse_json_request(body), tenant)


def to_otlp_json(message: Any) -> dict[str, Any]:
    """A TracesData/Export message as an OTLP/JSON document (hex ids, enums as integers)."""
    doc = json_format.MessageToDict(message, use_integers_for_enums=True)
    _convert_ids(doc, _b64_to_hex)
    return doc
