"""Reading logs: a trace's logs, and a search over all of them, with its small query syntax.

`q` is a list of terms, all of which a record must match:

- a word or a "quoted phrase": the body contains it (case-insensitive);
- `service:checkout` (`service.name`), `trace:<hex>` (`trace_id`, `traceId`), `span:<hex>`;
- `severity:error` (`level:`): that level (ERROR is severity numbers 17-20); `severity>=warn`, `>`,
  `<`, `<=` compare levels or severity numbers (1-24);
- `key=value`, `key!=value`, `key>n`, `key<=n`...: an attribute of the record or of its resource.

A `key:value` whose key is none of the above is a word (so `http://host` searches the body). Every
value reaches the engine as a query parameter.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from clew.core.attributes import plain_attributes, row_keyvalues
from clew.core.errors import BadRequest
from clew.core.model import parse_trace_id

MAX_QUERY_CHARS = 2000
MAX_TERMS = 32
MAX_LIMIT = 1000
MAX_TRACE_LOGS = 10_000  # the logs one trace answers with; `truncated` says when there were more

SEVERITIES = {"trace": 1, "debug": 5, "info": 9, "warn": 13, "warning": 13, "error": 17, "fatal": 21}
SEVERITY_NAMES = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"]
BODY_TYPES = {0: "empty", 1: "string", 2: "bool", 3: "int", 4: "double", 5: "array", 6: "kvlist", 7: "bytes"}

_TERM = re.compile(
    r'\s*(?:(?P<key>[A-Za-z_@][\w.\-/@]*)(?P<op>>=|<=|!=|=|:|>|<)(?P<value>"(?:[^"\\]|\\.)*"|[^\s"]+)'
    r'|(?P<word>"(?:[^"\\]|\\.)*"|\S+))'
)
_SERVICE = ("service", "service.name", "service_name")
_TRACE = ("trace", "trace_id", "traceid")
_SPAN = ("span", "span_id", "spanid")
_SEVERITY = ("severity", "level", "severity_text", "severitytext")
_COMPARE = {">": ">", "<": "<", ">=": ">=", "<=": "<="}


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    return text


@dataclass
class LogQuery:
    """Conditions over the logs table, with their parameters."""

    conditions: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    def param(self, value: Any, kind: str) -> str:
        name = f"q{len(self.params)}"
        self.params[name] = value
        return f"{{{name}:{kind}}}"


def _severity(value: str) -> int:
    if value.isascii() and value.isdigit() and 1 <= int(value) <= 24:
        return int(value)
    number = SEVERITIES.get(value.lower())
    if number is None:
        raise BadRequest(
            f"severity must be one of {', '.join(SEVERITIES)} or a number from 1 to 24, got {value[:40]!r}"
        )
    return number


def _attribute(q: LogQuery, key: str, op: str, value: str) -> str:
    """An attribute of the record or of its resource compared with `value` (as text for = and !=,
    as a number for the others)."""
    k = q.param(key, "String")
    if op in ("=", "!="):
        v = q.param(value, "String")
        sides = []
        for prefix in ("attributes", "resource"):
            sides += [
                f"(mapContains({prefix}_string, {k}) AND {prefix}_string[{k}] = {v})",
                f"(mapContains({prefix}_int, {k}) AND toString({prefix}_int[{k}]) = {v})",
                f"(mapContains({prefix}_float, {k}) AND toString({prefix}_float[{k}]) = {v})",
                f"(mapContains({prefix}_bool, {k}) AND if({prefix}_bool[{k}], 'true', 'false') = {v})",
            ]
        found = "(" + " OR ".join(sides) + ")"
        return found if op == "=" else f"NOT {found}"
    try:
        number = float(value)
    except ValueError:
        raise BadRequest(f"{key}{op}{value[:40]}: {op} compares numbers") from None
    n = q.param(number, "Float64")
    sides = [
        f"(mapContains({prefix}_{kind}, {k}) AND {prefix}_{kind}[{k}] {_COMPARE[op]} {n})"
        for prefix in ("attributes", "resource")
        for kind in ("int", "float")
    ]
    return "(" + " OR ".join(sides) + ")"


def parse_query(text: str) -> LogQuery:
    """`q` as conditions; a `BadRequest` naming the term that cannot be read."""
    if len(text) > MAX_QUERY_CHARS:
        raise BadRequest(f"q is {len(text)} characters, over the limit of {MAX_QUERY_CHARS}")
    q = LogQuery()
    terms = 0
    for match in _TERM.finditer(text):
        if not match.group(0).strip():
            continue
        terms += 1
        if terms > MAX_TERMS:
            raise BadRequest(f"q has more than {MAX_TERMS} terms")
        key, op, raw = match.group("key"), match.group("op"), match.group("value")
        word = match.group("word")
        if key is not None:
            lowered, value = key.lower(), _unquote(raw)
            if lowered in _SERVICE and op in (":", "=", "!="):
                cmp = "!=" if op == "!=" else "="
                q.conditions.append(f"service_name {cmp} {q.param(value, 'String')}")
                continue
            if lowered in _TRACE and op in (":", "="):
                trace = parse_trace_id(value)
                if trace is None or not any(trace):
                    raise BadRequest(f"{key}: not a trace id: {value[:40]!r}")
                q.conditions.append(f"trace_id = unhex({q.param(trace.hex(), 'String')})")
                continue
            if lowered in _SPAN and op in (":", "="):
                if not re.fullmatch(r"[0-9a-fA-F]{16}", value) or not int(value, 16):
                    raise BadRequest(f"{key}: a span id is 16 hex digits, got {value[:40]!r}")
                q.conditions.append(f"span_id = unhex({q.param(value, 'String')})")
                continue
            if lowered in _SEVERITY:
                number = _severity(value)
                if op in (":", "="):
                    low = q.param(number, "UInt8")
                    q.conditions.append(f"severity_number BETWEEN {low} AND {low} + 3")
                elif op == "!=":
                    low = q.param(number, "UInt8")
                    q.conditions.append(f"severity_number NOT BETWEEN {low} AND {low} + 3")
                else:
                    q.conditions.append(f"severity_number {_COMPARE[op]} {q.param(number, 'UInt8')}")
                continue
            if lowered == "body" and op == ":":
                word = raw
            elif op != ":":
                q.conditions.append(_attribute(q, key, op, value))
                continue
            else:
                word = match.group(0).strip()
        text_value = _unquote(word or "")
        if text_value:
            q.conditions.append(f"positionCaseInsensitiveUTF8(body, {q.param(text_value, 'String')}) > 0")
    return q


LOG_COLUMNS = (
    "toString(toUnixTimestamp64Nano(timestamp)) AS time_ns, "
    "toString(toUnixTimestamp64Nano(observed_timestamp)) AS observed_ns, "
    "if(trace_id = unhex('00000000000000000000000000000000'), '', lower(hex(trace_id))) AS trace_hex, "
    "if(span_id = unhex('0000000000000000'), '', lower(hex(span_id))) AS span_hex, "
    "flags, severity_number, severity_text, service_name, event_name, body, body_type, "
    "resource_string, resource_int, resource_float, resource_bool, resource_complex, "
    "scope_name, scope_version, "
    "attributes_string, attributes_int, attributes_float, attributes_bool, attributes_complex, "
    "dropped_attributes"
)


def _body(text: str, kind: int) -> Any:
    """The body as sent: structured bodies were stored as JSON (receivers/otlp_logs.py); one that
    redaction changed past parsing stays text."""
    if kind in (5, 6):
        try:  # control characters stay raw in the stored JSON (receivers/otlp_logs.py)
            return json.loads(text, strict=False)
        except ValueError:
            return text
    if kind == 3:
        return int(text) if re.fullmatch(r"-?\d+", text) else text
    if kind == 4:
        try:
            number = float(text)
        except ValueError:
            return text
        return number if math.isfinite(number) else text  # JSON holds no NaN or infinity
    if kind == 2:
        return text == "true"
    return text


def severity_name(number: int, text: str) -> str:
    """The severity as sent, or the name of its level when the sender gave only a number."""
    if text:
        return text
    return SEVERITY_NAMES[(number - 1) // 4] if 1 <= number <= 24 else ""


# complex attribute values are serialized messages, not text (the engine answers them as strings)
_BINARY_MAP = pa.map_(pa.string(), pa.binary())


def to_json(table: pa.Table) -> list[dict[str, Any]]:
    """Rows of `LOG_COLUMNS` as clew's log JSON."""
    for name in ("attributes_complex", "resource_complex"):
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, table.column(name).cast(_BINARY_MAP))
    out = []
    for row in table.to_pylist():
        out.append(
            {
                "timeUnixNano": row["time_ns"],
                "observedTimeUnixNano": row["observed_ns"],
                "traceId": row["trace_hex"],
                "spanId": row["span_hex"],
                "flags": row["flags"],
                "severityNumber": row["severity_number"],
                "severityText": severity_name(row["severity_number"], row["severity_text"]),
                "service": row["service_name"],
                "eventName": row["event_name"],
                "body": _body(row["body"], row["body_type"]),
                "bodyType": BODY_TYPES.get(row["body_type"], "string"),
                "attributes": plain_attributes(row_keyvalues(row, "attributes")),
                "resource": plain_attributes(row_keyvalues(row, "resource")),
                "scope": {"name": row["scope_name"], "version": row["scope_version"]},
                "droppedAttributesCount": row["dropped_attributes"],
            }
        )
    return out
