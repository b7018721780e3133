"""The spans table: its DDL, partitioning and numbered migrations. The column list itself lives in
`clew.core.model.COLUMNS`, which the insert and the reads share."""

from __future__ import annotations

from clew.core.model import COLUMNS, HISTORIC_COLUMNS, ORDER_COLUMNS
from clew.store.connection import Connection
from clew.store.migrations import Migration, modify_columns, rebuild, steps

SPANS_DDL = """
CREATE TABLE IF NOT EXISTS {{db}}.{{table}} (
{columns},
    {received},
    {tier},
    {received_index}
) ENGINE = MergeTree
PARTITION BY {partition}
ORDER BY {order}
SETTINGS index_granularity = 1024, non_replicated_deduplication_window = {window},
    {ingest_settings}
"""
# Spans sorted by hour of start, then by trace: the spans of a trace lie together, so a lookup reads one
# granule of each column per part whatever services the trace crossed, with no second copy of the
# rows (the `SELECT *` projection this replaced was half the bytes on disk), and time-range queries
# still narrow by hour through the primary key (bench/RESULTS.md 2026-11-30).
ORDER_KEY = "(tenant, toStartOfHour(start_time), trace_id)"
# By day of start (time-range queries prune on it) and by retention tier: the hour clew received the
# spans in while they are in the full-fidelity tier; once that hour was swept down to its sampled
# traces (or at once when tail sampling is off), the day clew received them in plus one second
# (`SETTLED`; no hour starts at :00:01). The retention component then drops or moves whole
# partitions instead of deleting rows, and the settled data of a day is one partition, so a trace
# lookup reads a handful of parts, not one per hour (bench/RESULTS.md).
# The day of start is clamped to [received - 8 days, received + 1 day]: a request of spans from 2,000
# different days would otherwise create 2,000 partitions (and parts) in one insert. Clamping moves
# such spans into a bounded set of partitions and changes nothing else: their times are kept, and
# queries still find them (each part's min/max of start_time prunes, not the partition name).
# (written as the engine normalises it, so that `system.tables` reads back the same text)
START_DAY = (
    "toDate(least(greatest(start_time, received_at - toIntervalDay(8)), received_at + toIntervalDay(1)))"
)
PARTITION_KEY = f"({START_DAY}, tier_hour)"
MAX_PARTITIONS_PER_INSERT = 10  # the days START_DAY admits, times one tier
TIER = "tier_hour DateTime('UTC') DEFAULT toStartOfHour(received_at)"
# `tier_hour` of settled spans: the day they were received in, plus a second to tell it from an hour
SETTLED = "toStartOfDay(received_at) + 1"

# When clew committed the span (its clock, not the sender's): the sampler finds new spans by it and the
# full-fidelity retention tier counts from it. Rows written before the column existed read their start.
RECEIVED = "received_at DateTime64(9, 'UTC') DEFAULT start_time CODEC(Delta, ZSTD(1))"
RECEIVED_INDEX = "INDEX idx_received received_at TYPE minmax GRANULARITY 1"

# A part's writer keeps a buffer of this size and a compressed one per column stream (~150 streams for
# the spans' maps and nested lists): at the engine's 1 MiB default that was ~250 MiB of a 100,000-span
# insert's ~400. 128 KiB blocks take ~175 MiB with the same bytes on disk (bench/RESULTS.md).
COMPRESS_BLOCK_BYTES = 128 * 1024
# A trace lookup reads one granule of every column of each part, and decompresses the whole block
# that holds it: at the engine's default (blocks of at least 64 KiB of column data) a lookup at 10M
# spans decompressed 6.8 MB; ending a block at the first granule past 16 KiB, 1.8 MB, and the lookup
# took ~12% less time for ~2-6% more bytes on disk (bench/RESULTS.md).
MIN_COMPRESS_BLOCK_BYTES = 16 * 1024
# Merges of parts of any size run vertically: the sort key's columns are merged first, then every
# other column is gathered alone in that order. The engine does so only from 131,072 rows; below, it
# merged every column at once, which cost ~30% more CPU a row merging parts of 20,000 spans (what a
# server receiving 40,000 spans/s commits twice a second): 6-8% of the whole ingest CPU there
# (bench/RESULTS.md, session 20).
VERTICAL_MERGE_MIN_ROWS = 1
# the table settings of a table that the ingest path writes (spans, logs)
INGEST_TABLE_SETTINGS = (
    f"max_compress_block_size = {COMPRESS_BLOCK_BYTES}, min_compress_block_size = {MIN_COMPRESS_BLOCK_BYTES}, "
    f"vertical_merge_algorithm_min_rows_to_activate = {VERTICAL_MERGE_MIN_ROWS}"
)

# How many recent inserts the engine remembers by token: a replayed log segment within that many
# inserts of its first commit is recognised (ingest/wal.py).
DEDUPLICATION_WINDOW = 1000

SELECT_COLUMNS = ", ".join(name for name, _, _ in COLUMNS)
# the columns a table of the spans' layout had before the order columns (migrations copy by them)
HISTORIC_NAMES = ", ".join([*(name for name, _, _ in HISTORIC_COLUMNS), "received_at", "tier_hour"])


def order_columns_ddl(table: str) -> list[str]:
    """Add the attribute-order columns to a table of the spans' layout (a no-op where present)."""
    return [
        f"ALTER TABLE {{db}}.{table} ADD COLUMN IF NOT EXISTS {name} {ch_type}"
        for name, ch_type, _ in ORDER_COLUMNS
    ]


