"""`/api/v1/metrics` (RED timelines for the UI) and Jaeger's Monitor tab API (`/api/metrics/...`),
both from the span-derived minutes (minutes.py)."""

from __future__ import annotations

import asyncio
import time

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from clew.components.http import MAX_NS, epoch_param, int_param, number, tenant, time_range
from clew.components.red.minutes import QUANTILES, Point, RedMetrics
from clew.core.errors import BadRequest, NotFound
from clew.core.model import KIND_CODES, STATUS_CODES

KIND_NAMES = list(KIND_CODES)  # index = wire value
STATUS_NAMES = list(STATUS_CODES)


def point_json(p: Point, step: int) -> dict[str, object]:
    """One step of a RED timeline: calls, errors, their rates and the latency quantiles in ms."""
    return {
        "time": p.time,
        "calls": p.calls,
        "errors": p.errors,
        "rate": p.calls / step,
        "errorRate": p.errors / p.calls if p.calls else 0.0,
        **{f"p{round(qv * 100)}Ms": v / 1e6 for qv, v in zip(QUANTILES, p.quantiles, strict=True)},
    }


def red_routes(red: RedMetrics) -> list[Route]:
    async def timeline(request: Request) -> JSONResponse:
        q = request.query_params
        start, end = time_range(request)
        step = int_param(request, "step", 60, 366 * 86400) or 60
        if step % 60:
            raise BadRequest("step must be a whole number of minutes, in seconds (60, 300, ...)")
        kind_name = (q.get("spanKind") or "").lower()
        if kind_name and kind_name not in KIND_NAMES:
            raise BadRequest(f"unknown spanKind {kind_name!r}: use one of {', '.join(KIND_NAMES)}")
        points = await asyncio.to_thread(
            red.timeline,
            int(start * 1e9),
            int(end * 1e9),
            step,
            q.get("service") or None,
            q.get("operation") or None,
            KIND_NAMES.index(kind_name) if kind_name else None,
            tenant(request),
        )
        return JSONResponse({"step": step, "points": [point_json(p, step) for p in points]})

    async def jaeger_monitor(request: Request) -> JSONResponse:
        """Jaeger's Monitor tab API (`/api/metrics/calls|errors|latencies`), from the same minutes."""
        which = request.path_params["which"]
        if which not in ("calls", "errors", "latencies"):
            raise NotFound(f"no metric {which!r}: calls, errors, latencies")
        q = request.query_params
        services = q.getlist("service")
        if not services:
            raise BadRequest("please provide at least one service name")
        end = epoch_param(request, "endTs", 10**6) or time.time_ns()
        lookback = (int_param(request, "lookback", 0, MAX_NS // 10**6) or 3600_000) * 10**6
        step_ms = int_param(request, "step", 0, 366 * 86400 * 1000) or 60_000
        quantile = number(request, "quantile", 0.95, 0, 1)
        step = max(60, (step_ms // 1000) // 60 * 60)  # minutes are the finest grain stored
        kind_text = (q.get("spanKind") or "server").lower().removeprefix("span_kind_")
        if kind_text not in KIND_NAMES:
            raise BadRequest(f"unknown spanKind {kind_text!r}")
        by_operation = (q.get("groupByOperation") or "").lower() == "true"
        rows = await asyncio.to_thread(
            red.grouped,
            max(0, end - lookback),
            end,
            step,
            services,
            KIND_NAMES.index(kind_text),
            by_operation,
            quantile,
            tenant(request),
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
                value = r.calls / step
            elif which == "errors":
                value = r.errors / r.calls if r.calls else 0.0
            else:
                value = r.latency / 1e6
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r.time))
            key = (r.service, r.operation)
            series.setdefault(key, []).append({"gaugeValue": {"doubleValue": value}, "timestamp": stamp})
        metrics = []
        for (service, operation), points in series.items():
            labels = [{"name": "service_name", "value": service}]
            if by_operation:
                labels.append({"name": "operation", "value": operation})
            metrics.append({"labels": labels, "metricPoints": points})
        return JSONResponse({"name": name, "type": "GAUGE", "help": help_text, "metrics": metrics})

    return [
        Route("/api/v1/metrics", timeline),
        Route("/api/metrics/{which:str}", jaeger_monitor),
    ]
