"""The spans schema and its SQL, written once for ClickHouse: the same text runs on chdb and on a server."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pyarrow as pa

from clew.model import COLUMNS, DEFAULT_TENANT, KIND_CODES, SPAN_SCHEMA, STATUS_CODES, OtlpBatch, SpanBatch
from clew.pipeline.enrich import EnrichConfig
from clew.pipeline.enrich import transforms as enrich_transforms
from clew.pipeline.redact import RedactionConfig, hash_key
from clew.pipeline.redact import transforms as redact_transforms
from clew.pipeline.sampling import SamplingConfig
from clew.pipeline.transforms import compose
from clew.store.base import Connection, SearchRequest, SearchResult, TraceQuery
from clew.store.completeness import Completeness
from clew.store.dependencies import DependencyGraph
from clew.store.otlp_wire import STRUCTURE, WIRE_MESSAGE, WIRE_PROTO, insert_select, length_delimited
from clew.store.processed import ProcessedScan
from clew.store.red import RedMetrics
from clew.store.sampling import SETTLED, SamplingStore
from clew.store.search import Searcher, trace_ids_in
from clew.store.servicegraph import ServiceGraph

SPANS_DDL = """
CREATE TABLE IF NOT EXISTS {db}.spans (
{columns},
    {received},
    {tier},
    INDEX idx_trace_id trace_id TYPE bloom_filter(0.001) GRANULARITY 1,
    {received_index},
    {projection}
) ENGINE = MergeTree
PARTITION BY {partition}
ORDER BY (tenant, service_name, start_time)
SETTINGS index_granularity = 1024
"""
# By day of start (time-range queries prune on it) and by retention tier: the hour clew received the
# spans in while they are in the full-fidelity tier; once that hour was swept down to its sampled
# traces (or at once when tail sampling is off), the day clew received them in plus one second
# (store/sampling.py `SETTLED`; no hour starts at :00:01). The tiers then drop or move whole
# partitions instead of deleting rows (store/sampling.py), and the settled data of a day is one
# partition, so a trace lookup reads a handful of parts, not one per hour (bench/RESULTS.md).
PARTITION_KEY = "(toDate(start_time), tier_hour)"
TIER = "tier_hour DateTime('UTC') DEFAULT toStartOfHour(received_at)"

# Every span a second time, ordered by trace: a trace lookup reads one granule instead of one per
# service the trace went through (bench/RESULTS.md). The bloom filter serves parts written before it.
TRACE_PROJECTION = "PROJECTION by_trace (SELECT * ORDER BY trace_id)"

# When clew committed the span (its clock, not the sender's): the sampler finds new spans by it and the
# full-fidelity retention tier counts from it. Rows written before the column existed read their start.
RECEIVED = "received_at DateTime64(9, 'UTC') DEFAULT start_time CODEC(Delta, ZSTD(1))"
RECEIVED_INDEX = "INDEX idx_received received_at TYPE minmax GRANULARITY 1"

# A request may carry spans from many days (imports, clock skew); never refuse it for that.
INSERT_SETTINGS: dict[str, object] = {
    "max_partitions_per_insert_block": 0,
    "input_format_protobuf_oneof_presence": 1,
}
SELECT_COLUMNS = ", ".join(name for name, _, _ in COLUMNS)


class ClickHouseStore:
    """Spans in one MergeTree table; every insert is one part, so a committed batch is all or nothing."""

    def __init__(
        self,
        conn: Connection,
        database: str = "clew",
        redaction: RedactionConfig | None = None,
        hash_key: tuple[int, int] = (0, 0),
        enrich: EnrichConfig | None = None,
        clock: Callable[[], int] = time.time_ns,
        sampling: SamplingConfig | None = None,
    ) -> None:
        self.conn = conn
        self.db = database
        self._key_params = {"rk0": hash_key[0], "rk1": hash_key[1]}
        conn.command(f"CREATE DATABASE IF NOT EXISTS {database}")
        columns = ",\n".join(f"    {name} {ch_type}" for name, ch_type, _ in COLUMNS)
        conn.command(
            SPANS_DDL.format(
                db=database,
                columns=columns,
                received=RECEIVED,
                received_index=RECEIVED_INDEX,
                tier=TIER,
                projection=TRACE_PROJECTION,
                partition=PARTITION_KEY,
            )
        )
        for addition in (  # data directories from before each was added
            TRACE_PROJECTION.replace("PROJECTION", "PROJECTION IF NOT EXISTS", 1),
            f"COLUMN IF NOT EXISTS {RECEIVED}",
            f"COLUMN IF NOT EXISTS {TIER}",
            RECEIVED_INDEX.replace("INDEX", "INDEX IF NOT EXISTS", 1),
        ):
            conn.command(f"ALTER TABLE {database}.spans ADD {addition}")
        schema = conn.format_schema("clew_otlp.proto", WIRE_PROTO)
        self._insert_settings = {**INSERT_SETTINGS, "format_schema": f"{schema}:{WIRE_MESSAGE}"}
        # the pipeline's processors, in order: enrichment and name templates, then redaction
        pipeline = compose(
            enrich_transforms(enrich or EnrichConfig()), redact_transforms(redaction or RedactionConfig())
        )
        received = "fromUnixTimestamp64Nano({received:Int64}, 'UTC')"
        sampled = (sampling or SamplingConfig()).enabled  # without tail sampling nothing is swept
        tier = f"toStartOfHour({received})" if sampled else SETTLED.replace("received_at", received)
        self._insert_sql = insert_select(
            f"{database}.spans", pipeline, {"received_at": received, "tier_hour": tier}
        )
        self._clock = clock
        self._received_lock = threading.Lock()
        self._last_received = 0
        self._until = 0
        self._inflight: set[int] = set()
        self._graph = DependencyGraph(conn, database)
        self.red = RedMetrics(conn, database)
        self.completeness = Completeness(conn, database)
        self.servicegraph = ServiceGraph(conn, database)
        self.processed = ProcessedScan(
            conn,
            database,
            self.received_until,
            (redaction or RedactionConfig()).enabled,
            (enrich or EnrichConfig()).normalize_names,
        )
        key = (
            conn.query(
                "SELECT partition_key FROM system.tables WHERE database = {db:String} AND name = 'spans'",
                {"db": database},
            )
            .column(0)[0]
            .as_py()
        )
        hourly = key.replace(" ", "") == PARTITION_KEY.replace(" ", "")
        if not hourly:  # pragma: no cover - data directories of earlier development versions
            print(
                f"clew: spans in {database} are partitioned by {key}, from before the current retention tiers; "
                "they stay until deleted. Export and re-import them to get tiered retention.",
                file=sys.stderr,
            )
        self.sampling = SamplingStore(
            conn, database, self.received_until, self._graph, (sampling or SamplingConfig()).policies, hourly
        )

    def write(self, batch: OtlpBatch) -> None:
        """One insert, so one part: the engine parses the requests and flattens them to rows."""
        if not batch.spans:
            return
        with self._received_lock:  # strictly increasing and after any `received_until` handed out
            received = self._last_received = max(self._clock(), self._last_received + 1, self._until + 1)
            self._inflight.add(received)
        try:
            self.conn.insert_formatted(
                self._insert_sql,
                "Protobuf",
                STRUCTURE,
                length_delimited(list(batch.payloads)),
                self._insert_settings,
                {"tenant": batch.tenant, "received": received, **self._key_params},
            )
        finally:
            with self._received_lock:
                self._inflight.discard(received)

    def received_until(self) -> int:
        """Every span received at or before this time (ns, the store's clock) is committed or refused."""
        with self._received_lock:
            now = max(self._clock(), self._last_received)
            self._until = max(self._until, min([now, *(r - 1 for r in self._inflight)]))
            return self._until

    def get_trace(self, trace_id: bytes, tenant: str = DEFAULT_TENANT) -> SpanBatch:
        return self.get_traces([trace_id], tenant)

    def get_traces(self, trace_ids: list[bytes], tenant: str = DEFAULT_TENANT) -> SpanBatch:
        ids_sql, ids_params = trace_ids_in(trace_ids)
        table = self.conn.query(
            f"SELECT {SELECT_COLUMNS} FROM {self.db}.spans "
            f"WHERE {ids_sql} AND tenant = {{tenant:String}} "
            # one granule of every column: mapping the files beats a read per column (bench/RESULTS.md)
            "SETTINGS local_filesystem_read_method = 'mmap', min_bytes_to_use_mmap_io = 1",
            {**ids_params, "tenant": tenant},
        )
        # sorted here: an ORDER BY in the statement cost ~2 ms of a ~20 ms lookup
        order = [("trace_id", "ascending"), ("start_time", "ascending"), ("span_id", "ascending")]
        return SpanBatch(_conform(table).sort_by(order))

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

    def dependencies(self, start: int, end: int, tenant: str = DEFAULT_TENANT) -> list[tuple[str, str, int]]:
        return self._graph.dependencies(start, end, tenant)

    def services(self, tenant: str = DEFAULT_TENANT) -> list[str]:
        table = self.conn.query(
            f"SELECT DISTINCT service_name FROM {self.db}.spans WHERE tenant = {{tenant:String}} "
            "ORDER BY service_name",
            {"tenant": tenant},
        )
        return [str(s) for s in table.column(0).to_pylist()]

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

    def span_count(self, tenant: str | None = None) -> int:
        if tenant is None:
            table = self.conn.query(f"SELECT count() FROM {self.db}.spans")
        else:
            table = self.conn.query(
                f"SELECT count() FROM {self.db}.spans WHERE tenant = {{tenant:String}}", {"tenant": tenant}
            )
        return int(table.column(0)[0].as_py())

    def purge(self, before: datetime) -> None:
        """Drop spans that started before `before`; whole days go as partitions, cheaply."""
        self.conn.command(
            f"ALTER TABLE {self.db}.spans DELETE WHERE start_time < fromUnixTimestamp64Nano({{ns:Int64}}) "
            "SETTINGS mutations_sync = 1",
            {"ns": int(before.timestamp() * 1_000_000_000)},
        )
        self._graph.forget()

    def close(self) -> None:
        self.conn.close()


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
    for field in SPAN_SCHEMA:
        column = table.column(field.name)
        if column.type != field.type:  # most already match; a cast of each costs ~2 ms a lookup
            if pa.types.is_dictionary(column.type):
                column = column.cast(column.type.value_type)
            column = column.cast(field.type)
        arrays.append(column)
    return pa.Table.from_arrays(arrays, schema=SPAN_SCHEMA)


def open_embedded(
    data_dir: str | Path,
    redaction: RedactionConfig | None = None,
    enrich: EnrichConfig | None = None,
    clock: Callable[[], int] = time.time_ns,
    sampling: SamplingConfig | None = None,
) -> ClickHouseStore:
    from clew.store.chdb_connection import ChdbConnection

    connection = ChdbConnection(data_dir)
    return ClickHouseStore(
        connection,
        redaction=redaction,
        hash_key=hash_key(Path(data_dir)),
        enrich=enrich,
        clock=clock,
        sampling=sampling,
    )
