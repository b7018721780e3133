"""Jaeger's v3 query API (`/api/v3`, Jaeger 2.x) on the http port: services, operations, a trace by
id, trace search and trace summaries, answered as Jaeger's HTTP gateway does: OTLP/JSON traces in
`{"result": ...}`, errors as `{"error": {"httpCode", "message"}}`. Query parameters are accepted in
the gateway's snake_case (`query.service_name`, what Jaeger UI sends) and in the IDL's camelCase
(`query.serviceName`)."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from clew.components.http import tenant, trace_id_param, trace_window
from clew.core.errors import BadRequest, NotFound
from clew.core.json_body import load_json
from clew.core.language import DURATION_UNITS
from clew.core.model import KIND_CODES
from clew.core.otlp import to_otlp_json, to_traces_data
from clew.store.traces import TraceQuery, TraceReader

KIND_NAMES = {code: name for name, code in KIND_CODES.items()}
DEFAULT_NUM_TRACES = 20
MAX_NUM_TRACES = 1000
_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNITS = {**DURATION_UNITS, "μs": 10**3}  # Go also reads the Greek mu
_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$", re.I)


def param(request: Request, *names: str) -> str | None:
    """The first of `names` given, each tried as `query.<snake>` and `query.<camel>`."""
    for name in names:
        camel = re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)
        for key in (f"query.{name}", f"query.{camel}"):
            if key in request.query_params:
                return request.query_params[key]
    return None


def rfc3339_ns(text: str, name: str) -> int:
    """RFC 3339 with up to nanoseconds, as the gateway takes times. A time outside what nanoseconds
    since 1970 hold in 64 bits (1677-2262, the store's range) is the nearest end of it: a search
    ending in the year 3000 means "until any time", and found nothing when passed on as it was."""
    m = _RFC3339.match(text.strip())
    if m is None:
        raise BadRequest(
            f"{name} must be an RFC 3339 time such as 2026-11-30T12:00:00.000000000Z, got {text!r}"
        )
    try:
        seconds = datetime.fromisoformat(m.group(1) + (m.group(3).upper().replace("Z", "+00:00"))).timestamp()
    except ValueError as exc:
        raise BadRequest(f"{name}: {exc}") from exc
    ns = int(seconds) * 10**9 + int((m.group(2) or "0").ljust(9, "0"))
    return min(max(ns, -(2**63)), 2**63 - 1)


def go_duration_ns(text: str, name: str) -> int:
    """Go's duration syntax (`1.5s`, `100ms`, `1h30m`), as the gateway takes durations."""
    body = text.strip()
    total, at = 0, 0
    while at < len(body):
        m = _GO_DURATION.match(body, at)
        if m is None:
            raise BadRequest(f"{name} must be a duration such as 100ms, 1.5s or 1h30m, got {text!r}")
        part = float(m.group(1)) * _UNITS[m.group(2)]
        if part > 2**63 - 1:  # infinite too, where the number has hundreds of digits
            total = 2**63
            break
        total += int(part)
        at = m.end()
    if not body or total > 2**63 - 1:
        raise BadRequest(f"{name} must be a duration from 0 to 2562047h, got {text!r}")
    return total


def attributes(request: Request) -> dict[str, str]:
    """`query.attributes` as a JSON object (what Jaeger UI sends) or `query.attributes[key]=value`."""
    out: dict[str, str] = {}
    raw = param(request, "attributes")
    if raw:
        try:
            doc = load_json(raw.encode("utf-8", "surrogatepass"))
        except BadRequest as exc:
            raise BadRequest(
                f'query.attributes must be a JSON object such as {{"http.status_code":"500"}}: {exc}'
            ) from exc
        if not isinstance(doc, dict):
            raise BadRequest('query.attributes must be a JSON object such as {"http.status_code":"500"}')
        out.update({str(k): v if isinstance(v, str) else json.dumps(v) for k, v in doc.items()})
    for key, value in request.query_params.multi_items():
        m = re.fullmatch(r"query\.attributes\[(.+)\]", key)
        if m:
            out[m.group(1)] = value
    return out


def trace_query(request: Request) -> TraceQuery:
    service = param(request, "service_name")
    if not service:
        raise BadRequest("query.service_name is required")
    start_min, start_max = param(request, "start_time_min"), param(request, "start_time_max")
    if not start_min or not start_max:
        raise BadRequest("query.start_time_min and query.start_time_max are required (RFC 3339)")
    low, high = rfc3339_ns(start_min, "query.start_time_min"), rfc3339_ns(start_max, "query.start_time_max")
    if low > high:
        raise BadRequest("query.start_time_min is after query.start_time_max")
    duration_min, duration_max = param(request, "duration_min"), param(request, "duration_max")
    limit_text = param(request, "num_traces", "search_depth")
    try:
        limit = int(limit_text) if limit_text else DEFAULT_NUM_TRACES
    except ValueError as exc:
        raise BadRequest(f"query.num_traces must be a whole number, got {limit_text!r}") from exc
    if not 1 <= limit <= MAX_NUM_TRACES:
        raise BadRequest(f"query.num_traces must be from 1 to {MAX_NUM_TRACES}")
    return TraceQuery(
        service=service,
        start_min=low,
        start_max=high,
        operation=param(request, "operation_name", "span_name") or None,
        tags=attributes(request),
        duration_min=go_duration_ns(duration_min, "query.duration_min") if duration_min else None,
        duration_max=go_duration_ns(duration_max, "query.duration_max") if duration_max else None,
        limit=limit,
        tenant=tenant(request),
    )


def jaeger_v3_routes(reader: TraceReader) -> list[Route]:
    async def services(request: Request) -> JSONResponse:
        return JSONResponse({"services": await asyncio.to_thread(reader.services, tenant(request))})

    async def operations(request: Request) -> JSONResponse:
        service = request.query_params.get("service")
        if not service:
            raise BadRequest("service is required")
        kind_name = request.query_params.get("spanKind", request.query_params.get("span_kind", ""))
        kind = None
        if kind_name:
            if kind_name.lower() not in KIND_CODES:
                raise BadRequest(f"spanKind must be one of {', '.join(KIND_CODES)}, got {kind_name!r}")
            kind = KIND_CODES[kind_name.lower()]
        found = await asyncio.to_thread(reader.operations, service, kind, tenant(request))
        return JSONResponse(
            {"operations": [{"name": n, "spanKind": KIND_NAMES.get(k, "")} for n, k in found]}
        )

    async def trace(request: Request) -> JSONResponse:
        trace_id = trace_id_param(request)
        # the gateway's optional time hint (GetTraceRequest's start_time and end_time)
        first, last = (request.query_params.get(name) for name in ("start_time", "end_time"))
        window = trace_window(
            rfc3339_ns(first, "start_time") if first else None, rfc3339_ns(last, "end_time") if last else None
        )
        batch = await asyncio.to_thread(reader.get_trace, trace_id, tenant(request), window)
        if not len(batch):
            raise NotFound("trace not found")
        return JSONResponse({"result": to_otlp_json(to_traces_data(batch))})

    async def find(request: Request) -> JSONResponse:
        query = trace_query(request)
        ids = await asyncio.to_thread(reader.find_traces, query)
        if not ids:
            raise NotFound("No traces found")  # as Jaeger's gateway answers an empty search
        batch = await asyncio.to_thread(reader.get_traces, ids, query.tenant)
        return JSONResponse({"result": to_otlp_json(to_traces_data(batch))})

    async def summaries(request: Request) -> JSONResponse:
        query = trace_query(request)
        ids = await asyncio.to_thread(reader.find_traces, query)
        found = await asyncio.to_thread(reader.summaries, ids, query.tenant)
        out: list[dict[str, Any]] = []
        for trace_id in ids:
            s = found.get(trace_id)
            if s is None:
                continue
            out.append(
                {
                    "traceId": s.trace_id.hex(),
                    "rootServiceName": s.root_service,
                    "rootOperationName": s.root_name,
                    "minStartTimeUnixNano": str(s.start),
                    "maxEndTimeUnixNano": str(s.start + s.duration),
                    "spanCount": s.span_count,
                    "errorSpanCount": s.error_count,
                    "services": [
                        {"name": name, "spanCount": spans, "errorSpanCount": errors}
                        for name, (spans, errors) in s.services.items()
                    ],
                }
            )
        return JSONResponse({"summaries": out})

    return [
        Route("/api/v3/services", services),
        Route("/api/v3/operations", operations),
        Route("/api/v3/traces/{trace_id}", trace),
        Route("/api/v3/traces", find),
        Route("/api/v3/trace-summaries", summaries),
    ]
