"""RED metrics (rate, errors, duration) from every span, kept per minute by a materialized view.

The view runs inside each insert, on every span as it arrives, so the figures stay exact whatever
sampling later removes from the spans table. Each minute keeps per (service, operation, kind,
status): calls, errors, the duration sum, cumulative histogram buckets, a t-digest for quantiles and
exemplars (the slowest trace of the minute, and the latest error trace).
"""

from __future__ import annotations

from dataclasses import dataclass

from clew.core.model import DEFAULT_TENANT
from clew.store.connection import Connection
from clew.store.migrations import rebuild, steps

# Prometheus-style bucket bounds, in seconds
BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
QUANTILES = (0.5, 0.95, 0.99)
_BOUNDS_NS = "[" + ", ".join(str(int(b * 1e9)) for b in BOUNDS) + "]"
_Q = ", ".join(str(q) for q in QUANTILES)

TABLE_DDL = f"""
CREATE TABLE IF NOT EXISTS {{db}}.red_minutes (
    tenant LowCardinality(String),
    minute DateTime('UTC'),
    service LowCardinality(String),
    operation LowCardinality(String),
    kind UInt8,
    status UInt8,
    calls SimpleAggregateFunction(sum, UInt64),
    errors SimpleAggregateFunction(sum, UInt64),
    duration_sum SimpleAggregateFunction(sum, UInt64),
    buckets AggregateFunction(sumForEach, Array(UInt64)),
    digest AggregateFunction(quantilesTDigest({_Q}), UInt64),
    slowest AggregateFunction(argMax, FixedString(16), UInt64),
    slowest_duration SimpleAggregateFunction(max, UInt64),
    last_error AggregateFunction(argMax, FixedString(16), DateTime64(9, 'UTC'))
) ENGINE = AggregatingMergeTree
PARTITION BY toDate(minute)
ORDER BY (tenant, service, minute, operation, kind, status)
"""

VIEW_DDL = f"""
CREATE MATERIALIZED VIEW IF NOT EXISTS {{db}}.red_minutes_mv TO {{db}}.red_minutes AS
SELECT
    tenant,
    toStartOfMinute(start_time) AS minute,
    service_name AS service,
    name AS operation,
    kind,
    status_code AS status,
    count() AS calls,
    countIf(status_code = 2) AS errors,
    sum(duration) AS duration_sum,
    sumForEachState(arrayMap(b -> toUInt64(duration <= b), {_BOUNDS_NS})) AS buckets,
    quantilesTDigestState({_Q})(duration) AS digest,
    argMaxState(trace_id, duration) AS slowest,
    max(duration) AS slowest_duration,
    argMaxStateIf(trace_id, start_time, status_code = 2) AS last_error
FROM {{db}}.spans
GROUP BY tenant, minute, service, operation, kind, status
"""


@dataclass(frozen=True, slots=True)
class Series:
    """One (service, operation, kind, status) over a time range."""

    service: str
    operation: str
    kind: int
    status: int
    calls: int
    errors: int
    duration_sum: int
    buckets: list[int]  # cumulative counts for BOUNDS, then +Inf = calls
    slowest_trace: bytes
    slowest_duration: int
    last_error_trace: bytes


@dataclass(frozen=True, slots=True)
class Point:
    time: int  # seconds, start of the step
    calls: int
    errors: int
    quantiles: list[float]  # nanoseconds, for QUANTILES


@dataclass(frozen=True, slots=True)
class GroupedPoint:
    """One step of one service (and operation, or ''): Jaeger Monitor's series."""

    service: str
    operation: str
    time: int  # seconds
    calls: int
    errors: int
    latency: float  # ns, the quantile asked for


