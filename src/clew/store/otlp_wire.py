"""OTLP requests parsed by ClickHouse itself: the schema it reads them with and the SQL that flattens them.

`ExportTraceServiceRequest` bodies go to the engine as they came off the wire (length-delimited, many
requests per insert) and ClickHouse's `Protobuf` input format turns them into columns in C++. Python
only parses and validates, which costs a few microseconds a span instead of tens.

`WIRE_PROTO` is a wire-compatible subset of OTLP's messages (field numbers and wire types are checked
against opentelemetry-proto's descriptors in the tests). ClickHouse cannot follow the recursive
`AnyValue` inside arrays and key-value lists, so those are declared `bytes` and kept serialized.
"""

from __future__ import annotations

from collections.abc import Sequence

from clew.core.model import COLUMNS, Payload
from clew.store.connection import joined
from clew.store.transforms import Transforms

# the messages every signal's request shares (resource, scope, attributes)
COMMON_PROTO = """message Resource { repeated KeyValue attributes = 1; uint32 dropped_attributes_count = 2; }
message Scope {
  string name = 1; string version = 2; repeated KeyValue attributes = 3; uint32 dropped_attributes_count = 4;
}
message KeyValue { string key = 1; AnyValue value = 2; }
message AnyValue {
  oneof value {
    string string_value = 1; bool bool_value = 2; int64 int_value = 3; double double_value = 4;
    bytes array_value = 5; bytes kvlist_value = 6; bytes bytes_value = 7;
  }
}
"""
WIRE_PROTO = (
    """syntax = "proto3";
message Request { repeated ResourceSpans resource_spans = 1; }
message ResourceSpans { Resource resource = 1; repeated ScopeSpans scope_spans = 2; string schema_url = 3; }
message ScopeSpans { Scope scope = 1; repeated Span spans = 2; string schema_url = 3; }
message Span {
  bytes trace_id = 1; bytes span_id = 2; string trace_state = 3; bytes parent_span_id = 4; fixed32 flags = 16;
  string name = 5; int32 kind = 6; fixed64 start_time_unix_nano = 7; fixed64 end_time_unix_nano = 8;
  repeated KeyValue attributes = 9; uint32 dropped_attributes_count = 10;
  repeated Event events = 11; uint32 dropped_events_count = 12;
  repeated Link links = 13; uint32 dropped_links_count = 14; Status status = 15;
}
message Event {
  fixed64 time_unix_nano = 1; string name = 2; repeated KeyValue attributes = 3; uint32 dropped_attributes_count = 4;
}
message Link {
  bytes trace_id = 1; bytes span_id = 2; string trace_state = 3; repeated KeyValue attributes = 4;
  uint32 dropped_attributes_count = 5; fixed32 flags = 6;
}
message Status { string message = 2; int32 code = 3; }
"""
    + COMMON_PROTO
)
WIRE_MESSAGE = "Request"

# The oneof presence column: which AnyValue field was set (0: none).
_VALUE = (
    "value Enum8('none' = 0, 'string_value' = 1, 'bool_value' = 2, 'int_value' = 3, 'double_value' = 4, "
    "'array_value' = 5, 'kvlist_value' = 6, 'bytes_value' = 7)"
)
KV = (
    f"Array(Tuple(key String, value Tuple({_VALUE}, string_value String, bool_value Bool, int_value Int64, "
    "double_value Float64, array_value String, kvlist_value String, bytes_value String)))"
)
STRUCTURE = (
    f"resource_spans Array(Tuple(resource Tuple(attributes {KV}, dropped_attributes_count UInt32), "
    f"scope_spans Array(Tuple(scope Tuple(name String, version String, attributes {KV}, "
    "dropped_attributes_count UInt32), spans Array(Tuple(trace_id String, span_id String, trace_state String, "
    f"parent_span_id String, flags UInt32, name String, kind Int32, start_time_unix_nano UInt64, "
    f"end_time_unix_nano UInt64, attributes {KV}, dropped_attributes_count UInt32, "
    f"events Array(Tuple(time_unix_nano UInt64, name String, attributes {KV}, "
    "dropped_attributes_count UInt32)), dropped_events_count UInt32, "
    f"links Array(Tuple(trace_id String, span_id String, trace_state String, attributes {KV}, "
    "dropped_attributes_count UInt32, flags UInt32)), dropped_links_count UInt32, "
    "status Tuple(message String, code Int32))), schema_url String)), schema_url String))"
)

# Complex attribute values are stored as a one-letter tag and the serialized message.
COMPLEX_TAGS = {"array_value": "a", "kvlist_value": "k", "bytes_value": "b"}


