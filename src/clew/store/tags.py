"""Attribute discovery, as Tempo's search-tags APIs and Grafana's query builder ask for it: which
attribute keys spans of a time range carry, per scope, and which values one key (or an intrinsic
such as `name`) takes, the most frequent first, optionally among spans matching a filter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from clew.core.language import Condition
from clew.core.model import KIND_CODES, STATUS_CODES
from clew.store.connection import Connection
from clew.store.search import Params, condition_sql
from clew.store.sql import WINDOW, code_names

AttributeScope = Literal["span", "resource"]
MAPS: dict[AttributeScope, str] = {"span": "attributes", "resource": "resource"}
# typed maps and how a value of each is reported (Tempo's tag value types)
VALUE_TYPES = (("string", "string"), ("int", "int"), ("float", "float"), ("bool", "bool"))
_INTRINSIC_SQL = {
    "name": ("toString(name)", "string"),
    "service": ("toString(service_name)", "string"),
    "statusMessage": ("status_message", "string"),
    "status": (code_names(STATUS_CODES, "status_code"), "keyword"),
    "kind": (code_names(KIND_CODES, "kind"), "keyword"),
}


@dataclass(frozen=True, slots=True)
class TagValue:
    type: str  # string, int, float, bool, keyword
    value: str  # as text, the way Tempo's API reports it


def tag_names(
    conn: Connection, db: str, scope: AttributeScope, start: int, end: int, tenant: str, limit: int
) -> list[str]:
    prefix = MAPS[scope]
    keys = ", ".join(f"mapKeys({prefix}_{t})" for t, _ in (*VALUE_TYPES, ("complex", "")))
    table = conn.query(
        f"SELECT DISTINCT arrayJoin(arrayConcat({keys})) AS k FROM {db}.spans WHERE {WINDOW} "
        "ORDER BY k LIMIT {limit:UInt32}",
        {"tenant": tenant, "start": start, "end": end, "limit": limit},
    )
    return [str(k) for k in table.column(0).to_pylist()]


def tag_values(
    conn: Connection,
    db: str,
    scopes: tuple[AttributeScope, ...],
    key: str,
    start: int,
    end: int,
    tenant: str,
    limit: int,
    among: Condition | None = None,
) -> list[TagValue]:
    """Values of attribute `key` in `scopes`, among spans matching `among`."""
    params = Params(db=db)
    where = f"{WINDOW} AND {condition_sql(among, params)}"
    name = params.add(key, "String")
    parts = [
        f"SELECT '{label}' AS t, toString({MAPS[scope]}_{suffix}[{name}]) AS v FROM {db}.spans "
        f"WHERE {where} AND mapContains({MAPS[scope]}_{suffix}, {name})"
        for scope in scopes
        for suffix, label in VALUE_TYPES
    ]
    return _values(conn, " UNION ALL ".join(parts), params, tenant, start, end, limit)


def intrinsic_values(
    conn: Connection, db: str, intrinsic: str, start: int, end: int, tenant: str, limit: int,
    among: Condition | None = None,
) -> list[TagValue]:  # fmt: skip
    """Values of an intrinsic (`name`, `service`, `status`, `kind`, `statusMessage`)."""
    expr, label = _INTRINSIC_SQL[intrinsic]
    params = Params(db=db)
    where = f"{WINDOW} AND {condition_sql(among, params)}"
    sql = f"SELECT '{label}' AS t, {expr} AS v FROM {db}.spans WHERE {where}"
    return _values(conn, sql, params, tenant, start, end, limit)


INTRINSIC_TAGS = tuple(_INTRINSIC_SQL)


def _values(
    conn: Connection, union: str, params: Params, tenant: str, start: int, end: int, limit: int
) -> list[TagValue]:
    table = conn.query(
        f"SELECT t, v FROM ({union}) GROUP BY t, v ORDER BY count() DESC, v LIMIT {{limit:UInt32}}",
        {**params.values, "tenant": tenant, "start": start, "end": end, "limit": limit},
    )
    return [TagValue(str(t), str(v)) for t, v in zip(*(c.to_pylist() for c in table.columns), strict=True)]
