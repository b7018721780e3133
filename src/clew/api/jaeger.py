"""Jaeger's HTTP query API (`/api/...`): the paths, parameters and JSON that Jaeger UI and Grafana use."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from clew.api.jaeger_model import KIND_NAMES, add_log_records, jaeger_id, to_jaeger_traces
from clew.components.http import (
    MAX_LIMIT,
    epoch_param,
    int_param,
    jaeger_envelope,
    tenant,
    trace_id_param,
    trace_window,
)
from clew.core.durations import parse_duration
from clew.core.errors import BadRequest, NotFound
from clew.core.json_body import load_json
from clew.core.model import parse_trace_id
from clew.store.traces import TraceQuery, TraceReader

DEFAULT_LIMIT = 100
DEFAULT_LOOKBACK_NS = 3600 * 10**9  # Jaeger UI's "Last Hour"


def _tags(request: Request) -> dict[str, str]:
    tags: dict[str, str] = {}
    raw = request.query_params.get("tags")
    if raw:
        try:
            doc = load_json(raw.encode("utf-8", "surrogatepass"))
        except BadRequest as exc:
            raise BadRequest(f"tags must be a JSON object: {exc}") from exc
        if not isinstance(doc, dict):
            raise BadRequest("tags must be a JSON object of key to value")
        for key, value in doc.items():
            tags[str(key)] = json.dumps(value) if isinstance(value, bool) else str(value)
    for item in request.query_params.getlist("tag"):
        key, sep, value = item.partition(":")
        if not sep:
            raise BadRequest(f"tag must look like key:value, got {item!r}")
        tags[key] = value
    return tags


def trace_query(request: Request) -> TraceQuery:
    params = request.query_params
    service = params.get("service")
    if not service:
        raise BadRequest("parameter 'service' is required")
    end_ns = epoch_param(request, "end", 1000)  # microseconds, as Jaeger's UI sends them
    end = end_ns if end_ns is not None else time.time_ns()
    start_ns = epoch_param(request, "start", 1000)
    if start_ns is not None:
        start = start_ns
    else:
        lookback = params.get("lookback")
        start = end - (
            parse_duration(lookback, allow_days=True)
            if lookback and lookback != "custom"
            else DEFAULT_LOOKBACK_NS
        )
    if start > end:
        raise BadRequest("start must not be after end")
    limit = int_param(request, "limit", 0, MAX_LIMIT) or DEFAULT_LIMIT
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
        tenant=tenant(request),
    )


# (tenant, trace id) -> {"logs": [...]}: the log records of a trace, as the logs component answers
TraceLogs = Callable[[str, bytes], dict[str, Any]]


def jaeger_routes(reader: TraceReader, trace_logs: TraceLogs | None = None) -> list[Route]:
    """Jaeger's query API. With `trace_logs`, a trace fetched by id carries the OTLP log records of
    each span among the span's `logs` (after its events), which is where Jaeger UI and Grafana's
    Jaeger data source show them."""

    async def services(request: Request) -> JSONResponse:
        return jaeger_envelope(await asyncio.to_thread(reader.services, tenant(request)))

    async def service_operations(request: Request) -> JSONResponse:
        ops = await asyncio.to_thread(
            reader.operations, request.path_params["service"], None, tenant(request)
        )
        return jaeger_envelope(sorted({name for name, _ in ops}))

    async def operations(request: Request) -> JSONResponse:
        service = request.query_params.get("service")
        if not service:
            raise BadRequest("parameter 'service' is required")
        kind_name = (request.query_params.get("spanKind") or "").lower()
        kinds = {v: k for k, v in KIND_NAMES.items()}
        if kind_name and kind_name not in kinds:
            raise BadRequest(f"unknown spanKind {kind_name!r}: use one of {', '.join(kinds)}")
        ops = await asyncio.to_thread(reader.operations, service, kinds.get(kind_name), tenant(request))
        return jaeger_envelope([{"name": name, "spanKind": KIND_NAMES.get(kind, "")} for name, kind in ops])

    async def find_traces(request: Request) -> JSONResponse:
        ids_text = request.query_params.getlist("traceID")
        if ids_text:
            ids = [parse_trace_id(t) for t in ids_text]
            if None in ids:
                raise BadRequest("traceID must be up to 32 hex characters")
            trace_ids = [t for t in ids if t is not None]
        else:
            trace_ids = await asyncio.to_thread(reader.find_traces, trace_query(request))
        if not trace_ids:
            return jaeger_envelope([])
        batch = await asyncio.to_thread(reader.get_traces, trace_ids, tenant(request))
        by_id = {t["traceID"]: t for t in to_jaeger_traces(batch)}
        return jaeger_envelope([by_id[jaeger_id(t)] for t in trace_ids if jaeger_id(t) in by_id])

    async def get_trace(request: Request) -> JSONResponse:
        trace_id = trace_id_param(request)
        # Jaeger's optional time hint, in microseconds as its search takes them
        window = trace_window(epoch_param(request, "start", 1000), epoch_param(request, "end", 1000))
        # the spans and their log records at once, on two of the store's readers
        spans = asyncio.to_thread(reader.get_trace, trace_id, tenant(request), window)
        if trace_logs is None:
            batch, records = await spans, None
        else:
            batch, records = await asyncio.gather(
                spans, asyncio.to_thread(trace_logs, tenant(request), trace_id)
            )
        if not len(batch):
            raise NotFound("trace not found")
        traces = to_jaeger_traces(batch)
        if records is not None:
            add_log_records(traces, records["logs"])
        return jaeger_envelope(traces)

    return [
        Route("/api/services", services),
        Route("/api/services/{service}/operations", service_operations),
        Route("/api/operations", operations),
        Route("/api/traces", find_traces),
        Route("/api/traces/{trace_id}", get_trace),
    ]
