"""SQL that reads the elements of a stored array attribute, so a query can compare each one.

Arrays are stored as `'a'` and the serialized `ArrayValue` (core/attributes.py): ClickHouse's
Protobuf input cannot follow the recursive `AnyValue`. Rather than keep a second, decoded copy of
every array on disk, a query that looks into arrays decodes them where it reads them: a fold over the
bytes splits the message into its `AnyValue` elements (field 1, length-delimited), and each element's
single field is read by its tag byte. Only rows holding an array under the compared key reach it.
"""

from __future__ import annotations

# the tag byte of each scalar field of AnyValue: (field number << 3) | wire type
STRING_TAG, BOOL_TAG, INT_TAG, DOUBLE_TAG = 0x0A, 0x10, 0x18, 0x21


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


def elements(raw: str) -> str:
    """The serialized `AnyValue` of each element of the `ArrayValue` in `raw` (Array(String))."""
    length = _varint(raw, "arr_acc.1 + 1", "arr_len")
    value_len, header = f"tupleElement({length}, 1)", f"tupleElement({length}, 2)"
    start = f"arr_acc.1 + 1 + {header}"
    step = f"({start} + {value_len}, arrayPushBack(arr_acc.2, substring({raw}, {start}, {value_len})))"
    return (
        f"arrayFold((arr_acc, arr_i) -> if(arr_i + 1 = arr_acc.1 AND {_byte(raw, 'arr_acc.1')} = 10, "
        f"{step}, arr_acc), "
        f"range(length({raw})), (toUInt64(1), CAST([], 'Array(String)'))).2"
    )


def tag(element: str) -> str:
    return _byte(element, "1")


def string_value(element: str) -> str:
    return f"substring({element}, 2 + tupleElement({_varint(element, '2', 'arr_value')}, 2))"


def int_value(element: str) -> str:
    return f"reinterpretAsInt64(tupleElement({_varint(element, '2', 'arr_value')}, 1))"


def double_value(element: str) -> str:
    return f"reinterpretAsFloat64(substring({element}, 2, 8))"


def bool_value(element: str) -> str:
    return f"{_byte(element, '2')} != 0"
