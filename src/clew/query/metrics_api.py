"""`/metrics` (OpenMetrics text, for Prometheus, with exemplars pointing at traces) and
`/api/v1/metrics` (RED timelines for the UI), both from the span-derived minutes (store/red.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from clew.model import DEFAULT_TENANT, KIND_CODES, STATUS_CODES
from clew.store.base import Store
from clew.store.red import BOUNDS, QUANTILES, Series

KIND_NAMES = list(KIND_CODES)  # index = wire value
STATUS_NAMES = list(STATUS_CODES)
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
ZERO_TRACE = bytes(16)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def label_text(pairs: dict[str, str]) -> str:
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
            lines.append(f"clew_spanmetrics_calls_total{label_text(labels)} {s.calls}{exemplar}")
            slowest = s.slowest_duration / 1e9
            placed = False
            for bound, count in zip(BOUNDS, s.buckets, strict=True):
                ex = ""
                if not placed and slowest <= bound:
                    ex, placed = _exemplar(s.slowest_trace, slowest), True
                histogram.append(
                    f"clew_spanmetrics_latency_seconds_bucket{label_text({**labels, 'le': f'{bound:g}'})} {count}{ex}"
                )
            ex = "" if placed else _exemplar(s.slowest_trace, slowest)
            histogram.append(
                f"clew_spanmetrics_latency_seconds_bucket{label_text({**labels, 'le': '+Inf'})} {s.calls}{ex}"
            )
            histogram.append(
                f"clew_spanmetrics_latency_seconds_sum{label_text(labels)} {s.duration_sum / 1e9:g}"
            )
            histogram.append(f"clew_spanmetrics_latency_seconds_count{label_text(labels)} {s.calls}")
    lines += histogram
    typed: set[str] = set()
    for key, (kind, value) in counters.items():  # key: a name, or a name with labels `name{a="b"}`
        name, brace, rest = key.partition("{")
        if name not in typed:
            typed.add(name)
            lines.append(f"# TYPE {name} {kind}")
        sample = f"{name}_total" if kind == "counter" else name
        lines.append(f"{sample}{brace}{rest} {value:g}")
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

    async def jaeger_monitor(request: Request) -> JSONResponse:
        """Jaeger's Monitor tab API (`/api/metrics/calls|errors|latencies`), from the same minutes."""
        which = request.path_params["which"]
        if which not in ("calls", "errors", "latencies"):
            return JSONResponse(
                {"errors": [{"code": 404, "msg": f"no metric {which!r}: calls, errors, latencies"}]}, 404
            )
        q = request.query_params
        services = q.getlist("service")
        if not services:
            return JSONResponse(
                {"errors": [{"code": 400, "msg": "please provide at least one service name"}]}, 400
            )
        try:
            end_ms = int(q.get("endTs") or time.time() * 1000)
            lookback_ms = int(q.get("lookback") or 3600_000)
            step_ms = int(q.get("step") or 60_000)
            quantile = float(q.get("quantile") or 0.95)
        except ValueError:
            return JSONResponse(
                {"errors": [{"code": 400, "msg": "endTs, lookback, step are milliseconds"}]}, 400
            )
        step = max(60, (step_ms // 1000) // 60 * 60)  # minutes are the finest grain stored
        kind_text = (q.get("spanKind") or "server").lower().removeprefix("span_kind_")
        if kind_text not in KIND_NAMES:
            return JSONResponse({"errors": [{"code": 400, "msg": f"unknown spanKind {kind_text!r}"}]}, 400)
        by_operation = (q.get("groupByOperation") or "").lower() == "true"
        rows = await asyncio.to_thread(
            store.red.grouped,
            (end_ms - lookback_ms) * 10**6,
            end_ms * 10**6,
            step,
            services,
            KIND_NAMES.index(kind_text),
            by_operation,
            quantile,
            request.headers.get("x-scope-orgid") or DEFAULT_TENANT,
        )
        prefix = "service_operation" if by_operation else "service"
        name, help_text = {
            "calls": (f"{prefix}_call_rate", "calls/sec, grouped by service"),
            "errors": (
                f"{prefix}_error_rate",
                "error rate, computed as a fraction of errors/sec over calls/sec",
            ),
            "latencies": (f"{prefix}_latencies", f"{quantile}th quantile latency, grouped by service"),
        }[which]
        series: dict[tuple[str, str], list[dict[str, object]]] = {}
        for r in rows:
            if which == "calls":
                value = r["calls"] / step
            elif which == "errors":
                value = r["errors"] / r["calls"] if r["calls"] else 0.0
            else:
                value = r["latency"] / 1e6
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r["time"]))
            key = (str(r["service"]), str(r["operation"]))
            series.setdefault(key, []).append({"gaugeValue": {"doubleValue": value}, "timestamp": stamp})
        metrics = []
        for (service, operation), points in series.items():
            labels = [{"name": "service_name", "value": service}]
            if by_operation:
                labels.append({"name": "operation", "value": operation})
            metrics.append({"labels": labels, "metricPoints": points})
        return JSONResponse({"name": name, "type": "GAUGE", "help": help_text, "metrics": metrics})

    return [
        Route("/metrics", prometheus),
        Route("/api/v1/metrics", timeline),
        Route("/api/metrics/{which:str}", jaeger_monitor),
    ]
