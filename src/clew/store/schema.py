"""The spans table: its DDL, partitioning and numbered migrations. The column list itself lives in
`clew.core.model.COLUMNS`, which the insert and the reads share."""

from __future__ import annotations

import logging

from clew.core.model import COLUMNS
from clew.store.connection import Connection
from clew.store.migrations import Migration, steps

log = logging.getLogger(__name__)

SPANS_DDL = """
CREATE TABLE IF NOT EXISTS {{db}}.spans (
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
# (`SETTLED`; no hour starts at :00:01). The retention component then drops or moves whole
# partitions instead of deleting rows, and the settled data of a day is one partition, so a trace
# lookup reads a handful of parts, not one per hour (bench/RESULTS.md).
PARTITION_KEY = "(toDate(start_time), tier_hour)"
TIER = "tier_hour DateTime('UTC') DEFAULT toStartOfHour(received_at)"
# `tier_hour` of settled spans: the day they were received in, plus a second to tell it from an hour
SETTLED = "toStartOfDay(received_at) + 1"

# Every span a second time, ordered by trace: a trace lookup reads one granule instead of one per
# service the trace went through (bench/RESULTS.md). The bloom filter serves parts written before it.
TRACE_PROJECTION = "PROJECTION by_trace (SELECT * ORDER BY trace_id)"

# When clew committed the span (its clock, not the sender's): the sampler finds new spans by it and the
# full-fidelity retention tier counts from it. Rows written before the column existed read their start.
RECEIVED = "received_at DateTime64(9, 'UTC') DEFAULT start_time CODEC(Delta, ZSTD(1))"
RECEIVED_INDEX = "INDEX idx_received received_at TYPE minmax GRANULARITY 1"

SELECT_COLUMNS = ", ".join(name for name, _, _ in COLUMNS)


def _spans_ddl() -> str:
    return SPANS_DDL.format(
        columns=",\n".join(f"    {name} {ch_type}" for name, ch_type, _ in COLUMNS),
        received=RECEIVED,
        received_index=RECEIVED_INDEX,
        tier=TIER,
        projection=TRACE_PROJECTION,
        partition=PARTITION_KEY,
    )


MIGRATIONS: list[Migration] = steps(
    "spans",
    ("spans table", [_spans_ddl()]),
    (
        # data directories from before each of these existed (and before migrations were recorded)
        "trace projection, received time, retention tier",
        [
            "ALTER TABLE {db}.spans ADD "
            + TRACE_PROJECTION.replace("PROJECTION", "PROJECTION IF NOT EXISTS", 1),
            f"ALTER TABLE {{db}}.spans ADD COLUMN IF NOT EXISTS {RECEIVED}",
            f"ALTER TABLE {{db}}.spans ADD COLUMN IF NOT EXISTS {TIER}",
            "ALTER TABLE {db}.spans ADD " + RECEIVED_INDEX.replace("INDEX", "INDEX IF NOT EXISTS", 1),
        ],
    ),
)


def tiered(conn: Connection, db: str) -> bool:
    """Whether the spans table has the current partition key (day of start, retention tier); data
    directories of early development versions do not, and get no tiered retention."""
    key = (
        conn.query(
            "SELECT partition_key FROM system.tables WHERE database = {db:String} AND name = 'spans'",
            {"db": db},
        )
        .column(0)[0]
        .as_py()
    )
    if str(key).replace(" ", "") == PARTITION_KEY.replace(" ", ""):
        return True
    log.warning(  # pragma: no cover - data directories of earlier development versions
        "spans in %s are partitioned by %s, from before the current retention tiers; they stay until "
        "deleted. Export and re-import them to get tiered retention.",
        db,
        key,
    )
    return False
