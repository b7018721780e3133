"""Parse and validate OTLP trace requests (protobuf or OTLP/JSON) into an `OtlpBatch`.

This is the hot ingest path, so it stays small: upb parses the request, one loop checks the ids and
times of every span, and the request goes to the store in wire form for the engine to turn into
columns. Invalid spans are removed one by one and counted, as OTLP's `partial_success` asks.

OTLP/JSON bodies are read by `json_body.load_json` (nesting, number and text limits: a `BadRequest`
for the whole request). A request that the protobuf JSON mapping refuses is parsed again span by span
(`_parse_spans`, only then, so a valid request pays nothing): a span that does not parse is dropped
and counted with its reason, naming the attribute where it is one; what is outside the spans (the
resource, the scope, the lists themselves) still fails the whole request. Before that, an `intValue`
that is a whole number beyond int64 (`1.5e+300`, `18446744073709551616`: JavaScript exporters write
any integral double as `intValue`) is kept as the `doubleValue` it was, rather than losing the span.
"""

from __future__ import annotations

import base64
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from clew.core.errors import BadRequest
from clew.core.json_body import load_json
from clew.core.model import DEFAULT_TENANT, LOGS, OtlpBatch
from clew.core.otlp import convert_ids, to_otlp_json

__all__ = [
    "BadRequest",
    "Decoded",
    "accept_request",
    "decode_json",
    "decode_protobuf",
    "parse_json_document",
    "parse_json_request",
    "to_otlp_json",
]

_Z16 = bytes(16)
_Z8 = bytes(8)
_MAX_NS = (1 << 63) - 1  # DateTime64(9) holds signed nanoseconds
_MAX_REASONS = 10  # distinct reasons spelled out in a partial_success message
_MAX_REASON_CHARS = 200


@dataclass(slots=True)
class Decoded:
    batch: OtlpBatch
    rejected: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    unit: str = "span"  # what the message counts: spans, or log records

    @property
    def error_message(self) -> str:
        common = self.reasons.most_common(_MAX_REASONS)
        message = "; ".join(f"{n} {self.unit}(s): {reason}" for reason, n in common)
        others = self.rejected - sum(n for _, n in common)
        return f"{message}; {others} {self.unit}(s) for other reasons" if others > 0 else message

    def response(self) -> Message:
        """The OTLP export response of the request's signal, with its partial success."""
        response: Message
        if self.batch.signal == LOGS:
            response = ExportLogsServiceResponse()
            if self.rejected:
                response.partial_success.rejected_log_records = self.rejected
                response.partial_success.error_message = self.error_message
        else:
            response = ExportTraceServiceResponse()
            if self.rejected:
                response.partial_success.rejected_spans = self.rejected
                response.partial_success.error_message = self.error_message
        return response

    def reject(self, reasons: Counter[str]) -> Decoded:
        """Also count spans dropped before `accept_request` saw the request."""
        self.reasons.update(reasons)
        self.rejected += sum(reasons.values())
        return self


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


# An Event (Span field 11) whose time (its field 1, fixed64, written first by upb's field-ordered
# encoding) has the top bit set: past the year 2262, which the store would read back as negative. A
# screen over the serialized request (~0.1 us a span): rare chance matches in ids or bytes values
# cost one exact pass over the events.
_LATE_EVENT = re.compile(rb"\x5a[\x80-\xff]{0,4}[\x00-\x7f]\x09[\x00-\xff]{7}[\x80-\xff]")
_LATE_EVENT_REASON = "event time is past the year 2262"


def _drop_late_events(req: ExportTraceServiceRequest) -> int:
    """Remove spans with an event past the year 2262; how many."""
    dropped = 0
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            keep = [sp for sp in ss.spans if all(e.time_unix_nano <= _MAX_NS for e in sp.events)]
            if len(keep) < len(ss.spans):
                dropped += len(ss.spans) - len(keep)
                del ss.spans[:]
                ss.spans.extend(keep)
    return dropped


