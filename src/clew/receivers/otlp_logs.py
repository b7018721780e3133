"""Parse and validate OTLP log requests (protobuf or OTLP/JSON) into an `OtlpBatch` of the LOGS signal.

Logs take the spans' way in: upb parses the request, one loop checks every record, and the request
goes to the log and the store in wire form (the engine flattens it, components/logs/wire.py). What
a record needs: ids of the right length or none (all-zero ids mean none), times before 2262. A record
without any time gets the time it was received as its observed time, as the Collector does.

A structured body (a key-value list, an array, bytes) is rewritten here as text, JSON or base64, so
that redaction's detectors read it like any string; the kind it had travels in the top byte of
`flags` (reserved in OTLP, cleared here) and becomes the stored `body_type`, so an API answers the
structure again.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from clew.core.attributes import plain_value
from clew.core.errors import BadRequest
from clew.core.json_body import load_json
from clew.core.model import DEFAULT_TENANT, LOGS, OtlpBatch
from clew.receivers.otlp import _PARSE_ERRORS, Decoded, _hex_to_b64, _shell, _short, _widen_ints, keep_valid

_MAX_NS = (1 << 63) - 1
# AnyValue field numbers (the stored body_type, as attribute lists store value types)
ARRAY, KVLIST, BYTES = 5, 6, 7
TYPE_SHIFT = 24  # the body's original type travels in flags' top byte (OTLP reserves bits 8-31)
_TRACE_FLAGS = 0xFF


# a JSON escape of a control character (`\n`, `\t`, `\u0007`), not preceded by an escaped backslash
_CONTROL_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\(n|t|r|b|f|u00[01][0-9a-fA-F])")
_CONTROLS = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}


def _raw_controls(text: str) -> str:
    """JSON with control characters raw inside its strings (readable with `strict=False`): escaped,
    `charged\n4111 ...` would put a letter before the card number, and the detectors, which look for
    secrets at word boundaries, would not see it."""

    def raw(m: re.Match[str]) -> str:
        code = m.group(2)
        return m.group(1) + (_CONTROLS[code] if len(code) == 1 else chr(int(code[1:], 16)))

    return _CONTROL_ESCAPE.sub(raw, text)


def invalid_reason(record: LogRecord) -> str | None:
    """Why a log record cannot be stored, or None."""
    if len(record.trace_id) not in (0, 16):
        return f"trace_id must be empty or 16 bytes, got {len(record.trace_id)}"
    if len(record.span_id) not in (0, 8):
        return f"span_id must be empty or 8 bytes, got {len(record.span_id)}"
    if record.time_unix_nano > _MAX_NS or record.observed_time_unix_nano > _MAX_NS:
        return "time is past the year 2262"
    return None


def _normalise(record: LogRecord, now: int) -> None:
    """Ids of zeros as none, a received time where the sender gave none, a structured body as text."""
    if record.trace_id == bytes(16):
        record.trace_id = b""
    if record.span_id == bytes(8):
        record.span_id = b""
    if not record.time_unix_nano and not record.observed_time_unix_nano:
        record.observed_time_unix_nano = now
    flags = record.flags & _TRACE_FLAGS
    which = record.body.WhichOneof("value")
    if which in ("kvlist_value", "array_value", "bytes_value"):
        kind = {"kvlist_value": KVLIST, "array_value": ARRAY, "bytes_value": BYTES}[which]
        plain = plain_value(record.body)
        text = (
            plain
            if kind == BYTES
            else _raw_controls(json.dumps(plain, ensure_ascii=False, separators=(",", ":")))
        )
        record.body.string_value = text
        flags |= kind << TYPE_SHIFT
    record.flags = flags


def accept_logs(req: ExportLogsServiceRequest, tenant: str = DEFAULT_TENANT) -> Decoded:
    """Drop invalid records (counting why), normalise the rest and serialize them for the store."""
    reasons: Counter[str] = Counter()
    records = 0
    now = time.time_ns()
    for rl in req.resource_logs:
        for sl in rl.scope_logs:
            records += keep_valid(sl.log_records, invalid_reason, reasons)
            for record in sl.log_records:
                _normalise(record, now)
    rejected = sum(reasons.values())
    if records == 0:
        return Decoded(OtlpBatch(tenant, (), 0, LOGS), rejected, reasons, "log record")
    req.DiscardUnknownFields()
    return Decoded(
        OtlpBatch(tenant, (req.SerializeToString(),), records, LOGS), rejected, reasons, "log record"
    )


def decode_logs_protobuf(body: bytes, tenant: str = DEFAULT_TENANT) -> Decoded:
    req = ExportLogsServiceRequest()
    try:
        req.ParseFromString(body)
    except DecodeError as exc:
        raise BadRequest(f"cannot decode ExportLogsServiceRequest protobuf: {exc}") from exc
    return accept_logs(req, tenant)


def _convert_ids(doc: dict[str, Any]) -> None:
    """OTLP/JSON's hex ids as the base64 the protobuf JSON mapping reads, in place."""
    for ri, rl in enumerate(doc.get("resourceLogs") or []):
        for si, sl in enumerate((rl or {}).get("scopeLogs") or [] if isinstance(rl, dict) else []):
            records = sl.get("logRecords") if isinstance(sl, dict) else None
            for li, record in enumerate(records if isinstance(records, list) else []):
                if not isinstance(record, dict):
                    continue
                for key in ("traceId", "spanId"):
                    if key in record:
                        path = f"resourceLogs[{ri}].scopeLogs[{si}].logRecords[{li}].{key}"
                        record[key] = _hex_to_b64(record[key], path)


