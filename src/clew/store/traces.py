"""The trace reader role: a trace by id, Jaeger's search, the query language, services and operations.

Answers are typed values (`SpanBatch`, `SearchResult`, ...); the HTTP modules shape them into JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa

from clew.core.errors import BadRequest
from clew.core.language import Condition
from clew.core.metrics_query import MetricsQuery
from clew.core.model import DEFAULT_TENANT, KIND_CODES, SPAN_SCHEMA, STATUS_CODES, SpanBatch
from clew.store import metrics, tags
from clew.store.connection import Connection
from clew.store.metrics import MetricsResult
from clew.store.schema import SELECT_COLUMNS
from clew.store.search import (
    MatchedSpan,
    Searcher,
    SearchRequest,
    SearchResult,
    TraceSummary,
    trace_ids_in,
    trace_summaries,
)
from clew.store.tags import AttributeScope, TagValue

__all__ = [
    "ClickHouseTraceReader",
    "MatchedSpan",
    "SearchRequest",
    "SearchResult",
    "LinkRef",
    "TraceQuery",
    "TraceReader",
    "TraceSummary",
    "Window",
]

# [first, last] ns since the epoch that a trace's spans start in: a lookup's time hint
Window = tuple[int, int]


# Tags of one Jaeger search: each is a condition over every typed map (~1.2 KB of SQL), and 213 of them
# passed the engine's limit on a statement's size, a 503 (the query language's limit is MAX_CONDITIONS).
MAX_TAGS = 64


@dataclass(frozen=True, slots=True)
class TraceQuery:
    """Jaeger's search: one span of `service` must match every condition. Times in nanoseconds."""

    service: str
    start_min: int
    start_max: int
    operation: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    duration_min: int | None = None
    duration_max: int | None = None
    limit: int = 100
    tenant: str = DEFAULT_TENANT

    def __post_init__(self) -> None:
        if len(self.tags) > MAX_TAGS:
            raise BadRequest(f"at most {MAX_TAGS} tags a search (MAX_TAGS), got {len(self.tags)}")


@dataclass(frozen=True, slots=True)
class LinkRef:
    """A span of another trace that links to a span of this one."""

    trace_id: bytes
    span_id: bytes
    service: str
    name: str
    linked_span_id: bytes  # the span of this trace it links to


# the most back-references one trace answers with
MAX_LINKED_FROM = 100


class TraceReader(Protocol):
    def get_trace(self, trace_id: bytes, tenant: str = ..., window: Window | None = None) -> SpanBatch:
        """A trace's spans; with `window`, only those starting in it (the time hint Tempo and Jaeger
        take with a trace id: the engine then reads only the parts and hours it covers)."""
        ...

    def get_traces(
        self, trace_ids: list[bytes], tenant: str = ..., window: Window | None = None
    ) -> SpanBatch: ...

    def find_traces(self, query: TraceQuery) -> list[bytes]:
        """Ids of matching traces, the most recent first, at most `query.limit`."""
        ...

    def search(self, request: SearchRequest) -> SearchResult:
        """Traces matching a query-language query, the most recent first, at most `request.limit`."""
        ...

    def services(self, tenant: str = ...) -> list[str]: ...

    def metrics(self, query: MetricsQuery, start: int, end: int, step: int, tenant: str) -> MetricsResult:
        """TraceQL metrics: series of `query` over [start, end) ns in steps of `step` ns."""
        ...

    def summaries(self, trace_ids: list[bytes], tenant: str = ...) -> dict[bytes, TraceSummary]:
        """What a result list shows of each trace (root, times, counts per service)."""
        ...

    def tag_names(self, scope: AttributeScope, start: int, end: int, tenant: str, limit: int) -> list[str]:
        """Attribute keys of spans starting in [start, end] ns, in one scope."""
        ...

    def tag_values(
        self, scopes: tuple[AttributeScope, ...], key: str, start: int, end: int, tenant: str, limit: int,
        among: Condition | None = None,
    ) -> list[TagValue]:  # fmt: skip
        """Values of an attribute, the most frequent first, among spans matching `among`."""
        ...

    def intrinsic_values(
        self, name: str, start: int, end: int, tenant: str, limit: int, among: Condition | None = None
    ) -> list[TagValue]: ...

    def operations(
        self, service: str, kind: int | None = None, tenant: str = ...
    ) -> list[tuple[str, int]]: ...

    def span_count(self, tenant: str | None = None) -> int: ...

    def linked_from(self, trace_id: bytes, start: int, end: int, tenant: str = ...) -> list[LinkRef]:
        """Spans of other traces starting in [start, end] ns that link to this trace, oldest first."""
        ...

    def skeleton(self, trace_id: bytes, tenant: str = ...) -> pa.Table:
        """The trace's shape as columns (SKELETON_COLUMNS), in start order: what a view of a huge
        trace draws before it asks for any span's details."""
        ...

    def get_span(self, trace_id: bytes, span_id: bytes, tenant: str = ...) -> SpanBatch:
        """One span of a trace, whole (empty when absent)."""
        ...