# columns that had the engine's default codec (and the order columns, `LowCardinality`) until measured
# (bench/RESULTS.md, session 24)
RECODED_COLUMNS = (
    "kind",
    "status_code",
    "service_name",
    "resource_bool",
    "attributes_bool",
    "attributes_order",
    "resource_order",
)


def recoded_columns_ddl(table: str) -> list[str]:
    """Give a table of the spans' layout the measured codecs of `RECODED_COLUMNS` (spans and the sweep
    table must keep the same types: partitions move between them)."""
    return modify_columns(table, ((name, ch_type) for name, ch_type, _ in COLUMNS if name in RECODED_COLUMNS))


def ingest_settings_ddl(table: str) -> str:
    """`INGEST_TABLE_SETTINGS` for a table created before them."""
    return f"ALTER TABLE {{db}}.{table} MODIFY SETTING {INGEST_TABLE_SETTINGS}"


def spans_ddl(table: str = "spans", columns: list[tuple[str, str, object]] = HISTORIC_COLUMNS) -> str:
    """The spans table's layout with `columns` (with `{db}` left for the migration to fill); the
    migrations create it with the columns of their time and add the later ones."""
    return SPANS_DDL.format(
        columns=",\n".join(f"    {name} {ch_type}" for name, ch_type, _ in columns),
        received=RECEIVED,
        received_index=RECEIVED_INDEX,
        tier=TIER,
        partition=PARTITION_KEY,
        order=ORDER_KEY,
        window=DEDUPLICATION_WINDOW,
        ingest_settings=INGEST_TABLE_SETTINGS,
    ).replace("{table}", table)


# The layout of the first data directories: ordered by service and start, with a second, trace-ordered
# copy of every row (a projection) for lookups and a bloom filter on trace ids. Migration 3 rebuilds it.
_V1_PROJECTION = "PROJECTION by_trace (SELECT * ORDER BY trace_id)"
_V1_DDL = (
    spans_ddl()
    .replace(f"ORDER BY {ORDER_KEY}", "ORDER BY (tenant, service_name, start_time)")
    .replace(f"PARTITION BY {PARTITION_KEY}", "PARTITION BY (toDate(start_time), tier_hour)")
    .replace(
        RECEIVED_INDEX,
        f"INDEX idx_trace_id trace_id TYPE bloom_filter(0.001) GRANULARITY 1,\n    {RECEIVED_INDEX},\n    {_V1_PROJECTION}",
    )
)


# Each part keeps the distinct (tenant, service, span name, kind) of its rows: the service and operation
# lists (Jaeger's and Grafana's first requests) read these few rows instead of a column of every span
# (at 10M spans, services 49 -> 16 ms and operations 101 -> 16 ms; bench/RESULTS.md, session 27).
# Being part of each part, it is merged, dropped and moved with the spans, so it never lists a service
# whose spans are gone. Parts written before it existed are read from their rows.
NAMES_PROJECTION = (
    "PROJECTION IF NOT EXISTS names "
    "(SELECT tenant, service_name, name, kind GROUP BY tenant, service_name, name, kind)"
)


def names_projection_ddl(table: str) -> str:
    """`NAMES_PROJECTION` on a table of the spans' layout (partitions move only between tables with
    the same projections)."""
    return f"ALTER TABLE {{db}}.{table} ADD {NAMES_PROJECTION}"


MIGRATIONS: list[Migration] = steps(
    "spans",
    ("spans table", [_V1_DDL]),
    (
        # data directories from before each of these existed (and before migrations were recorded)
        "trace projection, received time, retention tier",
        [
            "ALTER TABLE {db}.spans ADD "
            + _V1_PROJECTION.replace("PROJECTION", "PROJECTION IF NOT EXISTS", 1),
            f"ALTER TABLE {{db}}.spans ADD COLUMN IF NOT EXISTS {RECEIVED}",
            f"ALTER TABLE {{db}}.spans ADD COLUMN IF NOT EXISTS {TIER}",
            "ALTER TABLE {db}.spans ADD " + RECEIVED_INDEX.replace("INDEX", "INDEX IF NOT EXISTS", 1),
        ],
    ),
    ("trace-ordered layout, measured codecs, bounded partitions", rebuild("spans", spans_ddl("spans_next"))),
    (
        "deduplication of replayed inserts",
        [
            f"ALTER TABLE {{db}}.spans MODIFY SETTING non_replicated_deduplication_window = {DEDUPLICATION_WINDOW}"
        ],
    ),
    ("attribute order as sent", order_columns_ddl("spans")),
    ("smaller compression blocks", [ingest_settings_ddl("spans")]),
    ("granule-sized compression blocks", [ingest_settings_ddl("spans")]),
    ("vertical merges of small parts", [ingest_settings_ddl("spans")]),
    ("codecs of the few-valued, boolean and attribute-order columns", recoded_columns_ddl("spans")),
    ("service and operation names of each part", [names_projection_ddl("spans")]),
)


def set_fsync(conn: Connection, db: str, on: bool) -> list[str]:
    """Make every MergeTree table of `db` fsync each part it writes (files, then the part and table
    directories) before an insert returns, or stop doing so; returns the tables changed. With it on,
    an insert that returned survives a power loss, and the rows it holds are the redacted ones."""
    tables: list[str] = (
        conn.query(
            "SELECT name FROM system.tables WHERE database = {db:String} AND engine LIKE '%MergeTree'",
            {"db": db},
        )
        .column("name")
        .to_pylist()
    )
    value = int(on)
    for table in tables:
        conn.command(
            f"ALTER TABLE {db}.`{table}` MODIFY SETTING "
            f"fsync_after_insert = {value}, fsync_part_directory = {value}"
        )
    return tables
