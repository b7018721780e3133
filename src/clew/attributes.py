"""Conversions between OTLP `KeyValue`/`AnyValue` messages and the stored attribute encodings.

Scalars live in typed map columns. Arrays, key-value lists and bytes live in the `*_complex` map as a
tag letter ('a', 'k', 'b') and the serialized message, which is what the engine reads off the wire.
Attribute lists of scopes, events and links are arrays of serialized `KeyValue` messages.
"""

from __future__ import annotations

from collections.abc import Iterable

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


def keyvalues_from_bytes(serialized: Iterable[bytes]) -> list[KeyValue]:
    return [KeyValue.FromString(raw) for raw in serialized]


def typed_maps_to_keyvalues(
    strings: Iterable[tuple[str, str]],
    ints: Iterable[tuple[str, int]],
    floats: Iterable[tuple[str, float]],
    bools: Iterable[tuple[str, bool]],
    complex_: Iterable[tuple[str, bytes]],
) -> list[KeyValue]:
    """Rebuild OTLP attributes from the five typed maps of one row."""
    out = [KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in strings]
    out += [KeyValue(key=k, value=AnyValue(int_value=v)) for k, v in ints]
    out += [KeyValue(key=k, value=AnyValue(double_value=v)) for k, v in floats]
    out += [KeyValue(key=k, value=AnyValue(bool_value=v)) for k, v in bools]
    for k, v in complex_:
        value = complex_to_anyvalue(v)
        out.append(KeyValue(key=k) if value is None else KeyValue(key=k, value=value))
    return out
