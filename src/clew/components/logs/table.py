"""The logs table and its insert: OTLP `ExportLogsServiceRequest`s flattened by the engine, as spans are.

A log record is one row: its times, its trace and span ids (zeros when it has none), severity, body,
attributes and resource in the spans' typed maps (so redaction and the attribute limits run on them
unchanged), the scope as the spans keep it. Ordered by tenant, service and time, which is what a
search by time and service reads; a bloom filter on the trace id finds a trace's logs without a
second copy of the rows. Text is searched by scanning the bodies of the time range; an n-gram
index is left out until measured, since its filters cost bytes on every record. Partitioned by day, with the day clamped around the time received as the
spans' is, so one request cannot create more than ten partitions whatever its dates; retention drops
whole partitions.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from clew.core.model import ATTRIBUTE_LIST, IDS, LC, TEXT, OtlpBatch, typed_map_columns
from clew.store.connection import Connection
from clew.store.migrations import modify_columns, steps
from clew.store.otlp_wire import (
    COMMON_PROTO,
    KV,
    attribute_list,
    compose_insert,
    nanos,
    service_name,
    typed_maps,
)
from clew.store.schema import DEDUPLICATION_WINDOW, INGEST_TABLE_SETTINGS, ingest_settings_ddl
from clew.store.spans import RECEIVED_SQL, insert_requests, wire_settings
from clew.store.transforms import Transforms

WIRE_PROTO = (
    """syntax = "proto3";
message Request { repeated ResourceLogs resource_logs = 1; }
message ResourceLogs { Resource resource = 1; repeated ScopeLogs scope_logs = 2; string schema_url = 3; }
message ScopeLogs { Scope scope = 1; repeated LogRecord log_records = 2; string schema_url = 3; }
message LogRecord {
  fixed64 time_unix_nano = 1; fixed64 observed_time_unix_nano = 11; int32 severity_number = 2;
  string severity_text = 3; AnyValue body = 5; repeated KeyValue attributes = 6;
  uint32 dropped_attributes_count = 7; fixed32 flags = 8; bytes trace_id = 9; bytes span_id = 10;
  string event_name = 12;
}
"""
    + COMMON_PROTO
)
_ANY = (
    "Tuple(value Enum8('none' = 0, 'string_value' = 1, 'bool_value' = 2, 'int_value' = 3, "
    "'double_value' = 4, 'array_value' = 5, 'kvlist_value' = 6, 'bytes_value' = 7), string_value String, "
    "bool_value Bool, int_value Int64, double_value Float64, array_value String, kvlist_value String, "
    "bytes_value String)"
)
STRUCTURE = (
    f"resource_logs Array(Tuple(resource Tuple(attributes {KV}, dropped_attributes_count UInt32), "
    f"scope_logs Array(Tuple(scope Tuple(name String, version String, attributes {KV}, "
    "dropped_attributes_count UInt32), log_records Array(Tuple(time_unix_nano UInt64, "
    f"observed_time_unix_nano UInt64, severity_number Int32, severity_text String, body {_ANY}, "
    f"attributes {KV}, dropped_attributes_count UInt32, flags UInt32, trace_id String, span_id String, "
    "event_name String)), schema_url String)), schema_url String))"
)
SOURCE = (
    "FROM {source}\n"
    "ARRAY JOIN resource_logs AS rl ARRAY JOIN rl.scope_logs AS sl ARRAY JOIN sl.log_records AS lr"
)
TYPE_SHIFT = 24  # receivers/otlp_logs.py: a structured body's kind, in the top byte of flags

TIME = "DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1))"
COLUMNS: list[tuple[str, str]] = [
    ("tenant", LC),
    ("timestamp", TIME),
    ("observed_timestamp", TIME),
    ("trace_id", f"FixedString(16) {IDS}"),
    ("span_id", f"FixedString(8) {IDS}"),
    ("flags", "UInt8"),
    ("severity_number", "UInt8"),
    ("severity_text", LC),
    ("service_name", LC),
    ("event_name", LC),
    ("body", f"String {TEXT}"),
    ("body_type", "UInt8"),  # the AnyValue field number it was sent as (1 text, 5 array, 6 map, ...)
    *((name, ch_type) for name, ch_type, _ in typed_map_columns("resource")),
    ("scope_name", LC),
    ("scope_version", LC),
    ("scope_attributes", f"{ATTRIBUTE_LIST} {TEXT}"),
    *((name, ch_type) for name, ch_type, _ in typed_map_columns("attributes")),
    ("dropped_attributes", "UInt32"),
]
NAMES = [name for name, _ in COLUMNS]

DAY = "toDate(least(greatest(timestamp, received_at - toIntervalDay(8)), received_at + toIntervalDay(1)))"
_COLUMNS_DDL = ",\n".join(f"    {name} {ch_type}" for name, ch_type in COLUMNS)
DDL = f"""
CREATE TABLE IF NOT EXISTS {{db}}.logs (
{_COLUMNS_DDL},
    received_at DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1)),
    INDEX idx_trace_id trace_id TYPE bloom_filter(0.001) GRANULARITY 1
) ENGINE = MergeTree
PARTITION BY {DAY}
ORDER BY (tenant, service_name, timestamp)
SETTINGS index_granularity = 8192, non_replicated_deduplication_window = {DEDUPLICATION_WINDOW},
    {INGEST_TABLE_SETTINGS}