# The skeleton of a trace, computed by the engine: ids as hex, start times in ns, and per span the counts of what its details hold, and the spans of this trace it links to
# (follows-from, drawn in the waterfall).
SKELETON_COLUMNS = {
    "span_id": "lower(hex(span_id))",
    "parent_id": "lower(hex(parent_span_id))",
    "service": "toString(service_name)",
    "name": "toString(name)",
    "kind": "kind",
    "start": "toUnixTimestamp64Nano(start_time)",
    "duration": "duration",
    "status": "status_code",
    "events": "length(events_name)",
    "exception": "has(events_name, 'exception')",
    "attributes": "length(attributes_string) + length(attributes_int) + length(attributes_float) "
    "+ length(attributes_bool) + length(attributes_complex)",
    "links": "arrayMap(l -> lower(hex(l)), arrayFilter((l, t) -> t = trace_id, links_span_id, links_trace_id))",
}


class ClickHouseTraceReader:
    def __init__(self, conn: Connection, db: str = "clew") -> None:
        self.conn, self.db = conn, db

    def get_trace(
        self, trace_id: bytes, tenant: str = DEFAULT_TENANT, window: Window | None = None
    ) -> SpanBatch:
        return self.get_traces([trace_id], tenant, window)

    def get_traces(
        self, trace_ids: list[bytes], tenant: str = DEFAULT_TENANT, window: Window | None = None
    ) -> SpanBatch:
        ids_sql, params = trace_ids_in(trace_ids)
        within = ""
        if window is not None:
            within = (
                " AND start_time BETWEEN fromUnixTimestamp64Nano({w0:Int64}, 'UTC') "
                "AND fromUnixTimestamp64Nano({w1:Int64}, 'UTC')"
            )
            params = {**params, "w0": window[0], "w1": window[1]}
        table = self.conn.query(
            f"SELECT {SELECT_COLUMNS} FROM {self.db}.spans "
            f"WHERE {ids_sql} AND tenant = {{tenant:String}}{within} "
            # one granule of every column: mapping the files beats a read per column (bench/RESULTS.md)
            "SETTINGS local_filesystem_read_method = 'mmap', min_bytes_to_use_mmap_io = 1",
            {**params, "tenant": tenant},
        )
        # sorted here: an ORDER BY in the statement cost ~2 ms of a ~20 ms lookup
        order = [("trace_id", "ascending"), ("start_time", "ascending"), ("span_id", "ascending")]
        return SpanBatch(_conform(table).sort_by(order))

    def skeleton(self, trace_id: bytes, tenant: str = DEFAULT_TENANT) -> pa.Table:
        ids_sql, ids_params = trace_ids_in([trace_id])
        columns = ", ".join(f"{sql} AS {name}" for name, sql in SKELETON_COLUMNS.items())
        table: pa.Table = self.conn.query(
            f"SELECT {columns} FROM {self.db}.spans WHERE {ids_sql} AND tenant = {{tenant:String}} "
            "ORDER BY start, span_id",
            {**ids_params, "tenant": tenant},
        )
        return table

    def get_span(self, trace_id: bytes, span_id: bytes, tenant: str = DEFAULT_TENANT) -> SpanBatch:
        ids_sql, ids_params = trace_ids_in([trace_id])
        table = self.conn.query(
            f"SELECT {SELECT_COLUMNS} FROM {self.db}.spans "
            f"WHERE {ids_sql} AND span_id = toFixedString(unhex({{span:String}}), 8) "
            "AND tenant = {tenant:String} LIMIT 1",
            {**ids_params, "span": span_id.hex(), "tenant": tenant},
        )
        return SpanBatch(_conform(table))

    def find_traces(self, query: TraceQuery) -> list[bytes]:
        where = [
            "tenant = {tenant:String}",
            "service_name = {service:String}",
            "start_time >= fromUnixTimestamp64Nano({start_min:Int64}, 'UTC')",
            "start_time <= fromUnixTimestamp64Nano({start_max:Int64}, 'UTC')",
        ]
        params: dict[str, object] = {
            "tenant": query.tenant,
            "service": query.service,
            "start_min": query.start_min,
            "start_max": query.start_max,
            "limit": query.limit,
        }
        if query.operation:
            where.append("name = {operation:String}")
            params["operation"] = query.operation
        if query.duration_min is not None:
            where.append("duration >= {duration_min:UInt64}")
            params["duration_min"] = query.duration_min
        if query.duration_max is not None:
            where.append("duration <= {duration_max:UInt64}")
            params["duration_max"] = query.duration_max
        for i, (key, value) in enumerate(query.tags.items()):
            where.append(tag_condition(key, f"k{i}", f"v{i}"))
            params[f"k{i}"] = key.removeprefix("resource.")
            params[f"v{i}"] = value
        table = self.conn.query(
            f"SELECT trace_id FROM {self.db}.spans WHERE {' AND '.join(where)} "
            "GROUP BY trace_id ORDER BY max(start_time) DESC, trace_id LIMIT {limit:UInt32}",
            params,
        )
        return [bytes(t) for t in table.column(0).to_pylist()]

    def search(self, request: SearchRequest) -> SearchResult:
        return Searcher(self.conn, self.db, request).run()

    def services(self, tenant: str = DEFAULT_TENANT) -> list[str]:
        table = self.conn.query(
            f"SELECT DISTINCT service_name FROM {self.db}.spans WHERE tenant = {{tenant:String}} "
            "ORDER BY service_name",
            {"tenant": tenant},
        )
        return [str(s) for s in table.column(0).to_pylist()]

    def metrics(self, query: MetricsQuery, start: int, end: int, step: int, tenant: str) -> MetricsResult:
        return metrics.compute(self.conn, self.db, query, start, end, step, tenant)

    def summaries(self, trace_ids: list[bytes], tenant: str = DEFAULT_TENANT) -> dict[bytes, TraceSummary]:
        return trace_summaries(self.conn, self.db, tenant, trace_ids)

    def tag_names(self, scope: AttributeScope, start: int, end: int, tenant: str, limit: int) -> list[str]:
        return tags.tag_names(self.conn, self.db, scope, start, end, tenant, limit)

    def tag_values(
        self, scopes: tuple[AttributeScope, ...], key: str, start: int, end: int, tenant: str, limit: int,
        among: Condition | None = None,
    ) -> list[TagValue]:  # fmt: skip
        return tags.tag_values(self.conn, self.db, scopes, key, start, end, tenant, limit, among)

    def intrinsic_values(
        self, name: str, start: int, end: int, tenant: str, limit: int, among: Condition | None = None
    ) -> list[TagValue]:
        return tags.intrinsic_values(self.conn, self.db, name, start, end, tenant, limit, among)

    def operations(
        self, service: str, kind: int | None = None, tenant: str = DEFAULT_TENANT
    ) -> list[tuple[str, int]]:
        where = "tenant = {tenant:String} AND service_name = {service:String}"
        params: dict[str, object] = {"tenant": tenant, "service": service}
        if kind is not None:
            where += " AND kind = {kind:UInt8}"
            params["kind"] = kind
        table = self.conn.query(
            f"SELECT DISTINCT name, kind FROM {self.db}.spans WHERE {where} ORDER BY name, kind", params
        )
        return list(zip(table.column(0).to_pylist(), table.column(1).to_pylist(), strict=True))

    def linked_from(
        self, trace_id: bytes, start: int, end: int, tenant: str = DEFAULT_TENANT
    ) -> list[LinkRef]:
        table = self.conn.query(
            "SELECT hex(trace_id), hex(span_id), toString(service_name), toString(name), "
            "hex(links_span_id[indexOf(links_trace_id, unhex({t:String}))]) "
            f"FROM {self.db}.spans WHERE tenant = {{tenant:String}} "
            "AND start_time >= fromUnixTimestamp64Nano({start:Int64}, 'UTC') "
            "AND start_time <= fromUnixTimestamp64Nano({end:Int64}, 'UTC') "
            "AND has(links_trace_id, unhex({t:String})) AND trace_id != unhex({t:String}) "
            f"ORDER BY start_time LIMIT {MAX_LINKED_FROM}",
            {"t": trace_id.hex(), "tenant": tenant, "start": start, "end": end},
        )
        return [
            LinkRef(bytes.fromhex(t), bytes.fromhex(s), service, name, bytes.fromhex(linked))
            for t, s, service, name, linked in zip(*(c.to_pylist() for c in table.columns), strict=True)
        ]

    def span_count(self, tenant: str | None = None) -> int:
        if tenant is None:
            table = self.conn.query(f"SELECT count() FROM {self.db}.spans")
        else:
            table = self.conn.query(
                f"SELECT count() FROM {self.db}.spans WHERE tenant = {{tenant:String}}", {"tenant": tenant}
            )
        return int(table.column(0)[0].as_py())


