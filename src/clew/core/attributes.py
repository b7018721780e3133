"""Conversions between OTLP `KeyValue`/`AnyValue` messages and the stored attribute encodings.

Scalars live in typed map columns. Arrays, key-value lists and bytes live in the `*_complex` map as a
tag letter ('a', 'k', 'b') and the serialized message, which is what the engine reads off the wire.
Attribute lists of scopes, events and links are (key, type, text) tuples, where the type is the
AnyValue field number and the text is the value as text (or the serialized message, for the complex).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList


def complex_to_anyvalue(tagged: bytes) -> AnyValue | None:
    """The AnyValue of a `*_complex` map entry; None for an attribute sent without a value."""
    if not tagged:
        return None
    tag, raw = tagged[:1], tagged[1:]
    if tag == b"a":
        return AnyValue(array_value=ArrayValue.FromString(raw))
    if tag == b"k":
        return AnyValue(kvlist_value=KeyValueList.FromString(raw))
    return AnyValue(bytes_value=raw)


def _from_text(kind: int, text: bytes) -> AnyValue | None:
    if kind == 1:
        return AnyValue(string_value=text.decode())
    if kind == 2:
        return AnyValue(bool_value=text == b"true")
    if kind == 3:
        return AnyValue(int_value=int(text))
    if kind == 4:
        return AnyValue(double_value=float(text))
    if kind == 5:
        return AnyValue(array_value=ArrayValue.FromString(text))
    if kind == 6:
        return AnyValue(kvlist_value=KeyValueList.FromString(text))
    if kind == 7:
        return AnyValue(bytes_value=text)
    return None


def attribute_list_to_keyvalues(items: Iterable[dict[str, Any]]) -> list[KeyValue]:
    """Rebuild OTLP attributes from stored (key, type, value) tuples."""
    out = []
    for item in items:
        value = _from_text(item["type"], item["value"])
        out.append(KeyValue(key=item["key"]) if value is None else KeyValue(key=item["key"], value=value))
    return out


def typed_maps_to_keyvalues(
    strings: Iterable[tuple[str, str]],
    ints: Iterable[tuple[str, int]],
    floats: Iterable[tuple[str, float]],
    bools: Iterable[tuple[str, bool]],
    complex_: Iterable[tuple[str, bytes]],
    order: str | None = None,
) -> list[KeyValue]:
    """Rebuild OTLP attributes from the five typed maps of one row, in the order they were sent:
    `order` says how the types were interleaved (`sisb`); what it does not cover (attributes added
    after, such as enrichment's) follows."""
    typed = {
        "s": [KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in strings],
        "i": [KeyValue(key=k, value=AnyValue(int_value=v)) for k, v in ints],
        "d": [KeyValue(key=k, value=AnyValue(double_value=v)) for k, v in floats],
        "b": [KeyValue(key=k, value=AnyValue(bool_value=v)) for k, v in bools],
        "c": [],
    }
    for k, v in complex_:
        value = complex_to_anyvalue(v)
        typed["c"].append(KeyValue(key=k) if value is None else KeyValue(key=k, value=value))
    queues = {letter: iter(kvs) for letter, kvs in typed.items()}
    out = [
        kv for letter in order or "" if letter in queues and (kv := next(queues[letter], None)) is not None
    ]
    for letter in "sidbc":
        out.extend(queues[letter])
    return out


def row_keyvalues(row: dict[str, Any], prefix: str) -> list[KeyValue]:
    """The attributes of a stored row's `prefix` set (`attributes`, `resource`), in sent order."""
    return typed_maps_to_keyvalues(
        row[f"{prefix}_string"],
        row[f"{prefix}_int"],
        row[f"{prefix}_float"],
        row[f"{prefix}_bool"],
        row[f"{prefix}_complex"],
        row.get(f"{prefix}_order"),
    )


def plain_value(value: AnyValue) -> Any:
    """An AnyValue as plain JSON data: maps, lists, numbers, text; bytes as base64 (upb bounds the
    nesting while parsing); NaN and infinities as their text, which JSON cannot hold otherwise."""
    which = value.WhichOneof("value")
    if which == "kvlist_value":
        return {kv.key: plain_value(kv.value) for kv in value.kvlist_value.values}
    if which == "array_value":
        return [plain_value(v) for v in value.array_value.values]
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    if which == "double_value":
        number = value.double_value
        return number if math.isfinite(number) else str(number)
    if which is None:
        return None
    return getattr(value, which)


def plain_attributes(keyvalues: Iterable[KeyValue]) -> dict[str, Any]:
    """Attributes as a JSON object (a key sent twice keeps its last value)."""
    return {kv.key: plain_value(kv.value) for kv in keyvalues}
