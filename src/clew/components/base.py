"""What a component is: the protocol the assembly drives, and a base class with empty defaults."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from starlette.routing import BaseRoute

from clew.core.telemetry import Metric, Sample
from clew.store.connection import Connection
from clew.store.migrations import Migration
from clew.store.transforms import Transforms


@dataclass(frozen=True, slots=True)
class Context:
    """What every component is built with: the engine, the database, and the store's clock."""

    conn: Connection
    db: str = "clew"
    clock: Callable[[], int] = time.time_ns
    # every span received at or before this time (ns) is committed or refused (the span writer's)
    received_until: Callable[[], int] = field(default=time.time_ns)
    # whether spans may have been received after this time (ns): periodic work over new spans skips
    # its query when not (an idle server's ticks cost nothing); always True where other processes
    # write to the same store
    wrote_after: Callable[[int], bool] = field(default=lambda t: True)


class Component(Protocol):
    """One feature. The assembly applies every component's `migrations()` in order, composes their
    `insert_stage()`s into the insert (and their `log_stage()`s into the logs' insert), calls `start()`, serves their `routes()`, calls `tick(now)`
    every `interval` nanoseconds (None: never) and renders `metrics()` under the declared
    `telemetry` on `/metrics`."""

    @property
    def name(self) -> str: ...

    @property
    def telemetry(self) -> Sequence[Metric]: ...

    @property
    def interval(self) -> int | None: ...

    def migrations(self) -> Sequence[Migration]: ...

    def insert_stage(self) -> Transforms | None: ...

    def log_stage(self) -> Transforms | None: ...

    def start(self) -> None: ...

    def routes(self) -> Sequence[BaseRoute]: ...

    def tick(self, now: int) -> None: ...

    def metrics(self) -> Iterable[Sample]: ...


class BaseComponent:
    """Defaults for the parts a component does not have."""

    name = "component"
    telemetry: Sequence[Metric] = ()
    interval: int | None = None

    def migrations(self) -> Sequence[Migration]:
        return ()

    def insert_stage(self) -> Transforms | None:
        return None

    def log_stage(self) -> Transforms | None:
        """SQL compiled into the log records' insert, over the logs table's columns (called after
        `insert_stage`)."""
        return None

    def start(self) -> None:
        return None

    def routes(self) -> Sequence[BaseRoute]:
        return ()

    def tick(self, now: int) -> None:
        return None

    def metrics(self) -> Iterable[Sample]:
        return ()


# spans received in (since, until]: the `received_at` index makes this a small read
RECEIVED_IN = (
    "received_at > fromUnixTimestamp64Nano({since:Int64}, 'UTC') "
    "AND received_at <= fromUnixTimestamp64Nano({until:Int64}, 'UTC')"
)


# how often the processors' counters scan the new rows: a scan holds the engine between inserts, and
# counters need not be fresher than a scrape (bench/RESULTS.md, 2026-11-30)
COUNT_EVERY = 5 * 10**9


class MarkCounter:
    """How a processor compiled into the insert learns what it did: the engine reports no per-row
    figures for an INSERT ... SELECT, so each tick counts, among the spans received since the last
    one, all of them and those bearing the processor's mark (`marked`, SQL over a span's columns).
    It starts at the present: what was stored before this process started was counted then."""

    def __init__(self, ctx: Context, marked: str, params: dict[str, object] | None = None) -> None:
        self.conn, self.db, self.received_until = ctx.conn, ctx.db, ctx.received_until
        self.wrote_after = ctx.wrote_after
        self.marked, self.params = marked, params or {}
        self.since: int | None = None
        self.spans = self.matched = 0

    def start(self) -> None:
        self.since = self.received_until()

    def count(self) -> None:
        if self.since is None:
            self.start()
        assert self.since is not None
        until = self.received_until()
        if until <= self.since:
            return
        if not self.wrote_after(self.since):
            self.since = until
            return
        table = self.conn.query(
            f"SELECT count(), countIf({self.marked}) FROM {self.db}.spans WHERE {RECEIVED_IN}",
            {**self.params, "since": self.since, "until": until},
        )
        self.since = until
        spans, matched = (int(c[0].as_py()) for c in table.columns)
        self.spans += spans
        self.matched += matched
