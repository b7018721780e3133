"""Jaeger's HTTP query API (`/api/...`): the paths, parameters and JSON that Jaeger UI and Grafana use."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from clew.durations import DurationError, parse_duration
from clew.model import parse_trace_id
from clew.query.jaeger import KIND_NAMES, jaeger_id, to_jaeger_traces
from clew.store.base import Store, TraceQuery

DEFAULT_LIMIT = 100
DEFAULT_LOOKBACK_NS = 3600 * 10**9  # Jaeger UI's "Last Hour"
DEFAULT_DEPENDENCY_LOOKBACK_MS = 24 * 3600 * 1000


class BadParameter(ValueError):
    pass


def _envelope(data: Any, status: int = 200, errors: list[dict[str, Any]] | None = None) -> JSONResponse:
    total = len(data) if isinstance(data, list) else 0
    return JSONResponse({"data": data, "total": total, "limit": 0, "offset": 0, "errors": errors}, status)


def _error(status: int, message: str) -> JSONResponse:
    return _envelope(None, status, [{"code": status, "msg": message}])


def _int(request: Request, name: str) -> int | None:
    text = request.query_params.get(name)
    if text in (None, ""):
        return None
    try:
        return int(text)
    except ValueError as exc:
        raise BadParameter(f"{name} must be an integer, got {text!r}") from exc


def _tags(request: Request) -> dict[str, str]:
    tags: dict[str, str] = {}
    raw = request.query_params.get("tags")
    if raw:
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise BadParameter(f"tags must be a JSON object: {exc}") from exc
        if not isinstance(doc, dict):
            raise BadParameter("tags must be a JSON object of key to value")
        for key, value in doc.items():
            tags[str(key)] = json.dumps(value) if isinstance(value, bool) else str(value)
    for item in request.query_params.getlist("tag"):
        key, sep, value = item.partition(":")
        if not sep:
            raise BadParameter(f"tag must look like key:value, got {item!r}")
        tags[key] = value
    return tags


def trace_query(request: Request) -> TraceQuery:
    params = request.query_params
    service = params.get("service")
    if not service:
        raise BadParameter("parameter 'service' is required")
    end_us = _int(request, "end")
    end = end_us * 1000 if end_us is not None else time.time_ns()
    start_us = _int(request, "start")
    if start_us is not None:
        start = start_us * 1000
    else:
        lookback = params.get("lookback")
        start = end - (
            parse_duration(lookback, allow_days=True)
            if lookback and lookback != "custom"
            else DEFAULT_LOOKBACK_NS
        )
    if start > end:
        raise BadParameter("start must not be after end")
    limit = _int(request, "limit") or DEFAULT_LIMIT
    if limit < 0:
        raise BadParameter("limit must not be negative")
    min_d, max_d = params.get("minDuration"), params.get("maxDuration")
    return TraceQuery(
        service=service,
        start_min=start,
        start_max=end,
        operation=params.get("operation") or None,
        tags=_tags(request),
        duration_min=parse_duration(min_d) if min_d else None,
        duration_max=parse_duration(max_d) if max_d else None,
        limit=limit,
    )


def jaeger_routes(store: Store) -> list[Route]:
    async def services(request: Request) -> JSONResponse:
        return _envelope(await asyncio.to_thread(store.services))

    async def service_operations(request: Request) -> JSONResponse:
        ops = await asyncio.to_thread(store.operations, request.path_params["service"])
        return _envelope(sorted({name for name, _ in ops}))

    async def operations(request: Request) -> JSONResponse:
        service = request.query_params.get("service")
        if not service:
            return _error(400, "parameter 'service' is required")
        kind_name = (request.query_params.get("spanKind") or "").lower()
        kinds = {v: k for k, v in KIND_NAMES.items()}
        if kind_name and kind_name not in kinds:
            return _error(400, f"unknown spanKind {kind_name!r}: use one of {', '.join(kinds)}")
        ops = await asyncio.to_thread(store.operations, service, kinds.get(kind_name))
        return _envelope([{"name": name, "spanKind": KIND_NAMES.get(kind, "")} for name, kind in ops])

    async def find_traces(request: Request) -> JSONResponse:
        try:
            ids_text = request.query_params.getlist("traceID")
            if ids_text:
                ids = [parse_trace_id(t) for t in ids_text]
                if None in ids:
                    raise BadParameter("traceID must be up to 32 hex characters")
                trace_ids = [t for t in ids if t is not None]
            else:
                trace_ids = await asyncio.to_thread(store.find_traces, trace_query(request))
        except (BadParameter, DurationError) as exc:
            return _error(400, str(exc))
        if not trace_ids:
            return _envelope([])
        batch = await asyncio.to_thread(store.get_traces, trace_ids)
        by_id = {t["traceID"]: t for t in to_jaeger_traces(batch)}
        return _envelope([by_id[jaeger_id(t)] for t in trace_ids if jaeger_id(t) in by_id])

    async def get_trace(request: Request) -> JSONResponse:
        text = request.path_params["trace_id"]
        trace_id = parse_trace_id(text)
        if trace_id is None:
            return _error(400, f"trace id {text[:64]!r} is not up to 32 hex characters")
        batch = await asyncio.to_thread(store.get_trace, trace_id)
        if not len(batch):
            return _error(404, "trace not found")
        return _envelope(to_jaeger_traces(batch))

    async def dependencies(request: Request) -> JSONResponse:
        try:
            end_ms = _int(request, "endTs") or time.time_ns() // 10**6
            lookback_ms = _int(request, "lookback") or DEFAULT_DEPENDENCY_LOOKBACK_MS
        except (BadParameter, DurationError) as exc:
            return _error(400, str(exc))
        end = end_ms * 10**6
        rows = await asyncio.to_thread(store.dependencies, end - lookback_ms * 10**6, end)
        return _envelope([{"parent": p, "child": c, "callCount": n} for p, c, n in rows])

    return [
        Route("/api/services", services),
        Route("/api/services/{service}/operations", service_operations),
        Route("/api/operations", operations),
        Route("/api/traces", find_traces),
        Route("/api/traces/{trace_id}", get_trace),
        Route("/api/dependencies", dependencies),
    ]
