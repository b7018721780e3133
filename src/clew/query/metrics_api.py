"""`/metrics` (OpenMetrics text, for Prometheus, with exemplars pointing at traces) and
`/api/v1/metrics` (RED timelines for the UI), both from the span-derived minutes (store/red.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from clew.model import DEFAULT_TENANT
from clew.store.base import Store
from clew.store.red import BOUNDS, QUANTILES, Series

KIND_NAMES = ["unspecified", "internal", "server", "client", "producer", "consumer"]
STATUS_NAMES = ["unset", "ok", "error"]
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
ZERO_TRACE = bytes(16)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs.items()) + "}"


def _exemplar(trace_id: bytes, value: float) -> str:
    return f' # {{trace_id="{trace_id.hex()}"}} {value:g}' if trace_id != ZERO_TRACE else ""


def render(series_by_tenant: dict[str, list[Series]], counters: dict[str, tuple[str, float]]) -> str:
    """OpenMetrics text: span calls (counter) and latency (histogram) per series, then clew's own."""
    lines = [
        "# TYPE clew_spanmetrics_calls counter",
        "# HELP clew_spanmetrics_calls Spans received, from every span before any sampling.",
    ]
    histogram: list[str] = [
        "# TYPE clew_spanmetrics_latency_seconds histogram",
        "# HELP clew_spanmetrics_latency_seconds Span durations.",
    ]
    for tenant, series in sorted(series_by_tenant.items()):
        for s in series:
            labels = {
                "tenant": tenant,
                "service": s.service,
                "operation": s.operation,
                "span_kind": KIND_NAMES[s.kind] if s.kind < len(KIND_NAMES) else str(s.kind),
                "status_code": STATUS_NAMES[s.status] if s.status < len(STATUS_NAMES) else str(s.status),
            }
            exemplar = _exemplar(s.last_error_trace, 1) if s.errors else _exemplar(s.slowest_trace, 1)
            lines.append(f"clew_spanmetrics_calls_total{_labels(labels)} {s.calls}{exemplar}")
            slowest = s.slowest_duration / 1e9
            placed = False
            for bound, count in zip(BOUNDS, s.buckets, strict=True):
                ex = ""
                if not placed and slowest <= bound:
                    ex, placed = _exemplar(s.slowest_trace, slowest), True
                histogram.append(
                    f"clew_spanmetrics_latency_seconds_bucket{_labels({**labels, 'le': f'{bound:g}'})} {count}{ex}"
                )
            ex = "" if placed else _exemplar(s.slowest_trace, slowest)
            histogram.append(
                f"clew_spanmetrics_latency_seconds_bucket{_labels({**labels, 'le': '+Inf'})} {s.calls}{ex}"
            )
            histogram.append(
                f"clew_spanmetrics_latency_seconds_sum{_labels(labels)} {s.duration_sum / 1e9:g}"
            )
            histogram.append(f"clew_spanmetrics_latency_seconds_count{_labels(labels)} {s.calls}")
    lines += histogram
    for name, (kind, value) in counters.items():
        sample = f"{name}_total" if kind == "counter" else name
        lines += [f"# TYPE {name} {kind}", f"{sample} {value:g}"]
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def metrics_routes(
    store: Store, counters: Callable[[], dict[str, tuple[str, float]]] | None = None
) -> list[Route]:
    async def prometheus(request: Request) -> Response:
        def collect() -> dict[str, list[Series]]:
            tenants = store.red.tenants()
            return {tenant: store.red.series(tenant=tenant) for tenant in tenants}

        series = await asyncio.to_thread(collect)
        return Response(render(series, counters() if counters else {}), media_type=OPENMETRICS)

    async def timeline(request: Request) -> JSONResponse:
        q = request.query_params
        try:
            end = float(q.get("end") or time.time())
            start = float(q.get("start") or end - 3600)
            step = int(q.get("step") or 60)
        except ValueError:
            return JSONResponse({"error": "start and end are Unix seconds, step whole seconds"}, 400)
        if step < 60 or step % 60:
            return JSONResponse(
                {"error": "step must be a whole number of minutes, in seconds (60, 300, ...)"}, 400
            )
        if start > end:
            return JSONResponse({"error": "start must not be after end"}, 400)
        kind_name = (q.get("spanKind") or "").lower()
        if kind_name and kind_name not in KIND_NAMES:
            return JSONResponse(
                {"error": f"unknown spanKind {kind_name!r}: use one of {', '.join(KIND_NAMES)}"}, 400
            )
        points = await asyncio.to_thread(
            store.red.timeline,
            int(start * 1e9),
            int(end * 1e9),
            step,
            q.get("service") or None,
            q.get("operation") or None,
            KIND_NAMES.index(kind_name) if kind_name else None,
            request.headers.get("x-scope-orgid") or DEFAULT_TENANT,
        )
        return JSONResponse(
            {
                "step": step,
                "points": [
                    {
                        "time": p.time,
                        "calls": p.calls,
                        "errors": p.errors,
                        "rate": p.calls / step,
                        "errorRate": p.errors / p.calls if p.calls else 0.0,
                        **{
                            f"p{round(qv * 100)}Ms": v / 1e6
                            for qv, v in zip(QUANTILES, p.quantiles, strict=True)
                        },
                    }
                    for p in points
                ],
            }
        )

    return [Route("/metrics", prometheus), Route("/api/v1/metrics", timeline)]