def keep_valid(items: Any, reason_of: Callable[[Any], str | None], reasons: Counter[str]) -> int:
    """Remove from a repeated field (spans, log records) the items `reason_of` names a reason for,
    counting the reasons; how many are left. A list without an invalid item is left untouched."""
    why = [reason_of(item) for item in items]
    if any(why):
        keep = [item for item, reason in zip(items, why, strict=True) if reason is None]
        reasons.update(reason for reason in why if reason is not None)
        del items[:]
        items.extend(keep)
    return len(items)


def accept_request(req: ExportTraceServiceRequest, tenant: str = DEFAULT_TENANT) -> Decoded:
    """Drop invalid spans (counting why) and serialize the rest for the store."""
    reasons: Counter[str] = Counter()
    spans = 0
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            spans += keep_valid(ss.spans, invalid_reason, reasons)
    payload = b""
    if spans:
        # Unknown fields are dropped so that the engine reads exactly the schema it was given.
        req.DiscardUnknownFields()
        payload = req.SerializeToString()
        if _LATE_EVENT.search(payload) and (late := _drop_late_events(req)):
            reasons[_LATE_EVENT_REASON] += late
            spans -= late
            payload = req.SerializeToString() if spans else b""
    rejected = sum(reasons.values())
    if spans == 0:
        return Decoded(OtlpBatch(tenant, (), 0), rejected, reasons)
    return Decoded(OtlpBatch(tenant, (payload,), spans), rejected, reasons)


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


_PARSE_ERRORS = (json_format.ParseError, AttributeError, TypeError, ValueError)
_INT64 = (-(1 << 63), (1 << 63) - 1)
_FAILED = re.compile(r"Failed to parse (\w+) field: ")
_PATH = re.compile(r"[\w.\[\]]+")  # json_format's "... at Span.attributes[0].value.intValue."


def _short(exc: Exception) -> str:
    """json_format's error as `field.path: what`, without its nesting chatter, and short."""
    text = str(exc)
    path = ".".join(_FAILED.findall(text))
    what, at, where = _FAILED.sub("", text).rstrip(".").rpartition(" at ")
    if at and _PATH.fullmatch(where):
        path = where.partition(".")[2] or path
    else:
        what = where
    reason = f"{path}: {what}" if path else what
    return reason if len(reason) <= _MAX_REASON_CHARS else reason[: _MAX_REASON_CHARS - 3] + "..."


def _widen(value: Any) -> float | None:
    """An intValue that is a whole number beyond int64 as a double; None for anything else."""
    if isinstance(value, bool):
        return None
    number: int | float
    if isinstance(value, int | float):
        number = value
    elif isinstance(value, str):
        try:
            number = int(value)
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                return None
    else:
        return None
    if isinstance(number, float) and not (math.isfinite(number) and number.is_integer()):
        return None
    if _INT64[0] <= number <= _INT64[1]:
        return None
    try:
        return float(number)
    except OverflowError:  # an integer past a double's range stays an error
        return None