def _parse_records(doc: dict[str, Any], first: Exception) -> tuple[ExportLogsServiceRequest, Counter[str]]:
    """Record by record: the request without the records that do not parse, and why those did not."""
    request = ExportLogsServiceRequest()
    dropped: Counter[str] = Counter()
    resource_logs = doc.get("resourceLogs", doc.get("resource_logs"))
    if not isinstance(resource_logs, list):
        raise BadRequest(f"invalid OTLP/JSON: {_short(first)}")
    for i, rl in enumerate(resource_logs):
        out = request.resource_logs.add()
        for j, sl in enumerate(_shell(rl, ("scopeLogs", "scope_logs"), out, f"resourceLogs[{i}]")):
            scope = out.scope_logs.add()
            where = f"resourceLogs[{i}].scopeLogs[{j}]"
            for record in _shell(sl, ("logRecords", "log_records"), scope, where):
                try:
                    scope.log_records.append(
                        json_format.ParseDict(record, LogRecord(), ignore_unknown_fields=True)
                    )
                except _PARSE_ERRORS as exc:
                    dropped[f"invalid log record: {_short(exc)}"] += 1
    return request, dropped


def decode_logs_json(body: bytes, tenant: str = DEFAULT_TENANT) -> Decoded:
    """OTLP/JSON logs into a batch; records that do not parse are dropped and counted."""
    doc = load_json(body)
    if not isinstance(doc, dict):
        raise BadRequest("invalid OTLP/JSON: the body must be a JSON object with resourceLogs")
    try:
        _convert_ids(doc)
    except BadRequest:
        raise
    except (AttributeError, TypeError, ValueError) as exc:
        raise BadRequest(f"invalid OTLP/JSON: {exc}") from exc
    try:
        request = json_format.ParseDict(doc, ExportLogsServiceRequest(), ignore_unknown_fields=True)
        return accept_logs(request, tenant)
    except _PARSE_ERRORS as exc:
        first: Exception = exc
    _widen_ints(doc)
    try:
        request = json_format.ParseDict(doc, ExportLogsServiceRequest(), ignore_unknown_fields=True)
        return accept_logs(request, tenant)
    except _PARSE_ERRORS:
        request, dropped = _parse_records(doc, first)
    return accept_logs(request, tenant).reject(dropped)
