"""Parse and validate OTLP trace requests (protobuf or OTLP/JSON) into an `OtlpBatch`.

This is the hot ingest path, so it stays small: upb parses the request, one loop checks the ids and
times of every span, and the request goes to the store in wire form for the engine to turn into
columns. Invalid spans are removed one by one and counted, as OTLP's `partial_success` asks.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from clew.core.errors import BadRequest
from clew.core.model import DEFAULT_TENANT, OtlpBatch
from clew.core.otlp import convert_ids, to_otlp_json

__all__ = [
    "BadRequest",
    "Decoded",
    "accept_request",
    "decode_json",
    "decode_protobuf",
    "parse_json_request",
    "to_otlp_json",
]

_Z16 = bytes(16)
_Z8 = bytes(8)
_MAX_NS = (1 << 63) - 1  # DateTime64(9) holds signed nanoseconds


@dataclass(slots=True)
class Decoded:
    batch: OtlpBatch
    rejected: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def error_message(self) -> str:
        return "; ".join(f"{n} span(s): {reason}" for reason, n in self.reasons.most_common())


def invalid_reason(span: Span) -> str | None:
    """Why a span cannot be stored, or None."""
    tid, sid, psid = span.trace_id, span.span_id, span.parent_span_id
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    if len(tid) != 16:
        return f"trace_id must be 16 bytes, got {len(tid)}"
    if tid == _Z16:
        return "trace_id is all zeros"
    if len(sid) != 8:
        return f"span_id must be 8 bytes, got {len(sid)}"
    if sid == _Z8:
        return "span_id is all zeros"
    if psid and len(psid) != 8:
        return f"parent_span_id must be empty or 8 bytes, got {len(psid)}"
    if start == 0:
        return "start time is missing"
    if end < start:
        return "end time is before start time"
    if end > _MAX_NS:
        return "time is past the year 2262"
    return None


def accept_request(req: ExportTraceServiceRequest, tenant: str = DEFAULT_TENANT) -> Decoded:
    """Drop invalid spans (counting why) and serialize the rest for the store."""
    reasons: Counter[str] = Counter()
    spans = 0
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            why = [invalid_reason(sp) for sp in ss.spans]
            if any(why):
                keep = [sp for sp, reason in zip(ss.spans, why, strict=True) if reason is None]
                reasons.update(reason for reason in why if reason is not None)
                del ss.spans[:]
                ss.spans.extend(keep)
            spans += len(ss.spans)
    rejected = sum(reasons.values())
    if spans == 0:
        return Decoded(OtlpBatch(tenant, (), 0), rejected, reasons)
    # Unknown fields are dropped so that the engine reads exactly the schema it was given.
    req.DiscardUnknownFields()
    return Decoded(OtlpBatch(tenant, (req.SerializeToString(),), spans), rejected, reasons)


def decode_protobuf(body: bytes, tenant: str = DEFAULT_TENANT) -> Decoded:
    req = ExportTraceServiceRequest()
    try:
        req.ParseFromString(body)
    except DecodeError as exc:
        raise BadRequest(f"cannot decode ExportTraceServiceRequest protobuf: {exc}") from exc
    return accept_request(req, tenant)


# --- OTLP/JSON ---------------------------------------------------------------------------------


def _hex_to_b64(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{path}: expected a hex string, got {type(value).__name__}")
    try:
        return base64.b64encode(bytes.fromhex(value)).decode()
    except ValueError as exc:
        raise BadRequest(f"{path}: not a hex string: {value[:40]!r}") from exc


def parse_json_request(body: bytes) -> ExportTraceServiceRequest:
    """OTLP/JSON (hex ids, enums as ints or names, int64 as strings) into the protobuf request."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"invalid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise BadRequest("invalid OTLP/JSON: the body must be a JSON object with resourceSpans")
    try:
        convert_ids(doc, _hex_to_b64)
        return json_format.ParseDict(doc, ExportTraceServiceRequest(), ignore_unknown_fields=True)
    except BadRequest:
        raise
    except (json_format.ParseError, AttributeError, TypeError, ValueError) as exc:
        raise BadRequest(f"invalid OTLP/JSON: {exc}") from exc


def decode_json(body: bytes, tenant: str = DEFAULT_TENANT) -> Decoded:
    return accept_request(parse_json_request(body), tenant)
