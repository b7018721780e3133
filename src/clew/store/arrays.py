"""SQL that reads the elements of a stored array attribute, so a query can compare each one.

Arrays are stored as `'a'` and the serialized `ArrayValue` (core/attributes.py): ClickHouse's
Protobuf input cannot follow the recursive `AnyValue`. Rather than keep a second, decoded copy of
every array on disk, a query that looks into arrays decodes them where it reads them: a fold over the
bytes splits the message into its `AnyValue` elements (field 1, length-delimited), and each element's
single field is read by its tag byte. Only rows holding an array under the compared key reach it.

The decoder is written once per statement, as lambdas its WITH clause names (one per element type,
`clewArrayStrings`..., see `with_functions`), and equality needs no decoding at all (the serialized
form of an equal element is looked for in the message): a query with many comparisons stays short.
"""

from __future__ import annotations

import re

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue

from clew.core.language import INT64_MAX, INT64_MIN

MAX_DECODED_BYTES = 65536


def _byte(s: str, position: str) -> str:
    """The byte at a 1-based position, as a number."""
    return f"reinterpretAsUInt8(substring({s}, {position}, 1))"


def _varint(s: str, position: str, var: str) -> str:
    """(value, size in bytes) of the base-128 varint starting at `position`; `var` names the fold's
    state so that folds nested in one another (and the query's own aliases) are not shadowed."""
    b = _byte(s, f"{position} + {var}k")
    return (
        f"arrayFold(({var}, {var}k) -> if({var}.3, {var}, (bitOr({var}.1, bitShiftLeft("
        f"toUInt64(bitAnd({b}, 127)), 7 * {var}k)), {var}k + 1, {b} < 128)), "
        "range(10), (toUInt64(0), toUInt64(0), false))"
    )


def _let(name: str, value: str, body: str) -> str:
    """`body` with `name` bound to `value`, which is written (and computed) once."""
    return f"arrayMap({name} -> {body}, [{value}])[1]"


def _decoder(raw: str) -> str:
    """The SQL of `elements`, over the expression `raw`."""
    start = "arr_acc.1 + 1 + arr_n.2"  # after the tag byte and the length's varint
    step = _let(
        "arr_n",
        _varint("arr_raw", "arr_acc.1 + 1", "arr_len"),
        f"({start} + arr_n.1, arrayPushBack(arr_acc.2, substring(arr_raw, {start}, arr_n.1)))",
    )
    walk = (
        f"arrayFold((arr_acc, arr_i) -> if(arr_i + 1 = arr_acc.1 AND {_byte('arr_raw', 'arr_acc.1')} = 10, "
        f"{step}, arr_acc), range(length(arr_raw)), (toUInt64(1), CAST([], 'Array(String)'))).2"
    )
    # the walk is a fold over bytes: what lies past MAX_DECODED_BYTES of one array is not looked into
    return _let("arr_raw", f"substring({raw}, 1, {MAX_DECODED_BYTES})", walk)


# Functions a statement may call, each the elements of one type of the `ArrayValue` given (as the
# lambda its WITH clause defines): the tag byte of AnyValue's field, how to read that field's value.
_TYPED = {
    "string": (0x0A, "substring(arr_el, 2 + tupleElement({varint}, 2))", "String"),
    "bool": (0x10, f"{_byte('arr_el', '2')} != 0", "Bool"),
    "int": (0x18, "reinterpretAsInt64(tupleElement({varint}, 1))", "Int64"),
    "float": (0x21, "reinterpretAsFloat64(substring(arr_el, 2, 8))", "Float64"),
}
NAMES = {kind: f"clewArray{kind.capitalize()}s" for kind in _TYPED}
DEFINITIONS = {
    NAMES[kind]: (
        f"(arr_in -> arrayMap(arr_el -> {read.format(varint=_varint('arr_el', '2', 'arr_value'))}, "
        f"arrayFilter(arr_el -> {_byte('arr_el', '1')} = {tag}, {_decoder('arr_in')})))"
    )
    for kind, (tag, read, _) in _TYPED.items()
}


def elements(kind: str, raw: str) -> str:
    """The elements of type `kind` (string, bool, int, float) of the `ArrayValue` in `raw`."""
    return f"{NAMES[kind]}({raw})"


_LEADING_WITH = re.compile(r"\s*WITH\s+", re.IGNORECASE)


def with_functions(sql: str) -> str:
    """`sql` with the definitions of the functions it calls in its leading WITH clause (which the
    engine extends to its subqueries). Every connection runs its statements through this."""
    used = [f"{body} AS {name}" for name, body in DEFINITIONS.items() if f"{name}(" in sql]
    if not used:
        return sql
    leading = _LEADING_WITH.match(sql)
    if leading:
        return f"WITH {', '.join(used)}, {sql[leading.end() :]}"
    return f"WITH {', '.join(used)} {sql}"


def equal_patterns(kind: str, value: object) -> list[bytes]:
    """How an element equal to `value` is serialized inside an `ArrayValue` (field 1, length
    delimited): an integer may have been sent as an int or as a double."""
    if kind == "string":
        candidates = [AnyValue(string_value=str(value))]
    elif kind == "bool":
        candidates = [AnyValue(bool_value=bool(value))]
    else:
        assert isinstance(value, int | float)
        candidates = [AnyValue(double_value=float(value))]
        if float(value).is_integer() and INT64_MIN <= int(value) <= INT64_MAX:
            candidates.append(AnyValue(int_value=int(value)))
    return [ArrayValue(values=[candidate]).SerializeToString() for candidate in candidates]
