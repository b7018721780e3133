"""Retention in two tiers: a span is deleted once it was received longer than `full_fidelity` ago
unless a decision of the sampler kept its trace; every span goes once received longer than `period`
ago (a kept one: once its received day ended `period` ago).

Rows are never deleted one by one (a lightweight delete rewrites the trace projection of every part
it touches): spans are partitioned by the hour they were received in while at full fidelity, and a
swept hour's kept rows move to a settled partition per received day (store/schema.py PARTITION_KEY).
Without tail sampling, spans are written settled at once (`insert_stage`) and only the long tier runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from clew.components.base import BaseComponent, Context
from clew.core.durations import DurationError, parse_duration
from clew.core.errors import ConfigError
from clew.core.telemetry import Metric, Sample
from clew.store.migrations import Migration, steps
from clew.store.schema import (
    HISTORIC_NAMES,
    SETTLED,
    names_projection_ddl,
    order_columns_ddl,
    recoded_columns_ddl,
)
from clew.store.spans import RECEIVED_SQL
from clew.store.sql import per_tenant
from clew.store.transforms import Transforms

SECOND = 10**9
NS = "toUnixTimestamp64Nano"
MIGRATIONS = steps(
    # where a partition's kept rows are gathered before they move: the same structure as spans
    "retention",
    ("sweep table", ["CREATE TABLE IF NOT EXISTS {db}.spans_sweep AS {db}.spans"]),
    (
        # partitions move only between tables of one layout: follow the spans table's rebuild, keeping
        # any rows a cut-off sweep left (`start()` then finishes or discards them, as always)
        "sweep table in the spans table's layout",
        [
            "DROP TABLE IF EXISTS {db}.spans_sweep_next",
            "CREATE TABLE {db}.spans_sweep_next AS {db}.spans",
            # by name: the spans table may have gained columns the old sweep table lacks
            f"INSERT INTO {{db}}.spans_sweep_next ({HISTORIC_NAMES}) SELECT {HISTORIC_NAMES} FROM {{db}}.spans_sweep",
            "DROP TABLE {db}.spans_sweep",
            "RENAME TABLE {db}.spans_sweep_next TO {db}.spans_sweep",
        ],
    ),
    ("attribute order as sent", order_columns_ddl("spans_sweep")),
    ("codecs of the few-valued, boolean and attribute-order columns", recoded_columns_ddl("spans_sweep")),
    ("service and operation names of each part", [names_projection_ddl("spans_sweep")]),
)
RUNS = Metric("clew_retention_runs", "counter", "Rounds of the retention.")
CAPPED = Metric(
    "clew_retention_capped_spans",
    "counter",
    "Spans of kept traces not kept past the full-fidelity window: over the tenant's max_spans_per_trace.",
)
DELETED = Metric(
    "clew_retention_deleted_spans",
    "counter",
    "Spans deleted: unsampled past the full-fidelity window, and every span past the retention period.",
)


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    period: int = 7 * 24 * 3600 * SECOND  # sampled traces (and every span without sampling) stay this long
    interval: int = 60 * SECOND
    full_fidelity: int | None = 3600 * SECOND  # None: no tail sampling, nothing is swept early

    @classmethod
    def from_toml(
        cls, doc: dict[str, Any], legacy: dict[str, Any], full_fidelity: int | None
    ) -> RetentionConfig:
        """`[retention]` (`period`, `interval`); `retention` and `retention_interval` of `[sampling]`
        are read too, as they were first documented there."""
        for key in doc:
            if key not in ("period", "interval"):
                raise ConfigError(f"[retention]: unknown setting {key!r}")
        values: dict[str, int | None] = {"full_fidelity": full_fidelity}
        for key, old in (("period", "retention"), ("interval", "retention_interval")):
            where, value = (
                (f"[retention] {key}", doc[key]) if key in doc else (f"[sampling] {old}", legacy.get(old))
            )
            if value is None:
                continue
            try:
                values[key] = parse_duration(str(value), allow_days=True)
            except DurationError as exc:
                raise ConfigError(f"{where}: {exc}") from None
        config = cls(**values)  # type: ignore[arg-type]  # keys are the fields above
        if full_fidelity is not None and full_fidelity > config.period:
            raise ConfigError("[sampling]: full_fidelity must not be longer than retention")
        return config


class KeptTraces(Protocol):
    """Which traces outlive the full-fidelity window (the sampling component)."""

    def kept_sql(self) -> str:
        """A SELECT of (tenant, trace_id) of kept traces."""
        ...

    def forget(self, before: int, unkept_before: int) -> None: ...


class BeforeDelete(Protocol):
    """A component that must see spans before they go (the dependencies' buckets)."""

    def keep(self, start: int, end: int, now: int, tenant: str) -> None: ...

    def drop_before(self, before: int) -> None: ...


class Retention(BaseComponent):
    name = "retention"
    telemetry = (RUNS, DELETED, CAPPED)

    def __init__(
        self,
        ctx: Context,
        config: RetentionConfig,
        kept: KeptTraces | None = None,
        watchers: Sequence[BeforeDelete] = (),
        max_spans_per_trace: tuple[int, dict[str, int]] = (0, {}),
    ) -> None:
        self.conn, self.db, self.config = ctx.conn, ctx.db, config
        self.kept, self.watchers = kept, watchers
        self.interval = config.interval
        self.runs = self.deleted_spans = self.capped_spans = 0
        # a kept trace keeps its first spans by start time, up to its tenant's limit (0: all)
        self._cap = per_tenant(*max_spans_per_trace)

    def migrations(self) -> Sequence[Migration]:
        return MIGRATIONS

    def insert_stage(self) -> Transforms:
        """The retention tier of new spans: their received hour while sampling may still drop them,
        settled at once without sampling."""
        if self.config.full_fidelity is not None and self.kept is not None:
            return Transforms({"tier_hour": f"toStartOfHour({RECEIVED_SQL})"})
        return Transforms({"tier_hour": SETTLED.replace("received_at", RECEIVED_SQL)})

    def start(self) -> None:
        self._recover()

    def tick(self, now: int) -> None:
        self.expire(now)

    def metrics(self) -> Iterable[Sample]:
        return [
            Sample(RUNS, self.runs),
            Sample(DELETED, self.deleted_spans),
            Sample(CAPPED, self.capped_spans),
        ]

    def expire(self, now: int) -> int:
        """Apply both tiers at `now` (ns); returns the number of spans deleted.

        A full-fidelity partition holds the spans received in one hour (of one start day): once that
        hour ended `full_fidelity` ago it is swept: its rows of kept traces move to a settled
        partition and it is dropped. So a span stays between one and two full-fidelity windows, and
        no row is ever deleted one by one. A full-fidelity partition goes once its hour ended
        `retention` ago, a settled one once its received day did."""
        deleted = 0
        full_fidelity = self.config.full_fidelity if self.kept is not None else None
        old = now - self.config.period
        partitions = self._partitions()
        for partition, end, _hourly, rows in partitions:
            if end <= old:
                self.conn.command(f"ALTER TABLE {self.db}.spans DROP PARTITION ID '{partition}'")
                deleted += rows
        for watcher in self.watchers:
            watcher.drop_before(old)
        if full_fidelity is not None:
            cut = now - full_fidelity
            for partition, end, hourly, rows in partitions:
                if hourly and old < end <= cut:
                    deleted += rows - self._sweep(partition, now)
            assert self.kept is not None
            self.kept.forget(old, cut - full_fidelity)  # an unkept decision lives while its spans may
        self.runs += 1
        self.deleted_spans += deleted
        return deleted

    def _partitions(self) -> list[tuple[str, int, bool, int]]:
        """(id, end of its hour or of its day in ns, whether it is a full-fidelity hour, rows) of every
        partition of the spans table."""
        table = self.conn.query(
            "SELECT partition_id, sum(rows) FROM system.parts "
            "WHERE database = {db:String} AND table = 'spans' AND active GROUP BY partition_id",
            {"db": self.db},
        )
        out = []
        for partition, rows in zip(*(c.to_pylist() for c in table.columns), strict=True):
            day, _, hour = str(partition).partition("-")  # 20261124-1795564800: day, then hour start (s)
            if not (len(day) == 8 and day.isdigit() and hour.isdigit()):  # never text to splice otherwise
                continue
            if int(hour) % 3600 == 0:
                out.append((str(partition), (int(hour) + 3600) * 10**9, True, int(rows)))
            else:  # settled: the received day's start + 1 s
                out.append((str(partition), (int(hour) - 1 + 86400) * 10**9, False, int(rows)))
        return out

    def _sweep(self, partition: str, now: int) -> int:
        """Move the partition's rows of kept traces to their settled partition (same start day, by
        received day) and drop it; returns how many rows it kept.

        The rows wait in `spans_sweep` between the drop and the move (one atomic step), so a crash
        in between loses nothing: `_recover` finishes the move at the next start."""
        where = f"_partition_id = '{partition}'"
        assert self.kept is not None
        kept = self.kept.kept_sql()
        starts = self.conn.query(
            f"SELECT toString(tenant), min({NS}(start_time)), max({NS}(start_time)) FROM {self.db}.spans "
            f"WHERE {where} GROUP BY tenant"
        )
        for tenant, first, last in zip(*(c.to_pylist() for c in starts.columns), strict=True):
            for watcher in self.watchers:
                watcher.keep(first, last, now, tenant)  # calls between services outlive sampling
        self.conn.command(f"TRUNCATE TABLE {self.db}.spans_sweep")
        cap = (
            ""
            if self._cap == "0"
            else f"QUALIFY ({self._cap}) = 0 OR row_number() OVER "
            f"(PARTITION BY tenant, trace_id ORDER BY start_time, span_id) <= ({self._cap})"
        )
        self.conn.command(
            f"INSERT INTO {self.db}.spans_sweep SELECT * REPLACE ({SETTLED} AS tier_hour) "
            f"FROM {self.db}.spans WHERE {where} "
            f"AND (tenant, trace_id) IN ({kept}) {cap}"
        )
        count = int(self.conn.query(f"SELECT count() FROM {self.db}.spans_sweep").column(0)[0].as_py())
        if cap:
            of_kept = self.conn.query(
                f"SELECT count() FROM {self.db}.spans WHERE {where} AND (tenant, trace_id) IN ({kept})"
            )
            self.capped_spans += int(of_kept.column(0)[0].as_py()) - count
        self.conn.command(f"ALTER TABLE {self.db}.spans DROP PARTITION ID '{partition}'")
        self._move_swept()
        return count

    def _move_swept(self) -> None:
        settled = self.conn.query(
            "SELECT DISTINCT partition_id FROM system.parts "
            "WHERE database = {db:String} AND table = 'spans_sweep' AND active",
            {"db": self.db},
        )
        for partition in settled.column(0).to_pylist():
            if str(partition).replace("-", "").isdigit():
                self.conn.command(
                    f"ALTER TABLE {self.db}.spans_sweep MOVE PARTITION ID '{partition}' TO TABLE {self.db}.spans"
                )

    def _recover(self) -> None:
        """Rows left in `spans_sweep` by a sweep that stopped: if their partition was already dropped,
        they are the only copy and move on; if not, the sweep starts over next time."""
        probe = self.conn.query(f"SELECT hex(trace_id), hex(span_id) FROM {self.db}.spans_sweep LIMIT 1")
        if probe.num_rows == 0:
            return
        trace_id, span_id = probe.column(0)[0].as_py(), probe.column(1)[0].as_py()
        still = self.conn.query(
            f"SELECT count() FROM {self.db}.spans "
            "WHERE trace_id = toFixedString(unhex({t:String}), 16) AND hex(span_id) = {s:String}",
            {"t": trace_id, "s": span_id},
        )
        if int(still.column(0)[0].as_py()):
            self.conn.command(f"TRUNCATE TABLE {self.db}.spans_sweep")
        else:
            self._move_swept()