def typed_maps(attrs: str) -> dict[str, str]:
    """Typed maps from an attribute array, filtering its subcolumns (never copying whole tuples)."""
    kinds = f"{attrs}.value.value"

    def pick(column: str, condition: str) -> str:
        return f"arrayFilter((x, t) -> {condition}, {column}, {kinds})"

    def typed(kind: str) -> str:
        chosen = f"t = '{kind}'"
        return f"mapFromArrays({pick(f'{attrs}.key', chosen)}, {pick(f'{attrs}.value.{kind}', chosen)})"

    other = "t NOT IN ('string_value', 'int_value', 'double_value', 'bool_value')"
    tagged = (
        "arrayMap((t, a, k, b) -> multiIf("
        + ", ".join(f"t = '{kind}', concat('{tag}', {tag})" for kind, tag in COMPLEX_TAGS.items())
        + f", ''), {kinds}, {attrs}.value.array_value, {attrs}.value.kvlist_value, {attrs}.value.bytes_value)"
    )
    return {
        "string": typed("string_value"),
        "int": typed("int_value"),
        "float": typed("double_value"),
        "bool": typed("bool_value"),
        "complex": f"mapFromArrays({pick(f'{attrs}.key', other)}, {pick(tagged, other)})",
    }


def attribute_list(attrs: str) -> str:
    """(key, type, text) tuples: the type is the AnyValue field number, the text its value as text
    (integers and doubles as ClickHouse prints them, which round-trips) or its serialized message."""
    text = (
        "multiIf(a.value.value = 'string_value', a.value.string_value, "
        "a.value.value = 'int_value', toString(a.value.int_value), "
        "a.value.value = 'double_value', toString(a.value.double_value), "
        "a.value.value = 'bool_value', if(a.value.bool_value, 'true', 'false'), "
        "a.value.value = 'array_value', a.value.array_value, "
        "a.value.value = 'kvlist_value', a.value.kvlist_value, "
        "a.value.value = 'bytes_value', a.value.bytes_value, '')"
    )
    return f"arrayMap(a -> (a.key, toUInt8(CAST(a.value.value, 'Int8')), {text}), {attrs})"


def nanos(expr: str) -> str:
    return f"fromUnixTimestamp64Nano(toInt64({expr}), 'UTC')"


def service_name(res: str) -> str:
    """The resource's `service.name`, or OpenTelemetry's `unknown_service`."""
    service = "a -> a.key = 'service.name' AND a.value.value = 'string_value'"
    return f"if(arrayExists({service}, {res}), arrayFirst({service}, {res}).value.string_value, 'unknown_service')"


def _select_expressions() -> dict[str, str]:
    res = "rs.resource.attributes"
    exprs = {
        "tenant": "{tenant:String}",
        "trace_id": "sp.trace_id",
        "span_id": "sp.span_id",
        "parent_span_id": "if(sp.parent_span_id = unhex('0000000000000000'), '', sp.parent_span_id)",
        "trace_state": "sp.trace_state",
        "flags": "sp.flags",
        "name": "sp.name",
        # open enums: a value outside the defined ones is stored as unspecified / unset, as the logs'
        # severity is, rather than wrapped into the column's byte (257 would read as INTERNAL, and a
        # status of 258 as ERROR)
        "kind": "if(sp.kind BETWEEN 0 AND 5, sp.kind, 0)",
        "start_time": nanos("sp.start_time_unix_nano"),
        "duration": "sp.end_time_unix_nano - sp.start_time_unix_nano",
        "status_code": "if(sp.status.code BETWEEN 0 AND 2, sp.status.code, 0)",
        "status_message": "sp.status.message",
        "service_name": service_name(res),
        "resource_dropped": "rs.resource.dropped_attributes_count",
        "resource_schema_url": "rs.schema_url",
        "scope_name": "ss.scope.name",
        "scope_version": "ss.scope.version",
        "scope_attributes": attribute_list("ss.scope.attributes"),
        "scope_dropped": "ss.scope.dropped_attributes_count",
        "scope_schema_url": "ss.schema_url",
        "dropped_attributes": "sp.dropped_attributes_count",
        "dropped_events": "sp.dropped_events_count",
        "dropped_links": "sp.dropped_links_count",
        "events_time": f"arrayMap(e -> {nanos('e.time_unix_nano')}, sp.events)",
        "events_name": "arrayMap(e -> e.name, sp.events)",
        "events_attributes": f"arrayMap(e -> {attribute_list('e.attributes')}, sp.events)",
        "events_dropped": "arrayMap(e -> e.dropped_attributes_count, sp.events)",
        "links_trace_id": "arrayMap(l -> l.trace_id, sp.links)",
        "links_span_id": "arrayMap(l -> l.span_id, sp.links)",
        "links_trace_state": "arrayMap(l -> l.trace_state, sp.links)",
        "links_attributes": f"arrayMap(l -> {attribute_list('l.attributes')}, sp.links)",
        "links_dropped": "arrayMap(l -> l.dropped_attributes_count, sp.links)",
        "links_flags": "arrayMap(l -> l.flags, sp.links)",
    }
    for kind, expr in typed_maps(res).items():
        exprs[f"resource_{kind}"] = expr
    for kind, expr in typed_maps("sp.attributes").items():
        exprs[f"attributes_{kind}"] = expr
    exprs["resource_order"] = attribute_order(res)
    exprs["attributes_order"] = attribute_order("sp.attributes")
    return exprs


