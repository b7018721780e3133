"""Logs joined to traces: OTLP log records stored beside the spans, found by trace and by search.

Records come in through the spans' way (receivers/otlp_logs.py, the write-ahead log and its
committer, acknowledged alike) and are written by `LogWriter` (table.py) with the components' log
stages inside the insert: redaction's detectors over bodies and attributes, the tenant's attribute
limits. This component owns the table, its retention (whole days, after `[logs] retention`, the
spans' retention period unless set) and the read routes:

- `GET /api/v1/traces/{traceId}/logs`: the trace's records, oldest first;
- `GET /api/v1/logs?q=&start=&end=&limit=`: a search (search.py), newest first;
- `GET /api/v1/logs/volume?q=&start=&end=&step=`: how many records match, per step and level.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from clew.components.base import BaseComponent, Context
from clew.components.http import tenant, time_range_ns, trace_id_param
from clew.components.logs.search import LOG_COLUMNS, MAX_LIMIT, MAX_TRACE_LOGS, parse_query, to_json
from clew.components.logs.table import MIGRATIONS, LogWriter
from clew.core.durations import DurationError, parse_duration
from clew.core.errors import BadRequest, ConfigError
from clew.core.telemetry import Metric, Sample
from clew.store.migrations import Migration
from clew.store.transforms import Transforms

__all__ = ["Logs", "LogsConfig", "LogWriter"]

SECOND = 10**9
MAX_BUCKETS = 1000  # of a volume answer
# a record's level by its severity number (OpenTelemetry's ranges of four); "unset" for 0
LEVEL_SQL = (
    "multiIf(severity_number = 0, 'unset', severity_number <= 4, 'trace', severity_number <= 8, 'debug', "
    "severity_number <= 12, 'info', severity_number <= 16, 'warn', severity_number <= 20, 'error', 'fatal')"
)
_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "unset"]


def _level_order(item: tuple[str, list[int]]) -> int:
    return _LEVELS.index(item[0]) if item[0] in _LEVELS else len(_LEVELS)


def _matching(conditions: list[str]) -> str:
    """The WHERE of a search: the caller's tenant, the time range, the query's conditions."""
    return " AND ".join(
        [
            "tenant = {tenant:String}",
            "timestamp >= fromUnixTimestamp64Nano({start:Int64}, 'UTC')",
            "timestamp <= fromUnixTimestamp64Nano({end:Int64}, 'UTC')",
            *conditions,
        ]
    )


# A tenant found without any log records is not looked up again for this long: a trace's view then
# skips the logs query (~5-10 ms of a 20 ms lookup). Records this instance stores count at once;
# another instance's first records for a tenant show within this time.
NO_LOGS_RECHECK_S = 10.0
_MAX_REMEMBERED = 10_000  # tenants remembered without logs (a header can name any tenant)

STORED = Metric("clew_logs_records", "counter", "Log records committed to the store.")
DROPPED = Metric("clew_logs_dropped_partitions", "counter", "Days of logs dropped past their retention.")


@dataclass(frozen=True, slots=True)
class LogsConfig:
    retention: int | None = None  # ns; None: the spans' retention period
    interval: int = 60 * SECOND

    @classmethod
    def from_toml(cls, doc: dict[str, Any]) -> LogsConfig:
        """`[logs]`: `retention` ("14d"), how long records stay; `interval`, how often it is applied."""
        values: dict[str, int] = {}
        for key, value in doc.items():
            if key not in ("retention", "interval"):
                raise ConfigError(f"[logs]: unknown setting {key!r}")
            try:
                values[key] = parse_duration(str(value), allow_days=True)
            except DurationError as exc:
                raise ConfigError(f"[logs] {key}: {exc}") from None
            if values[key] <= 0:
                raise ConfigError(f"[logs] {key} must be positive, got {value!r}")
        return cls(**values)


class Logs(BaseComponent):
    name = "logs"
    telemetry = (STORED, DROPPED)

    def __init__(self, ctx: Context, config: LogsConfig, span_retention: int) -> None:
        self.conn, self.db, self.clock = ctx.conn, ctx.db, ctx.clock
        self.config = config
        self.retention = config.retention if config.retention is not None else span_retention
        self.interval = config.interval
        self.writer: LogWriter | None = None
        self.dropped_partitions = 0
        self._no_logs: dict[str, float] = {}  # tenant -> when it was found to have no records
        self._with_logs: set[str] = set()
        self._lock = threading.Lock()

    def migrations(self) -> Sequence[Migration]:
        return MIGRATIONS

    def open_writer(self, stage: Transforms) -> LogWriter:
        """The writer, with the other components' log stages composed into its insert."""
        self.writer = LogWriter(self.conn, self.db, stage, self.clock, stored=self._stored)
        return self.writer

    # --- reads -------------------------------------------------------------------------------

    def has_logs(self, tenant: str) -> bool:
        """Whether the tenant may have log records (see `NO_LOGS_RECHECK_S`)."""
        if tenant in self._with_logs:
            return True
        now = time.monotonic()
        with self._lock:
            checked = self._no_logs.get(tenant)
        if checked is not None and now - checked < NO_LOGS_RECHECK_S:
            return False
        found = self.conn.query(
            f"SELECT 1 FROM {self.db}.logs WHERE tenant = {{tenant:String}} LIMIT 1", {"tenant": tenant}
        ).num_rows
        with self._lock:
            if found:
                self._with_logs.add(tenant)
                self._no_logs.pop(tenant, None)
            else:
                if len(self._no_logs) >= _MAX_REMEMBERED:
                    self._no_logs.clear()
                self._no_logs[tenant] = now
        return bool(found)

    def _stored(self, tenant: str) -> None:
        """Records this instance stored count at once (another instance's within the recheck)."""
        with self._lock:
            self._with_logs.add(tenant)

    def trace_logs(self, tenant: str, trace_id: bytes) -> dict[str, Any]:
        if not any(trace_id) or not self.has_logs(tenant):  # no trace, or no records at all
            return {"traceId": trace_id.hex(), "logs": [], "truncated": False}
        table = self.conn.query(
            f"SELECT {LOG_COLUMNS} FROM {self.db}.logs "
            "WHERE tenant = {tenant:String} AND trace_id = unhex({trace:String}) "
            "ORDER BY timestamp, observed_timestamp LIMIT {limit:UInt32}",
            {"tenant": tenant, "trace": trace_id.hex(), "limit": MAX_TRACE_LOGS + 1},
        )
        logs = to_json(table.slice(0, MAX_TRACE_LOGS))
        return {"traceId": trace_id.hex(), "logs": logs, "truncated": table.num_rows > MAX_TRACE_LOGS}

    def search(self, tenant: str, q: str, start: int, end: int, limit: int) -> dict[str, Any]:
        query = parse_query(q)
        where = _matching(query.conditions)
        table = self.conn.query(
            f"SELECT {LOG_COLUMNS} FROM {self.db}.logs WHERE {where} "
            "ORDER BY timestamp DESC LIMIT {limit:UInt32}",
            {**query.params, "tenant": tenant, "start": start, "end": end, "limit": limit + 1},
        )
        return {"logs": to_json(table.slice(0, limit)), "limit": limit, "truncated": table.num_rows > limit}

    def volume(self, tenant: str, q: str, start: int, end: int, step: int) -> dict[str, Any]:
        """How many records match `q` in each `step` (ns) of the range, by level: what the search
        page draws above its lines."""
        query = parse_query(q)
        where = _matching(query.conditions)
        table = self.conn.query(
            "SELECT intDiv(toUnixTimestamp64Nano(timestamp) - {start:Int64}, {step:Int64}) AS bucket, "
            f"{LEVEL_SQL} AS level, count() FROM {self.db}.logs WHERE {where} "
            "GROUP BY bucket, level ORDER BY bucket, level",
            {**query.params, "tenant": tenant, "start": start, "end": end, "step": step},
        )
        buckets = (end - start) // step + 1
        series: dict[str, list[int]] = {}
        for bucket, level, count in zip(*(c.to_pylist() for c in table.columns), strict=True):
            series.setdefault(level, [0] * buckets)[bucket] = count
        return {
            "start": str(start),
            "step": str(step),
            "buckets": buckets,
            "levels": [
                {"level": level, "counts": counts}
                for level, counts in sorted(series.items(), key=_level_order)
            ],
        }

    def routes(self) -> Sequence[BaseRoute]:
        async def trace_logs(request: Request) -> JSONResponse:
            trace_id = trace_id_param(request)
            return JSONResponse(await asyncio.to_thread(self.trace_logs, tenant(request), trace_id))

        async def search(request: Request) -> JSONResponse:
            start, end = time_range_ns(request)
            text = request.query_params.get("limit", "100")
            if not (text.isascii() and text.isdigit() and len(text) <= 9) or not 1 <= int(text) <= MAX_LIMIT:
                raise BadRequest(f"limit must be a whole number from 1 to {MAX_LIMIT}, got {text[:40]!r}")
            q = request.query_params.get("q", "")
            answer = await asyncio.to_thread(self.search, tenant(request), q, start, end, int(text))
            return JSONResponse(answer)

        async def volume(request: Request) -> JSONResponse:
            start, end = time_range_ns(request)
            text = request.query_params.get("step")
            step = max(SECOND, (end - start) // MAX_BUCKETS + 1)
            if text:
                if not (text.isascii() and text.isdigit() and len(text) <= 9) or not 1 <= int(text) <= 10**8:
                    raise BadRequest(f"step must be whole seconds from 1 to 100000000, got {text[:40]!r}")
                step = int(text) * SECOND
                if (end - start) // step + 1 > MAX_BUCKETS:
                    raise BadRequest(
                        f"step makes more than {MAX_BUCKETS} buckets of the range: choose a longer one"
                    )
            q = request.query_params.get("q", "")
            answer = await asyncio.to_thread(self.volume, tenant(request), q, start, end, step)
            return JSONResponse(answer)

        return [
            Route("/api/v1/traces/{trace_id}/logs", trace_logs),
            Route("/api/v1/logs", search),
            Route("/api/v1/logs/volume", volume),
        ]

    # --- retention ---------------------------------------------------------------------------

    def tick(self, now: int) -> None:
        """Drop the days of logs that are wholly past the retention."""
        cutoff = datetime.fromtimestamp((now - self.retention) / SECOND, UTC).strftime("%Y%m%d")
        table = self.conn.query(
            "SELECT DISTINCT partition_id FROM system.parts "
            "WHERE database = {db:String} AND table = 'logs' AND active",
            {"db": self.db},
        )
        for partition in table.column(0).to_pylist():
            day = str(partition)
            # a day ends before the cutoff's day starts; never text to splice otherwise
            if len(day) == 8 and day.isdigit() and day < cutoff:
                self.conn.command(f"ALTER TABLE {self.db}.logs DROP PARTITION ID '{day}'")
                self.dropped_partitions += 1

    def metrics(self) -> Iterable[Sample]:
        stored = self.writer.records if self.writer is not None else 0
        return [Sample(STORED, stored), Sample(DROPPED, self.dropped_partitions)]