def _steps(
    start: int, end: int, step: int, tenant: str, kind: int | None
) -> tuple[list[str], dict[str, object]]:
    """Conditions and parameters shared by the timelines: tenant, minutes in [start, end], span kind."""
    where = [
        "tenant = {tenant:String}",
        "minute >= toDateTime({start:Int64}, 'UTC')",
        "minute <= toDateTime({end:Int64}, 'UTC')",
    ]
    params: dict[str, object] = {"tenant": tenant, "start": start // 10**9, "end": end // 10**9, "step": step}
    if kind is not None:
        where.append("kind = {kind:UInt8}")
        params["kind"] = kind
    return where, params


# One partition: minutes by day made one part per day a request's spans started on (2,000 for the
# request of spans from 2,000 days); the primary key narrows by service and minute all the same.
MIGRATIONS = steps(
    "red",
    ("per-minute RED table", [TABLE_DDL]),
    ("materialized view over spans", [VIEW_DDL]),
    (
        "one partition",
        rebuild(
            "red_minutes",
            TABLE_DDL.replace("red_minutes (", "red_minutes_next (").replace(
                "PARTITION BY toDate(minute)", "PARTITION BY tuple()"
            ),
        ),
    ),
    (
        # what the view derived from a replayed insert is dropped with it (ingest/wal.py)
        "deduplication of replayed inserts",
        ["ALTER TABLE {db}.red_minutes MODIFY SETTING non_replicated_deduplication_window = 1000"],
    ),
)


class RedMetrics:
    def __init__(self, conn: Connection, db: str) -> None:
        self.conn, self.db = conn, db

    def tenants(self) -> list[str]:
        table = self.conn.query(f"SELECT DISTINCT toString(tenant) FROM {self.db}.red_minutes ORDER BY 1")
        return [str(t) for t in table.column(0).to_pylist()]

    def series(
        self, start: int | None = None, end: int | None = None, tenant: str = DEFAULT_TENANT
    ) -> list[Series]:
        """Totals per series; without a range, since the data began (counters for /metrics)."""
        where = "tenant = {tenant:String}"
        params: dict[str, object] = {"tenant": tenant}
        if start is not None and end is not None:
            where += (
                " AND minute >= toDateTime({start:Int64}, 'UTC') AND minute <= toDateTime({end:Int64}, 'UTC')"
            )
            params.update(start=start // 10**9, end=end // 10**9)
        table = self.conn.query(
            "SELECT toString(service) AS service, toString(operation) AS operation, kind, status, "
            "sum(calls) AS calls, sum(errors) AS errors, sum(duration_sum) AS duration_sum, "
            "sumForEachMerge(buckets) AS buckets, argMaxMerge(slowest) AS slowest, "
            "max(slowest_duration) AS slowest_duration, argMaxMerge(last_error) AS last_error "
            f"FROM {self.db}.red_minutes WHERE {where} "
            "GROUP BY service, operation, kind, status ORDER BY service, operation, kind, status",
            params,
        )
        rows = table.to_pylist()
        return [
            Series(
                r["service"],
                r["operation"],
                int(r["kind"]),
                int(r["status"]),
                int(r["calls"]),
                int(r["errors"]),
                int(r["duration_sum"]),
                [int(b) for b in r["buckets"]],
                bytes(r["slowest"]),
                int(r["slowest_duration"]),
                bytes(r["last_error"]),
            )  # fmt: skip
            for r in rows
        ]

    def timeline(
        self,
        start: int,
        end: int,
        step: int,
        service: str | None = None,
        operation: str | None = None,
        kind: int | None = None,
        tenant: str = DEFAULT_TENANT,
    ) -> list[Point]:
        """Calls, errors and quantiles per `step` seconds (a multiple of a minute) in [start, end] ns."""
        where, params = _steps(start, end, step, tenant, kind)
        if service:
            where.append("service = {service:String}")
            params["service"] = service
        if operation:
            where.append("operation = {operation:String}")
            params["operation"] = operation
        table = self.conn.query(
            "SELECT intDiv(toUnixTimestamp(minute), {step:UInt32}) * {step:UInt32} AS t, "
            f"sum(calls) AS calls, sum(errors) AS errors, quantilesTDigestMerge({_Q})(digest) AS q "
            f"FROM {self.db}.red_minutes WHERE {' AND '.join(where)} GROUP BY t ORDER BY t",
            params,
        )
        return [
            Point(int(r["t"]), int(r["calls"]), int(r["errors"]), [float(x) for x in r["q"]])
            for r in table.to_pylist()
        ]

    def grouped(
        self,
        start: int,
        end: int,
        step: int,
        services: list[str],
        kind: int | None,
        by_operation: bool,
        quantile: float,
        tenant: str = DEFAULT_TENANT,
    ) -> list[GroupedPoint]:
        """Per service (and operation) and step: calls, errors and one latency quantile (ns)."""
        where, params = _steps(start, end, step, tenant, kind)
        where.append("has({services:Array(String)}, toString(service))")
        params["services"] = list(services)
        operation = "toString(operation)" if by_operation else "''"
        table = self.conn.query(
            f"SELECT toString(service) AS service, {operation} AS operation, "
            "intDiv(toUnixTimestamp(minute), {step:UInt32}) * {step:UInt32} AS t, "
            f"sum(calls) AS calls, sum(errors) AS errors, "
            f"quantilesTDigestMerge({_Q})(digest) AS q "
            f"FROM {self.db}.red_minutes WHERE {' AND '.join(where)} "
            "GROUP BY service, operation, t ORDER BY service, operation, t",
            params,
        )
        index = min(range(len(QUANTILES)), key=lambda i: abs(QUANTILES[i] - quantile))
        return [
            GroupedPoint(
                str(r["service"]),
                str(r["operation"]),
                int(r["t"]),
                int(r["calls"]),
                int(r["errors"]),
                float(r["q"][index]),
            )
            for r in table.to_pylist()
        ]