def attribute_order(attrs: str) -> str:
    """The types' interleaving as sent (`sisb`), when it differs from the typed maps' grouping."""
    letters = (
        f"arrayMap(t -> multiIf(t = 'string_value', 's', t = 'int_value', 'i', t = 'double_value', 'd', "
        f"t = 'bool_value', 'b', 'c'), {attrs}.value.value)"
    )
    grouped = f"arraySort(x -> indexOf(['s', 'i', 'd', 'b', 'c'], x), {letters})"
    return f"if({letters} = {grouped}, '', arrayStringConcat({letters}))"


def insert_select(
    table: str, transforms: Transforms | None = None, constants: dict[str, str] | None = None
) -> str:
    """`INSERT ... SELECT` of spans over `{source}`: a table function reading length-delimited
    requests. `transforms` are the components' processors (store/transforms.py), applied by an outer
    SELECT so that nothing unprocessed is ever written. `constants` (column -> SQL) are the same for
    every row of the insert, such as the time it was received."""
    source = (
        "FROM {source}\n"
        "ARRAY JOIN resource_spans AS rs ARRAY JOIN rs.scope_spans AS ss ARRAY JOIN ss.spans AS sp"
    )
    return compose_insert(
        table, [name for name, _, _ in COLUMNS], _select_expressions(), source, transforms, constants
    )


def compose_insert(
    table: str,
    names: list[str],
    exprs: dict[str, str],
    source: str,
    transforms: Transforms | None = None,
    constants: dict[str, str] | None = None,
) -> str:
    """The insert of one signal: `exprs` (column -> SQL over `source`'s rows) for the columns
    `names`, with the processors' `transforms` in an outer SELECT."""
    missing = [name for name in names if name not in exprs]
    if missing:  # pragma: no cover - a model change without its SQL
        raise RuntimeError(f"no insert expression for columns {missing}")
    transforms = transforms or Transforms({})
    # columns a stage fills that the parse does not produce (the retention tier) are set per insert
    constants = {**(constants or {}), **{k: v for k, v in transforms.columns.items() if k not in exprs}}
    columns = ", ".join([*names, *constants])
    if not any(name in transforms.columns for name in names):
        select = ",\n  ".join([*(exprs[name] for name in names), *constants.values()])
        return f"INSERT INTO {table} ({columns})\nSELECT\n  {select}\n{source}"
    bound = transforms.resolve({name: f"c_{name}" for name in names})
    inner = ",\n  ".join(f"{exprs[name]} AS c_{name}" for name in names)
    outer = ",\n  ".join([*(bound.columns.get(name, f"c_{name}") for name in names), *constants.values()])
    aliases = ",\n  ".join(f"{expr} AS {alias}" for alias, expr in bound.aliases.items())
    with_ = f"WITH {aliases}\n" if aliases else ""
    return f"INSERT INTO {table} ({columns})\n{with_}SELECT\n  {outer}\nFROM (SELECT\n  {inner}\n{source})"


def framed(bodies: Sequence[Payload]) -> list[Payload]:
    """Requests framed for ClickHouse's `Protobuf` format, as pieces to write in order: a varint
    length before each message (the messages themselves are not copied)."""
    pieces: list[Payload] = []
    for body in bodies:
        n, prefix = len(body), bytearray()
        while n > 0x7F:
            prefix.append((n & 0x7F) | 0x80)
            n >>= 7
        prefix.append(n)
        pieces += (bytes(prefix), body)
    return pieces


def length_delimited(bodies: Sequence[bytes | memoryview]) -> bytes:
    """`framed` joined."""
    return joined(framed(bodies))
