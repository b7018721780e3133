"""The spans schema and its SQL, written once for ClickHouse: the same text runs on chdb and on a server."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pyarrow as pa

from clew.model import COLUMNS, DEFAULT_TENANT, SPAN_SCHEMA, OtlpBatch, SpanBatch
from clew.store.base import Connection
from clew.store.otlp_wire import STRUCTURE, WIRE_MESSAGE, WIRE_PROTO, insert_select, length_delimited

SPANS_DDL = """
CREATE TABLE IF NOT EXISTS {db}.spans (
{columns},
    INDEX idx_trace_id trace_id TYPE bloom_filter(0.001) GRANULARITY 1
) ENGINE = MergeTree
PARTITION BY toDate(start_time)
ORDER BY (tenant, service_name, start_time)
SETTINGS index_granularity = 8192
"""

# A request may carry spans from many days (imports, clock skew); never refuse it for that.
INSERT_SETTINGS: dict[str, object] = {
    "max_partitions_per_insert_block": 0,
    "input_format_protobuf_oneof_presence": 1,
}
SELECT_COLUMNS = ", ".join(name for name, _, _ in COLUMNS)


class ClickHouseStore:
    """Spans in one MergeTree table; every insert is one part, so a committed batch is all or nothing."""

    def __init__(self, conn: Connection, database: str = "clew") -> None:
        self.conn = conn
        self.db = database
        conn.command(f"CREATE DATABASE IF NOT EXISTS {database}")
        columns = ",\n".join(f"    {name} {ch_type}" for name, ch_type, _ in COLUMNS)
        conn.command(SPANS_DDL.format(db=database, columns=columns))
        schema = conn.format_schema("clew_otlp.proto", WIRE_PROTO)
        self._insert_settings = {**INSERT_SETTINGS, "format_schema": f"{schema}:{WIRE_MESSAGE}"}
        self._insert_sql = insert_select(f"{database}.spans")

    def write(self, batch: OtlpBatch) -> None:
        """One insert, so one part: the engine parses the requests and flattens them to rows."""
        if batch.spans:
            self.conn.insert_formatted(
                self._insert_sql,
                "Protobuf",
                STRUCTURE,
                length_delimited(list(batch.payloads)),
                self._insert_settings,
                {"tenant": batch.tenant},
            )

    def get_trace(self, trace_id: bytes, tenant: str = DEFAULT_TENANT) -> SpanBatch:
        table = self.conn.query(
            f"SELECT {SELECT_COLUMNS} FROM {self.db}.spans "
            "WHERE trace_id = unhex({trace_id:String}) AND tenant = {tenant:String} "
            "ORDER BY start_time, span_id",
            {"trace_id": trace_id.hex(), "tenant": tenant},
        )
        return SpanBatch(_conform(table))

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

    def close(self) -> None:
        self.conn.close()


def _conform(table: pa.Table) -> pa.Table:
    """Results in the exact Arrow schema receivers produce (dictionary and fixed types normalised)."""
    arrays = []
    for field in SPAN_SCHEMA:
        column = table.column(field.name)
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        arrays.append(column.cast(field.type))
    return pa.Table.from_arrays(arrays, schema=SPAN_SCHEMA)


def open_embedded(data_dir: str | Path) -> ClickHouseStore:
    from clew.store.chdb_connection import ChdbConnection

    return ClickHouseStore(ChdbConnection(data_dir))
