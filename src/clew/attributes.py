"""Conversions between OTLP `KeyValue`/`AnyValue` messages and the stored attribute encodings.

Scalars live in typed map columns; arrays, key-value lists and bytes are kept as the OTLP/JSON
encoding of their `AnyValue`, which keeps every nested type and is readable from plain SQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from google.protobuf import json_format
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue, KeyValueList


def anyvalue_json(value: AnyValue) -> str:
    return json.dumps(json_format.MessageToDict(value), separators=(",", ":"))


def anyvalue_from_json(text: str) -> AnyValue:
    return json_format.Parse(text, AnyValue())


def keyvalues_json(kvs: Iterable[KeyValue]) -> str:
    """A list of attributes as OTLP/JSON text; '' for none, to keep empty rows small."""
    values = list(kvs)
    if not values:
        return ""
    return json.dumps(
        json_format.MessageToDict(KeyValueList(values=values)).get("values", []), separators=(",", ":")
    )


def keyvalues_from_json(text: str) -> list[KeyValue]:
    if not text:
        return []
    return list(json_format.ParseDict({"values": json.loads(text)}, KeyValueList()).values)


def typed_maps_to_keyvalues(
    strings: Iterable[tuple[str, str]],
    ints: Iterable[tuple[str, int]],
    floats: Iterable[tuple[str, float]],
    bools: Iterable[tuple[str, bool]],
    complex_: Iterable[tuple[str, str]],
) -> list[KeyValue]:
    """Rebuild OTLP attributes from the five typed maps of one row."""
    out = [KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in strings]
    out += [KeyValue(key=k, value=AnyValue(int_value=v)) for k, v in ints]
    out += [KeyValue(key=k, value=AnyValue(double_value=v)) for k, v in floats]
    out += [KeyValue(key=k, value=AnyValue(bool_value=v)) for k, v in bools]
    # "{}" is an AnyValue with nothing set: the attribute was sent without a value
    out += [
        KeyValue(key=k, value=anyvalue_from_json(v)) if v != "{}" else KeyValue(key=k) for k, v in complex_
    ]
    return out


def python_to_anyvalue(value: object) -> AnyValue:
    """A plain Python value (from Zipkin or a test) as an OTLP AnyValue."""
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, Mapping):
        return AnyValue(
            kvlist_value=KeyValueList(
                values=[KeyValue(key=str(k), value=python_to_anyvalue(v)) for k, v in value.items()]
            )
        )
    if isinstance(value, list | tuple):
        av = AnyValue()
        av.array_value.values.extend(python_to_anyvalue(v) for v in value)
        return av
    return AnyValue(string_value=str(value))