"""
MIGRATIONS = steps(
    "logs",
    ("logs table", [DDL]),
    ("smaller compression blocks", [ingest_settings_ddl("logs")]),
    ("granule-sized compression blocks", [ingest_settings_ddl("logs")]),
    ("vertical merges of small parts", [ingest_settings_ddl("logs")]),
    ("compressed boolean attributes", modify_columns("logs", (c for c in COLUMNS if c[0].endswith("_bool")))),
)


def _expressions() -> dict[str, str]:
    res = "rl.resource.attributes"
    shifted = f"bitShiftRight(lr.flags, {TYPE_SHIFT})"
    body = (
        "multiIf(lr.body.value = 'string_value', lr.body.string_value, "
        "lr.body.value = 'int_value', toString(lr.body.int_value), "
        "lr.body.value = 'double_value', toString(lr.body.double_value), "
        "lr.body.value = 'bool_value', if(lr.body.bool_value, 'true', 'false'), '')"
    )
    exprs = {
        "tenant": "{tenant:String}",
        "timestamp": nanos("if(lr.time_unix_nano = 0, lr.observed_time_unix_nano, lr.time_unix_nano)"),
        "observed_timestamp": nanos("lr.observed_time_unix_nano"),
        "trace_id": "lr.trace_id",
        "span_id": "lr.span_id",
        "flags": "toUInt8(bitAnd(lr.flags, 255))",
        # OTLP's SeverityNumber is 0-24; anything else is unspecified (0), not a level above FATAL
        "severity_number": "toUInt8(if(lr.severity_number BETWEEN 0 AND 24, lr.severity_number, 0))",
        "severity_text": "lr.severity_text",
        "service_name": service_name(res),
        "event_name": "lr.event_name",
        "body": body,
        "body_type": f"toUInt8(if({shifted} > 0, {shifted}, CAST(lr.body.value, 'Int8')))",
        "scope_name": "sl.scope.name",
        "scope_version": "sl.scope.version",
        "scope_attributes": attribute_list("sl.scope.attributes"),
        "dropped_attributes": "lr.dropped_attributes_count",
    }
    for kind, expr in typed_maps(res).items():
        exprs[f"resource_{kind}"] = expr
    for kind, expr in typed_maps("lr.attributes").items():
        exprs[f"attributes_{kind}"] = expr
    return exprs


class LogWriter:
    """Log records into the logs table, one insert per batch with the components' log stages inside
    (redaction, attribute limits), named by the log's token so a replay stores each record once."""

    def __init__(
        self,
        conn: Connection,
        db: str,
        stage: Transforms | None = None,
        clock: Callable[[], int] = time.time_ns,
        stored: Callable[[str], None] | None = None,
    ) -> None:
        self.conn = conn
        stage = stage or Transforms({})
        self._sql = compose_insert(
            f"{db}.logs", NAMES, _expressions(), SOURCE, stage, {"received_at": RECEIVED_SQL}
        )
        self._params = dict(stage.params)
        self._settings = wire_settings(WIRE_PROTO, "Request")
        self._clock = clock
        self._lock = threading.Lock()
        self._last = 0
        self.records = 0
        self.stored = stored  # told the tenant of each insert once it is in

    def write(self, batch: OtlpBatch, token: str | None = None) -> None:
        if not batch.spans:
            return
        with self._lock:
            received = self._last = max(self._clock(), self._last + 1)
        insert_requests(
            self.conn,
            self._sql,
            STRUCTURE,
            self._settings,
            batch,
            token,
            {**self._params, "received": received},
        )
        with self._lock:
            self.records += batch.spans
        if self.stored is not None:
            self.stored(batch.tenant)
