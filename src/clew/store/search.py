"""Query-language searches on ClickHouse: spanset filters become SQL with parameters, the rest is
evaluated per trace on the flags that SQL computes (core/language.py).

Three statements: candidate traces (a span matching some filter starts in the time range, and the
trace holds what the query needs at least), the spans of a page of candidates with a flag per filter,
then summaries of the traces that matched. A single `{ ... }` with no pipeline is decided by the first
statement alone, so its LIMIT is exact; other queries read candidates page by page.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from clew.core.errors import BadRequest
from clew.core.language import (
    COMPARE,
    Aggregate,
    BoolOp,
    Comparison,
    Condition,
    Field,
    GroupBy,
    Not,
    Query,
    SpansetExpr,
    SpansetFilter,
    Static,
    TraceSpans,
    anchored,
    evaluate,
)
from clew.core.model import DEFAULT_TENANT, KIND_CODES, STATUS_CODES
from clew.store import arrays
from clew.store.connection import Connection
from clew.store.sql import AROUND, PARENT_KEY, SPAN_KEY, code_names


@dataclass(frozen=True, slots=True)
class SearchRequest:
    """A query-language search: traces with a matching span starting in [start, end] nanoseconds."""

    query: Query
    start: int
    end: int
    limit: int = 20
    spans_per_trace: int = 3
    tenant: str = DEFAULT_TENANT
    # the trace's duration (its spans in the window, first start to last end), as Tempo's
    # minDuration and maxDuration filter
    min_trace_duration: int | None = None
    max_trace_duration: int | None = None


@dataclass(frozen=True, slots=True)
class MatchedSpan:
    span_id: bytes
    service: str
    name: str
    start: int
    duration: int
    status_code: int
    attributes: dict[str, str] = field(default_factory=dict)  # what `select(...)` asked for


@dataclass(slots=True)
class TraceSummary:
    trace_id: bytes
    root_service: str
    root_name: str
    start: int
    duration: int
    span_count: int
    error_count: int
    services: dict[str, tuple[int, int]]  # service -> (spans, errors)
    matched: int = 0
    spans: list[MatchedSpan] = field(default_factory=list)


@dataclass(slots=True)
class SearchResult:
    traces: list[TraceSummary]
    inspected_traces: int
    complete: bool  # False when the search stopped before it had looked at every candidate trace


MAX_INSPECTED_TRACES = 20_000
Columns = dict[str, list[Any]]  # a query's answer by column name
_INTRINSIC_COLUMNS = {
    "span:id": "lower(hex(span_id))",
    "span:parentID": "lower(hex(parent_span_id))",
    "trace:id": "lower(hex(trace_id))",
    "instrumentation:name": "toString(scope_name)",
    "instrumentation:version": "toString(scope_version)",
    "name": "name",
    "service": "service_name",
    "statusMessage": "status_message",
    "status": "status_code",
    "kind": "kind",
    "duration": "duration",
}
_MAP_SUFFIXES = ("string", "int", "float", "bool", "complex")


@dataclass
class Params:
    """Query parameters by generated name, so no user text is ever part of the SQL."""

    values: dict[str, object] = field(default_factory=dict)
    # the database, where a condition reads other spans of the trace (trace:duration, ...); None
    # where conditions run without a query window (the sampling policies)
    db: str | None = None

    def add(self, value: object, ch_type: str) -> str:
        name = f"q{len(self.values)}"
        self.values[name] = value
        return f"{{{name}:{ch_type}}}"


def trace_ids_in(trace_ids: list[bytes]) -> tuple[str, dict[str, object]]:
    """`trace_id IN (...)` over a literal list, which lets the engine use the trace projection (an IN
    over a subquery took ~2 ms more and varied more); ids travel as hex parameters. `toFixedString`
    matters: a String ending in a zero byte did not match its FixedString(16) inside IN."""
    params: dict[str, object] = {f"t{i}": t.hex() for i, t in enumerate(trace_ids)}
    items = ", ".join(f"toFixedString(unhex({{{name}:String}}), 16)" for name in params)
    return f"trace_id IN ({items})", params


def _compare(column: str, op: str, placeholder: str) -> str:
    if op == "=~":
        return f"match({column}, {placeholder})"
    if op == "!~":
        return f"NOT match({column}, {placeholder})"
    return f"{column} {op} {placeholder}"


def _pattern(value: object) -> str:
    """TraceQL regexes match the whole value; the parser validated this very pattern with RE2."""
    return anchored(str(value))


def _array_sql(raw: str, cmp: Comparison, params: Params) -> str | None:
    """Arrays as Tempo compares them: a comparison matches when any element of the serialized
    `ArrayValue` in `raw` matches; `!=` and `!~` when none matches their positive form. Elements
    are compared with their own type's rules. None where the value's type has no elements to match."""
    kind, op, value = cmp.value.kind, cmp.op, cmp.value.value
    if kind not in ("string", "int", "float", "bool"):
        return None
    positive = {"!=": "=", "!~": "=~"}.get(op, op)
    if positive == "=":
        found = " OR ".join(
            f"position({raw}, unhex({params.add(p.hex(), 'String')})) > 0"
            for p in arrays.equal_patterns(kind, value)
        )
        return f"({found})" if positive == op else f"NOT ({found})"

    def any_element(element_kind: str, placeholder: str) -> str:
        test = _compare("arr_x", positive, placeholder)
        return f"arrayExists(arr_x -> {test}, {arrays.elements(element_kind, raw)})"

    if kind == "string":
        found = any_element("string", params.add(_pattern(value) if positive == "=~" else value, "String"))
    elif kind == "bool":
        found = any_element("bool", params.add(bool(value), "Bool"))
    else:
        assert isinstance(value, int | float)  # the type rules admit only numbers here
        found = (
            f"({any_element('int', params.add(value, 'Int64' if kind == 'int' else 'Float64'))} OR "
            f"{any_element('float', params.add(float(value), 'Float64'))})"
        )

    return found if positive == op else f"NOT {found}"


def _attribute_sql(prefix: str, cmp: Comparison, params: Params) -> str:
    scalar = _scalar_attribute_sql(prefix, cmp, params)
    if cmp.value.kind == "nil":
        return scalar
    column = f"{prefix}_complex[{params.add(cmp.field.name, 'String')}]"
    array = _array_sql(f"substring({column}, 2)", cmp, params)  # after the tag letter
    return scalar if array is None else f"({scalar} OR (startsWith({column}, 'a') AND {array}))"


def _scalar_attribute_sql(prefix: str, cmp: Comparison, params: Params) -> str:
    key = params.add(cmp.field.name, "String")
    kind, value, op = cmp.value.kind, cmp.value.value, cmp.op
    if kind == "nil":
        exists = " OR ".join(f"mapContains({prefix}_{s}, {key})" for s in _MAP_SUFFIXES)
        return f"({exists})" if op == "!=" else f"NOT ({exists})"

    def typed(suffix: str, placeholder: str) -> str:
        column = f"{prefix}_{suffix}[{key}]"
        return f"(mapContains({prefix}_{suffix}, {key}) AND {_compare(column, op, placeholder)})"

    if kind == "string":
        v = _pattern(value) if op in ("=~", "!~") else value
        return typed("string", params.add(v, "String"))
    if kind == "bool":
        return typed("bool", params.add(bool(value), "Bool"))
    assert isinstance(value, int | float)  # the type rules admit only numbers here
    int_type = "Int64" if kind == "int" else "Float64"
    as_int, as_float = (
        typed("int", params.add(value, int_type)),
        typed("float", params.add(float(value), "Float64")),
    )
    return f"({as_int} OR {as_float})"


# Tempo's scoped intrinsics over lists: a comparison matches when any element matches; != and !~
# when none does (as Tempo compares arrays)
_LIST_INTRINSICS = {
    "event:name": ("x", "events_name"),
    "link:traceID": ("lower(hex(x))", "links_trace_id"),
    "link:spanID": ("lower(hex(x))", "links_span_id"),
    "event:timeSinceStart": (
        "toInt64(toUnixTimestamp64Nano(x) - toUnixTimestamp64Nano(start_time))",
        "events_time",
    ),
}
_IDS = {"span:id", "span:parentID", "trace:id", "link:traceID", "link:spanID"}
# attribute lists of scopes, events and links: (key, AnyValue field number, value as text)
_ATTRIBUTE_LISTS = {
    "instrumentation": "arrayExists(t -> {test}, scope_attributes)",
    "event": "arrayExists(e -> arrayExists(t -> {test}, e), events_attributes)",
    "link": "arrayExists(e -> arrayExists(t -> {test}, e), links_attributes)",
}


def _listed_attribute_sql(cmp: Comparison, params: Params) -> str:
    """An `instrumentation.`, `event.` or `link.` attribute: any of the scope's, events' or links'
    attributes with that key and a matching value of its type."""
    template = _ATTRIBUTE_LISTS[cmp.field.scope]
    key = f"t.key = {params.add(cmp.field.name, 'String')}"
    kind, value, op = cmp.value.kind, cmp.value.value, cmp.op
    if kind == "nil":
        found = template.format(test=key)
        return found if op == "!=" else f"NOT {found}"
    if kind == "string":
        v = _pattern(value) if op in ("=~", "!~") else value
        test = f"t.type = 1 AND {_compare('t.value', op, params.add(v, 'String'))}"
    elif kind == "bool":
        test = f"t.type = 2 AND {_compare('t.value', op, params.add('true' if value else 'false', 'String'))}"
    else:
        test = f"t.type IN (3, 4) AND {_compare('toFloat64OrNull(t.value)', op, params.add(float(value), 'Float64'))}"  # type: ignore[arg-type]
    array = _array_sql("t.value", cmp, params)
    if array is not None:  # type 5: the serialized ArrayValue
        test = f"(({test}) OR (t.type = 5 AND {array}))"
    return template.format(test=f"{key} AND {test}")


# trace-level intrinsics: over the trace's spans within an hour of the query's window
_TRACE_INTRINSICS = {
    "trace:duration": "toInt64(max(toUnixTimestamp64Nano(start_time) + duration) - min(toUnixTimestamp64Nano(start_time)))",
    "trace:rootName": "argMinIf(toString(name), start_time, parent_span_id = '')",
    "trace:rootService": "argMinIf(toString(service_name), start_time, parent_span_id = '')",
}


def _trace_sql(cmp: Comparison, params: Params) -> str:
    if params.db is None:
        raise BadRequest(f"{cmp.field} is not available here: it needs the spans of a whole trace")
    expr = _TRACE_INTRINSICS[cmp.field.name]
    kind, value = cmp.value.kind, cmp.value.value
    if kind == "duration":
        test = _compare(expr, cmp.op, params.add(value, "Int64"))
    else:
        test = _compare(
            expr, cmp.op, params.add(_pattern(value) if cmp.op in ("=~", "!~") else value, "String")
        )
    return (
        f"trace_id IN (SELECT trace_id FROM {params.db}.spans WHERE {AROUND} GROUP BY trace_id HAVING {test})"
    )


def _child_count_sql(cmp: Comparison, params: Params) -> str:
    """`span:childCount`: a span's direct children, among the trace's spans around the window. The
    spans with children are counted in one set; a span absent from it has none."""
    if params.db is None:
        raise BadRequest("span:childCount is not available here: it needs the spans of a whole trace")
    value = int(cmp.value.value)  # type: ignore[arg-type]  # an integer, by the type rules
    n = params.add(value, "Int64")
    parents = f"SELECT {PARENT_KEY} FROM {params.db}.spans WHERE {AROUND} AND parent_span_id != '' GROUP BY {PARENT_KEY}"
    if COMPARE[cmp.op](0, value):  # childless spans match: exclude the parents that do not
        return f"{SPAN_KEY} NOT IN ({parents} HAVING NOT (toInt64(count()) {cmp.op} {n}))"
    return f"{SPAN_KEY} IN ({parents} HAVING toInt64(count()) {cmp.op} {n})"


def _comparison_sql(cmp: Comparison, params: Params) -> str:
    f = cmp.field
    if f.scope == "intrinsic" and f.name == "span:childCount":
        return _child_count_sql(cmp, params)
    if f.scope == "intrinsic" and f.name in _TRACE_INTRINSICS:
        return _trace_sql(cmp, params)
    if f.scope in _ATTRIBUTE_LISTS:
        return _listed_attribute_sql(cmp, params)
    if f.scope == "intrinsic" and f.name in _LIST_INTRINSICS:
        element, array = _LIST_INTRINSICS[f.name]
        kind, value = cmp.value.kind, cmp.value.value
        if kind == "duration":
            placeholder = params.add(value, "Int64")
        else:
            v = _pattern(value) if cmp.op in ("=~", "!~") else value
            placeholder = params.add(str(v).lower() if f.name in _IDS else v, "String")
        if cmp.op in ("!=", "!~"):  # none of the elements matches
            positive = {"!=": "=", "!~": "=~"}[cmp.op]
            return f"NOT arrayExists(x -> {_compare(element, positive, placeholder)}, {array})"
        return f"arrayExists(x -> {_compare(element, cmp.op, placeholder)}, {array})"
    if f.scope == "intrinsic":
        column = _INTRINSIC_COLUMNS[f.name]
        kind, value = cmp.value.kind, cmp.value.value
        if kind in ("status", "kind"):
            return _compare(column, cmp.op, params.add(value, "UInt8"))
        if kind == "duration":
            return _compare(f"toInt64({column})", cmp.op, params.add(value, "Int64"))
        v = _pattern(value) if cmp.op in ("=~", "!~") else value
        if f.name in _IDS and isinstance(v, str):
            v = v.lower()
        return _compare(column, cmp.op, params.add(v, "String"))
    if f.scope == "span":
        return _attribute_sql("attributes", cmp, params)
    if f.scope == "resource":
        return _attribute_sql("resource", cmp, params)
    span, resource = _attribute_sql("attributes", cmp, params), _attribute_sql("resource", cmp, params)
    joiner = "AND" if cmp.value.kind == "nil" and cmp.op == "=" else "OR"
    return f"({span} {joiner} {resource})"


def condition_sql(cond: Condition | None, params: Params) -> str:
    if cond is None:
        return "1"
    if isinstance(cond, BoolOp):
        joiner = "AND" if cond.op == "&&" else "OR"
        return f"({condition_sql(cond.left, params)} {joiner} {condition_sql(cond.right, params)})"
    if isinstance(cond, Not):
        return f"NOT ({condition_sql(cond.condition, params)})"
    if isinstance(cond, Static):
        return "1" if cond.value else "0"
    return _comparison_sql(cond, params)


def _necessary(expr: SpansetExpr, flags: list[str]) -> str:
    """What a trace must hold for `expr` to possibly match: a HAVING clause over candidate spans."""
    if isinstance(expr, SpansetFilter):
        return f"countIf({flags[expr.index]}) > 0"
    if expr.op.startswith("!"):  # not related to the left side: the left side may be absent
        return _necessary(expr.right, flags)
    joiner = "OR" if expr.op == "||" else "AND"
    return f"({_necessary(expr.left, flags)} {joiner} {_necessary(expr.right, flags)})"


def value_sql(field_: Field, params: Params) -> str:
    """A numeric input of an aggregate, NULL where the span has none."""
    if field_.scope == "intrinsic":
        return "toFloat64(duration)"
    prefixes = {"span": ["attributes"], "resource": ["resource"], "any": ["attributes", "resource"]}
    key = params.add(field_.name, "String")
    parts = []
    for prefix in prefixes[field_.scope]:
        parts.append(f"mapContains({prefix}_int, {key}), toFloat64({prefix}_int[{key}])")
        parts.append(f"mapContains({prefix}_float, {key}), {prefix}_float[{key}]")
    return f"multiIf({', '.join(parts)}, NULL)"


_TEXT_MAPS = {"span": ("attributes",), "resource": ("resource",), "any": ("attributes", "resource")}


def field_text_sql(f: Field, params: Params) -> str:
    """A field as text, NULL where the span has none (metrics' `by`, search's `select`)."""
    if f.scope == "intrinsic":
        return {
            "name": "toString(name)",
            "service": "toString(service_name)",
            "statusMessage": "status_message",
            "status": code_names(STATUS_CODES, "status_code"),
            "kind": code_names(KIND_CODES, "kind"),
            "duration": "toString(duration)",
            "instrumentation:name": "toString(scope_name)",
            "instrumentation:version": "toString(scope_version)",
        }[f.name]
    key = params.add(f.name, "String")
    parts = []
    for prefix in _TEXT_MAPS[f.scope]:
        parts += [
            f"mapContains({prefix}_string, {key}), {prefix}_string[{key}]",
            f"mapContains({prefix}_int, {key}), toString({prefix}_int[{key}])",
            f"mapContains({prefix}_float, {key}), toString({prefix}_float[{key}])",
            f"mapContains({prefix}_bool, {key}), if({prefix}_bool[{key}], 'true', 'false')",
        ]
    return f"multiIf({', '.join(parts)}, NULL)"


class Searcher:
    """Runs one `SearchRequest` on a connection; holds the compiled SQL of its query."""

    def __init__(self, conn: Connection, db: str, request: SearchRequest) -> None:
        self.conn, self.db, self.request = conn, db, request
        self.params = Params(db=db)
        query: Query = request.query
        self.flags = [condition_sql(f.condition, self.params) for f in query.filters]
        self.values = [
            field_text_sql(stage.field, self.params)
            if isinstance(stage, GroupBy)
            else value_sql(stage.field, self.params)
            if isinstance(stage, Aggregate) and stage.field is not None
            else "NULL"
            for stage in query.pipeline
        ]
        self.inspected, self.complete = 0, True
        self.base = {
            "tenant": request.tenant,
            "start": request.start,
            "end": request.end,
        }

    def run(self) -> SearchResult:
        query, limit = self.request.query, self.request.limit
        page = limit if query.simple else max(4 * limit, 200)
        found: list[tuple[bytes, list[MatchedSpan], int]] = []
        for candidates in self._pages(page):
            for trace_id, spans in self._evaluate(candidates):
                found.append((trace_id, spans[: self.request.spans_per_trace], len(spans)))
                if len(found) == limit:
                    break
            if len(found) == limit:
                break
        summaries = self._summaries([t for t, _, _ in found])
        traces = []
        for trace_id, spans, matched in found:
            summary = summaries[trace_id]
            summary.spans, summary.matched = spans, matched
            traces.append(summary)
        return SearchResult(traces, self.inspected, self.complete)

    def scan(self, extra: dict[str, str], page: int = 200) -> Iterator[tuple[Columns, list[int]]]:
        """Every match in the window, not only the newest `limit` (metrics over a structural query):
        the matching spans' rows of each candidate page, with the `extra` columns (alias -> SQL
        compiled with `self.params`) read for them. Stops after MAX_INSPECTED_TRACES candidates. A
        trace that new spans moved into a later page is evaluated once."""
        seen: set[bytes] = set()
        for page_of in self._pages(page):
            candidates = [t for t in page_of if t not in seen]
            seen.update(candidates)
            columns, hits = self._matched_rows(candidates, extra)
            yield columns, [row for _, rows in hits for row in rows]

    def _pages(self, page: int) -> Iterator[list[bytes]]:
        """Candidate traces a page at a time, newest first; counts them in `inspected` and clears
        `complete` when it stops at the inspection limit."""
        self.inspected, self.complete, offset = 0, True, 0
        while True:
            candidates = self._candidates(page, offset)
            self.inspected += len(candidates)
            offset += page
            yield candidates
            if len(candidates) < page:
                return
            if self.inspected >= MAX_INSPECTED_TRACES:
                self.complete = False
                return

    def _trace_duration(self) -> str:
        low, high = self.request.min_trace_duration, self.request.max_trace_duration
        if low is None and high is None:
            return ""
        bounds = []
        if low is not None:
            bounds.append(f"d >= {self.params.add(low, 'Int64')}")
        if high is not None:
            bounds.append(f"d <= {self.params.add(high, 'Int64')}")
        return (
            f" AND trace_id IN (SELECT trace_id FROM {self.db}.spans WHERE tenant = {{tenant:String}} "
            "AND start_time >= fromUnixTimestamp64Nano({start:Int64}, 'UTC') "
            "AND start_time <= fromUnixTimestamp64Nano({end:Int64}, 'UTC') GROUP BY trace_id "
            "HAVING (toInt64(max(toUnixTimestamp64Nano(start_time) + duration) - "
            f"min(toUnixTimestamp64Nano(start_time))) AS d) >= 0 AND {' AND '.join(bounds)})"
        )

    def _where_any_filter(self) -> str:
        return "(" + " OR ".join(self.flags) + ")"

    def _candidates(self, page: int, offset: int) -> list[bytes]:
        having = (
            ""
            if self.request.query.simple
            else f"HAVING {_necessary(self.request.query.spansets, self.flags)}"
        )
        table = self.conn.query(
            f"SELECT trace_id FROM {self.db}.spans "
            "WHERE tenant = {tenant:String} "
            "AND start_time >= fromUnixTimestamp64Nano({start:Int64}, 'UTC') "
            "AND start_time <= fromUnixTimestamp64Nano({end:Int64}, 'UTC') "
            f"AND {self._where_any_filter()}{self._trace_duration()} GROUP BY trace_id {having} "
            "ORDER BY max(start_time) DESC, trace_id LIMIT {page:UInt32} OFFSET {offset:UInt32}",
            {**self.params.values, **self.base, "page": page, "offset": offset},
        )
        return [bytes(t) for t in table.column(0).to_pylist()]

    def _matched_rows(
        self, candidates: list[bytes], extra: dict[str, str] | None = None
    ) -> tuple[Columns, list[tuple[bytes, list[int]]]]:
        """The candidates' spans as columns, and the rows of each matching trace's matching spans
        (in candidate order); `extra` adds columns (alias -> SQL)."""
        if not candidates:
            return {}, []
        query = self.request.query
        flag_columns = ", ".join(f"{sql} AS f{i}" for i, sql in enumerate(self.flags))
        value_columns = "".join(f", {sql} AS v{i}" for i, sql in enumerate(self.values))
        value_columns += "".join(
            f", {field_text_sql(f, self.params)} AS s{i}" for i, (f, _) in enumerate(query.select)
        )
        value_columns += "".join(f", {sql} AS {alias}" for alias, sql in (extra or {}).items())
        only_matching = "" if query.structural else f"AND {self._where_any_filter()}"
        ids_sql, ids_params = trace_ids_in(candidates)
        table = self.conn.query(
            "SELECT trace_id, span_id, parent_span_id, service_name, name, "
            "toUnixTimestamp64Nano(start_time) AS start, duration, status_code, "
            f"{flag_columns}{value_columns} FROM {self.db}.spans "
            f"WHERE tenant = {{tenant:String}} AND {ids_sql} "
            f"{only_matching} ORDER BY trace_id, start, span_id",
            {**self.params.values, **self.base, **ids_params},
        )
        binary = ("trace_id", "span_id", "parent_span_id")  # raw bytes; chdb may hand them over as text
        columns = {
            name: (table.column(name).cast(pa.binary()) if name in binary else table.column(name)).to_pylist()
            for name in table.column_names
        }
        rows_by_trace: dict[bytes, list[int]] = defaultdict(list)
        for row, trace_id in enumerate(columns["trace_id"]):
            rows_by_trace[bytes(trace_id)].append(row)
        matched = []
        for trace_id in candidates:
            rows = rows_by_trace.get(trace_id, [])
            spans = TraceSpans(
                span_ids=[bytes(columns["span_id"][r]) for r in rows],
                parents=[bytes(columns["parent_span_id"][r]) for r in rows],
                flags=[[bool(columns[f"f{i}"][r]) for r in rows] for i in range(len(self.flags))],
                values=[[columns[f"v{i}"][r] for r in rows] for i in range(len(self.values))],
            )
            hits = evaluate(query, spans)
            if hits:
                matched.append((trace_id, [rows[i] for i in hits]))
        return columns, matched

    def _evaluate(self, candidates: list[bytes]) -> list[tuple[bytes, list[MatchedSpan]]]:
        """Matching spans of each candidate that matches, in candidate order."""
        columns, matched = self._matched_rows(candidates)
        select = self.request.query.select
        return [
            (
                trace_id,
                [
                    MatchedSpan(
                        span_id=bytes(columns["span_id"][r]),
                        service=str(columns["service_name"][r]),
                        name=str(columns["name"][r]),
                        start=int(columns["start"][r]),
                        duration=int(columns["duration"][r]),
                        status_code=int(columns["status_code"][r]),
                        attributes={
                            name: str(columns[f"s{k}"][r])
                            for k, (_, name) in enumerate(select)
                            if columns[f"s{k}"][r] is not None
                        },
                    )
                    for r in rows
                ],
            )
            for trace_id, rows in matched
        ]

    def _summaries(self, trace_ids: list[bytes]) -> dict[bytes, TraceSummary]:
        return trace_summaries(self.conn, self.db, self.request.tenant, trace_ids)


def trace_summaries(
    conn: Connection, db: str, tenant: str, trace_ids: list[bytes]
) -> dict[bytes, TraceSummary]:
    """What a result list shows of each trace: its root, times, span and error counts per service."""
    if not trace_ids:
        return {}
    ids_sql, ids_params = trace_ids_in(trace_ids)
    table = conn.query(
        "SELECT trace_id, toUnixTimestamp64Nano(min(start_time)) AS first, "
        "max(toUnixTimestamp64Nano(start_time) + toInt64(duration)) AS last, count() AS spans, "
        "countIf(status_code = 2) AS errors, "
        "argMinIf(toString(service_name), start_time, parent_span_id = '') AS root_service, "
        "argMinIf(toString(name), start_time, parent_span_id = '') AS root_name, "
        "countIf(parent_span_id = '') AS roots, "
        "argMin(toString(service_name), start_time) AS first_service, "
        "argMin(toString(name), start_time) AS first_name "
        f"FROM {db}.spans WHERE tenant = {{tenant:String}} "
        f"AND {ids_sql} GROUP BY trace_id",
        {"tenant": tenant, **ids_params},
    )
    per_service = conn.query(
        "SELECT trace_id, toString(service_name) AS service, count(), countIf(status_code = 2) "
        f"FROM {db}.spans WHERE tenant = {{tenant:String}} "
        f"AND {ids_sql} "
        "GROUP BY trace_id, service ORDER BY trace_id, count() DESC, service",
        {"tenant": tenant, **ids_params},
    )
    services: dict[bytes, dict[str, tuple[int, int]]] = defaultdict(dict)
    for trace_id, service, spans, errors in zip(*(c.to_pylist() for c in per_service.columns), strict=True):
        services[bytes(trace_id)][service] = (int(spans), int(errors))
    result = {}
    for row in table.to_pylist():
        trace_id = bytes(row["trace_id"])
        rooted = row["roots"] > 0
        result[trace_id] = TraceSummary(
            trace_id=trace_id,
            root_service=row["root_service"] if rooted else row["first_service"],
            root_name=row["root_name"] if rooted else row["first_name"],
            start=int(row["first"]),
            duration=int(row["last"]) - int(row["first"]),
            span_count=int(row["spans"]),
            error_count=int(row["errors"]),
            services=services[trace_id],
        )
    return result
