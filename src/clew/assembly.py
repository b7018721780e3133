"""The composition root: from `Settings` to a running set of parts. It opens the engine, builds the
components the configuration enables, applies their migrations, composes their insert stages into
the span writer and collects their routes, periodic work and metrics. Nothing else wires components
to each other."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from starlette.routing import BaseRoute

from clew.components.alerts import Alerts
from clew.components.base import Component, Context
from clew.components.completeness import Completeness
from clew.components.dependencies import Dependencies
from clew.components.enrichment import Enrichment
from clew.components.limits import Limits
from clew.components.logs import Logs, LogWriter
from clew.components.red import Red
from clew.components.red.minutes import BOUNDS
from clew.components.redaction import Redaction
from clew.components.releases import Releases
from clew.components.retention import Retention
from clew.components.sampling import Sampling
from clew.components.servicegraph import ServiceGraph
from clew.config import Settings
from clew.core.errors import ConfigError
from clew.core.telemetry import Metric, Sample
from clew.store.connection import Connection
from clew.store.instances import MIGRATIONS as INSTANCES
from clew.store.instances import Instances
from clew.store.migrations import applied, migrate
from clew.store.schema import MIGRATIONS as SPANS_MIGRATIONS
from clew.store.schema import set_fsync
from clew.store.spans import BySignal, ClickHouseSpanWriter
from clew.store.traces import ClickHouseTraceReader
from clew.store.transforms import compose

C = TypeVar("C")


@dataclass
class Assembly:
    conn: Connection
    writer: ClickHouseSpanWriter
    reader: ClickHouseTraceReader
    components: list[Component]
    logs: LogWriter
    # with a ClickHouse server: this instance's lease among those writing to the same store
    instances: Instances | None = None

    @property
    def sink(self) -> BySignal:
        """What the ingest writer commits to: spans to the span writer, log records to the logs'."""
        return BySignal(self.writer, self.logs)

    def component(self, kind: type[C]) -> C:
        """The one component of this kind (tests and tools reach a component's logic this way)."""
        found = [c for c in self.components if isinstance(c, kind)]
        if len(found) != 1:
            raise LookupError(f"{len(found)} components of kind {kind.__name__}")
        return found[0]

    def routes(self) -> list[BaseRoute]:
        return [route for c in self.components for route in c.routes()]

    def telemetry(self) -> list[Metric]:
        return [m for c in self.components for m in c.telemetry]

    def metrics(self) -> Iterable[Sample]:
        for c in self.components:
            yield from c.metrics()

    def schema_versions(self) -> dict[str, int]:
        """The schema version of each owner (spans, components), as the store records it."""
        return applied(self.conn, self.conn.database)

    def close(self) -> None:
        self.conn.close()


def components(settings: Settings, ctx: Context, state_dir: Path) -> list[Component]:
    """The components `settings` enable, in the order their insert stages apply."""
    dependencies = Dependencies(ctx)
    sampling = Sampling(ctx, settings.sampling)
    retention = Retention(
        ctx,
        settings.retention,
        sampling if settings.sampling.enabled else None,
        watchers=[dependencies],
        max_spans_per_trace=settings.limits.by_tenant("max_spans_per_trace"),
    )
    red, completeness = Red(ctx), Completeness(ctx)
    return [
        Enrichment(ctx, settings.enrich),  # names templated before redaction sees them
        Redaction(ctx, settings.redaction, state_dir if settings.storage == "embedded" else None),
        Limits(ctx, settings.limits),  # after redaction: the detectors see whole values
        retention,
        red,
        dependencies,
        ServiceGraph(ctx),
        completeness,
        Releases(ctx),
        Alerts(ctx, settings.alerting, red.window, BOUNDS, completeness.broken),
        Logs(ctx, settings.logs, settings.retention.period),
        sampling,
    ]


def assemble(
    settings: Settings,
    conn: Connection | None = None,
    clock: Callable[[], int] = time.time_ns,
    state_dir: Path | None = None,
) -> Assembly:
    """Open the store of `settings` (`connect(settings)` unless `conn` is given) with every enabled
    component built, migrated and started. Files clew keeps itself (the redaction hash key) go to
    `state_dir`, the data directory by default."""
    if conn is None:
        conn = connect(settings)
    writer: list[ClickHouseSpanWriter] = []  # set below: components are built before the writer
    db = conn.database
    # on a server, other instances may write to the same store: periodic work reads up to what all
    # of them have committed
    instances = None
    if settings.storage != "embedded":
        instances = Instances(
            conn,
            db,
            settings.instance_lease_s,
            lambda: writer[0].received_until(),
            lambda: writer[0].wrote_until(),
        )

    def received_until() -> int:
        return instances.received_until() if instances else writer[0].received_until()

    def wrote_after(t: int) -> bool:
        return instances.wrote_after(t, writer[0].wrote_after) if instances else writer[0].wrote_after(t)

    ctx = Context(conn, db, clock, received_until, wrote_after)
    parts = components(settings, ctx, state_dir or settings.data_dir)
    try:
        migrate(conn, db, [*SPANS_MIGRATIONS, *INSTANCES, *(m for c in parts for m in c.migrations())])
        set_fsync(conn, db, settings.fsync)
        stages = [stage for c in parts if (stage := c.insert_stage()) is not None]
        writer.append(ClickHouseSpanWriter(conn, db, compose(*stages), clock))
        log_stages = [stage for c in parts if (stage := c.log_stage()) is not None]
        logs = next(c for c in parts if isinstance(c, Logs)).open_writer(compose(*log_stages))
        for c in parts:
            c.start()
    except BaseException:
        conn.close()
        raise
    return Assembly(conn, writer[0], ClickHouseTraceReader(conn, db), parts, logs, instances)


def connect(settings: Settings) -> Connection:
    """The store `settings.storage` names: the embedded engine in `data_dir`, or a ClickHouse server."""
    if settings.storage == "embedded":
        if settings.cluster:
            raise ConfigError(
                "a cluster needs a ClickHouse server: --storage clickhouse://... with --cluster"
            )
        from clew.store.chdb_connection import ChdbConnection

        # a session for each committer's insert, and one for the next insert, begun early
        return ChdbConnection(settings.data_dir, inserters=max(1, settings.committers) + 1)
    from clew.store.server_connection import ServerConnection

    server = ServerConnection(settings.storage)
    if not settings.cluster:
        return server
    from clew.store.cluster import ClusterConnection

    return ClusterConnection(server, settings.cluster)


def open_embedded(
    data_dir: str | Path,
    settings: Settings | None = None,
    clock: Callable[[], int] = time.time_ns,
    **configs: object,
) -> Assembly:
    """The embedded store of `data_dir` with `settings` (defaults) and any component configs
    replaced by keyword (`redaction=`, `enrich=`, `sampling=`, `retention=`)."""
    settings = replace(settings or Settings(), data_dir=Path(data_dir), **configs)  # type: ignore[arg-type]  # each a Settings field, checked by replace()
    if "sampling" in configs and "retention" not in configs:
        full_fidelity = settings.sampling.full_fidelity if settings.sampling.enabled else None
        settings = replace(settings, retention=replace(settings.retention, full_fidelity=full_fidelity))
    return assemble(settings, clock=clock)


def every(components: Sequence[Component]) -> list[tuple[Component, int]]:
    """The components with periodic work, and how often (ns)."""
    return [(c, c.interval) for c in components if c.interval is not None]