_SCALAR_TYPES = "(1, 2, 3, 4)"  # string, bool, int, double: the AnyValue field numbers


def _maps_match(prefix: str, k: str, v: str) -> list[str]:
    """Conditions for key {k} having the text value {v} in one set of typed maps."""
    return [
        f"(mapContains({prefix}_string, {k}) AND {prefix}_string[{k}] = {v})",
        f"(mapContains({prefix}_int, {k}) AND toString({prefix}_int[{k}]) = {v})",
        f"(mapContains({prefix}_float, {k}) AND toString({prefix}_float[{k}]) = {v})",
        f"(mapContains({prefix}_bool, {k}) AND toString({prefix}_bool[{k}]) = {v})",
    ]


def tag_condition(key: str, k_param: str, v_param: str) -> str:
    """SQL matching one Jaeger search tag on a span, by the text form of its value, as Jaeger does.

    The value may sit in the span's attributes, its resource, its scope, its events or its links;
    `resource.` narrows to the resource; `error`, `span.kind`, `span.status`, `scope.name` and
    `scope.version` test the span's own fields. Key and value travel as query parameters.
    """
    k, v = f"{{{k_param}:String}}", f"{{{v_param}:String}}"
    if key == "error":
        return f"(status_code = 2) = (lower({v}) = 'true')"
    if key == "span.kind":
        return f"kind = transform(lower({v}), {list(KIND_CODES)}, {list(KIND_CODES.values())}, 255)"
    if key == "span.status":
        return (
            f"status_code = transform(lower({v}), {list(STATUS_CODES)}, {list(STATUS_CODES.values())}, 255)"
        )
    if key == "scope.name":
        return f"scope_name = {v}"
    if key == "scope.version":
        return f"scope_version = {v}"
    if key.startswith("resource."):
        return "(" + " OR ".join(_maps_match("resource", k, v)) + ")"
    in_list = f"a -> a.key = {k} AND a.type IN {_SCALAR_TYPES} AND a.value = {v}"
    return (
        "("
        + " OR ".join(
            [
                *_maps_match("attributes", k, v),
                *_maps_match("resource", k, v),
                f"arrayExists({in_list}, scope_attributes)",
                f"arrayExists(e -> arrayExists({in_list}, e), events_attributes)",
                f"arrayExists(l -> arrayExists({in_list}, l), links_attributes)",
            ]
        )
        + ")"
    )


def _conform(table: pa.Table) -> pa.Table:
    """Results in the exact Arrow schema receivers produce (dictionary and fixed types normalised)."""
    arrays = []
    for spec in SPAN_SCHEMA:
        column = table.column(spec.name)
        if column.type != spec.type:  # most already match; a cast of each costs ~2 ms a lookup
            if pa.types.is_dictionary(column.type):
                column = column.cast(column.type.value_type)
            column = column.cast(spec.type)
        arrays.append(column)
    return pa.Table.from_arrays(arrays, schema=SPAN_SCHEMA)