def _widen_ints(doc: Any) -> None:
    """Turn every out-of-range integral `intValue` in `doc` into a `doubleValue`, in place."""
    stack = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "intValue" in item:
                double = _widen(item["intValue"])
                if double is not None:
                    del item["intValue"]
                    item["doubleValue"] = double
            stack.extend(v for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend(v for v in item if isinstance(v, dict | list))


def _field(item: dict[str, Any], json_name: str, proto_name: str) -> Any:
    return item[json_name] if json_name in item else item.get(proto_name)


def _span_reason(span: Any, exc: Exception) -> str:
    """Why `span` does not parse, naming the first attribute that does not parse on its own."""
    if not isinstance(span, dict):
        return f"a span must be a JSON object, got {type(span).__name__}"
    attributes = span.get("attributes")
    for kv in attributes if isinstance(attributes, list) else []:
        try:
            json_format.ParseDict(kv, KeyValue(), ignore_unknown_fields=True)
        except _PARSE_ERRORS as err:
            key = kv.get("key") if isinstance(kv, dict) else None
            name = repr(key[:100]) if isinstance(key, str) else "(without a string key)"
            return f"attribute {name}: {_short(err)}"
    return f"invalid span: {_short(exc)}"


Dropped = list[tuple[str, str]]  # (where, why) of each span that did not parse


def _shell(item: Any, names: tuple[str, str], into: Any, where: str) -> list[Any]:
    """Parse a resourceSpans or scopeSpans object into `into` without its list (`names`: the list's
    JSON and proto names), and return that list, whose items are parsed one by one."""
    items = _field(item, *names) if isinstance(item, dict) else None
    if not isinstance(item, dict) or not isinstance(items, list | None):
        raise BadRequest(f"invalid OTLP/JSON: {where}: expected an object with a list of {names[0]}")
    try:
        json_format.ParseDict(
            {k: v for k, v in item.items() if k not in names}, into, ignore_unknown_fields=True
        )
    except _PARSE_ERRORS as exc:
        raise BadRequest(f"invalid OTLP/JSON: {where}: {_short(exc)}") from exc
    return items or []


def _parse_spans(doc: dict[str, Any], first: Exception) -> tuple[ExportTraceServiceRequest, Dropped]:
    """Parse `doc` span by span: the request without the spans that do not parse, and where and why
    each did not. The rest must parse, or `BadRequest` for the whole request."""
    request = ExportTraceServiceRequest()
    dropped: Dropped = []
    resource_spans = _field(doc, "resourceSpans", "resource_spans")
    if not isinstance(resource_spans, list):
        raise BadRequest(f"invalid OTLP/JSON: {_short(first)}")
    for i, rs in enumerate(resource_spans):
        where = f"resourceSpans[{i}]"
        out = request.resource_spans.add()
        for j, ss in enumerate(_shell(rs, ("scopeSpans", "scope_spans"), out, where)):
            where = f"resourceSpans[{i}].scopeSpans[{j}]"
            scope = out.scope_spans.add()
            for k, span in enumerate(_shell(ss, ("spans", "spans"), scope, where)):
                try:
                    scope.spans.append(json_format.ParseDict(span, Span(), ignore_unknown_fields=True))
                except _PARSE_ERRORS as exc:
                    dropped.append((f"{where}.spans[{k}]", _span_reason(span, exc)))
    return request, dropped


def _parse_document(doc: Any) -> tuple[ExportTraceServiceRequest, Dropped]:
    if not isinstance(doc, dict):
        raise BadRequest("invalid OTLP/JSON: the body must be a JSON object with resourceSpans")
    try:
        convert_ids(doc, _hex_to_b64)
    except BadRequest:
        raise
    except (AttributeError, TypeError, ValueError) as exc:
        raise BadRequest(f"invalid OTLP/JSON: {exc}") from exc
    try:
        return json_format.ParseDict(doc, ExportTraceServiceRequest(), ignore_unknown_fields=True), []
    except _PARSE_ERRORS as exc:
        first: Exception = exc
    _widen_ints(doc)
    try:
        return json_format.ParseDict(doc, ExportTraceServiceRequest(), ignore_unknown_fields=True), []
    except _PARSE_ERRORS:
        return _parse_spans(doc, first)


def parse_json_request(body: bytes) -> ExportTraceServiceRequest:
    """OTLP/JSON (hex ids, enums as ints or names, int64 as strings) into the protobuf request; a span
    that does not parse is a `BadRequest` naming it (files are taken whole or not at all)."""
    return parse_json_document(load_json(body))


def parse_json_document(doc: Any) -> ExportTraceServiceRequest:
    """`parse_json_request` of a document `load_json` read (it is changed in place)."""
    request, dropped = _parse_document(doc)
    if dropped:
        (where, why), more = dropped[0], len(dropped) - 1
        raise BadRequest(f"invalid OTLP/JSON: {where}: {why}" + (f" (and {more} more)" if more else ""))
    return request


def decode_json(body: bytes, tenant: str = DEFAULT_TENANT) -> Decoded:
    """OTLP/JSON into a batch; spans that do not parse are dropped and counted like invalid ones."""
    request, dropped = _parse_document(load_json(body))
    return accept_request(request, tenant).reject(Counter(why for _, why in dropped))
