"""SQL pieces several store queries share: the time window, and the keys that join spans to parents."""

from __future__ import annotations

import re

# A span's key equals the parent key of its children: the same bytes hash alike whether they sit in
# `span_id` (FixedString) or `parent_span_id` (String). Two 64-bit keys keep hash joins small.
SPAN_KEY = "cityHash64(trace_id, span_id)"
PARENT_KEY = "cityHash64(trace_id, parent_span_id)"

# spans of the tenant starting in [{start}, {end}] nanoseconds
WINDOW = (
    "tenant = {tenant:String} AND start_time >= fromUnixTimestamp64Nano({start:Int64}, 'UTC') "
    "AND start_time <= fromUnixTimestamp64Nano({end:Int64}, 'UTC')"
)
# the window widened by an hour each way: where the parents and children of its spans may be
AROUND = (
    "tenant = {tenant:String} AND start_time >= fromUnixTimestamp64Nano({start:Int64} - 3600000000000, 'UTC') "
    "AND start_time <= fromUnixTimestamp64Nano({end:Int64} + 3600000000000, 'UTC')"
)


def childless_clients(db: str, columns: str) -> str:
    """Client and producer spans of the window that no stored span names as its parent: calls whose
    callee is not traced, or did not receive the trace context. Selects `columns` as `c`."""
    return (
        f"(SELECT {columns} FROM {db}.spans WHERE {WINDOW} AND kind IN (3, 4)) AS c "
        f"LEFT ANTI JOIN (SELECT {PARENT_KEY} AS k FROM {db}.spans WHERE {AROUND} AND parent_span_id != '') AS ch "
        "ON cityHash64(c.trace_id, c.span_id) = ch.k"
    )


_SURROGATE = re.compile("[\ud800-\udfff]")


def utf8_params(params: dict[str, object] | None) -> dict[str, object] | None:
    """Query parameters whose text a client can send as UTF-8: a lone UTF-16 surrogate (which a JSON
    escape such as `\\ud800` puts in a Python string) becomes U+FFFD, as the receivers store it.
    Neither client can encode one, and its error read as the store failing (a 503)."""
    if not params:
        return params
    return {k: _utf8(v) for k, v in params.items()}


def _utf8(value: object) -> object:
    if isinstance(value, str):
        return value if value.isascii() else _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_utf8(v) for v in value]
    return value


def quote(text: str) -> str:
    """A ClickHouse string literal, for SQL that must be literal text (regexes the engine compiles
    once per insert); user values travel as query parameters instead."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def per_tenant(default: int, own: dict[str, int], tenant_sql: str = "tenant") -> str:
    """SQL for a number that may differ by tenant: `own` values where the tenant has one."""
    own = {t: v for t, v in own.items() if v != default}
    if not own:
        return str(default)
    cases = ", ".join(f"{tenant_sql} = {quote(t)}, {v}" for t, v in sorted(own.items()))
    return f"multiIf({cases}, {default})"


def code_names(codes: dict[str, int], column: str) -> str:
    """SQL for the name of a code column (status, kind): an array of the names, indexed by code + 1
    (the codes run from 0 without gaps)."""
    assert sorted(codes.values()) == list(range(len(codes)))
    names = ", ".join(f"'{n}'" for n in sorted(codes, key=codes.__getitem__))
    return f"[{names}][{column} + 1]"
