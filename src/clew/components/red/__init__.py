"""RED metrics (rate, errors, duration) derived from every span before sampling: a materialized view
per minute (minutes.py), the UI's and Jaeger Monitor's timelines (routes.py) and, on `/metrics`,
span calls and latency per series with exemplars pointing at traces."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from starlette.routing import BaseRoute

from clew.components.base import BaseComponent, Context
from clew.components.red.minutes import BOUNDS, MIGRATIONS, RedMetrics, Series
from clew.components.red.routes import KIND_NAMES, STATUS_NAMES, point_json, red_routes
from clew.core.telemetry import Exemplar, Metric, Sample
from clew.store.migrations import Migration

__all__ = ["Red", "RedMetrics", "Series"]

CALLS = Metric("clew_spanmetrics_calls", "counter", "Spans received, from every span before any sampling.")
LATENCY = Metric("clew_spanmetrics_latency_seconds", "histogram", "Span durations.", unit="seconds")
ZERO_TRACE = bytes(16)


def _exemplar(trace_id: bytes, value: float) -> Exemplar | None:
    return Exemplar({"trace_id": trace_id.hex()}, value) if trace_id != ZERO_TRACE else None


def series_samples(tenant: str, s: Series) -> Iterable[Sample]:
    """One series' call counter (exemplar: the latest error trace, else the slowest) and latency
    histogram (the slowest trace as the exemplar of the first bucket that holds it)."""
    labels = {
        "tenant": tenant,
        "service": s.service,
        "operation": s.operation,
        "span_kind": KIND_NAMES[s.kind] if s.kind < len(KIND_NAMES) else str(s.kind),
        "status_code": STATUS_NAMES[s.status] if s.status < len(STATUS_NAMES) else str(s.status),
    }
    yield Sample(CALLS, s.calls, labels, _exemplar(s.last_error_trace if s.errors else s.slowest_trace, 1))
    slowest = s.slowest_duration / 1e9
    placed = False
    for bound, count in zip(BOUNDS, s.buckets, strict=True):
        exemplar = None
        if not placed and slowest <= bound:
            exemplar, placed = _exemplar(s.slowest_trace, slowest), True
        yield Sample(LATENCY, count, {**labels, "le": f"{bound:g}"}, exemplar, "_bucket")
    exemplar = None if placed else _exemplar(s.slowest_trace, slowest)
    yield Sample(LATENCY, s.calls, {**labels, "le": "+Inf"}, exemplar, "_bucket")
    yield Sample(LATENCY, s.duration_sum / 1e9, labels, None, "_sum")
    yield Sample(LATENCY, s.calls, labels, None, "_count")


class Red(BaseComponent):
    name = "red"
    telemetry = (CALLS, LATENCY)

    def __init__(self, ctx: Context) -> None:
        self.red = RedMetrics(ctx.conn, ctx.db)

    def migrations(self) -> Sequence[Migration]:
        return MIGRATIONS

    def routes(self) -> Sequence[BaseRoute]:
        return red_routes(self.red)

    def timeline(self, start: int, end: int, step: int, service: str, tenant: str) -> list[dict[str, object]]:
        """A service's RED timeline as `/api/v1/metrics` answers it (for the MCP tools)."""
        return [point_json(p, step) for p in self.red.timeline(start, end, step, service, None, None, tenant)]

    def window(self, start: int, end: int, tenant: str) -> list[Series]:
        """Totals per series over [start, end] ns (what the alerts' SLO indicators read)."""
        return self.red.series(start, end, tenant)

    def metrics(self) -> Iterable[Sample]:
        for tenant in self.red.tenants():
            for s in self.red.series(tenant=tenant):
                yield from series_samples(tenant, s)
