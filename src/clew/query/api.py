"""clew's native HTTP API (`/api/v1/...`): traces as OTLP/JSON and query-language search."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from clew.model import DEFAULT_TENANT, StatusCode, parse_trace_id
from clew.query.language import QuerySyntaxError, parse
from clew.query.otlp import to_traces_data
from clew.receivers.otlp import to_otlp_json
from clew.store.base import SearchRequest, SearchResult, Store, TraceSummary

DEFAULT_SEARCH_LIMIT = 20  # Tempo's default
MAX_SEARCH_LIMIT = 1000
DEFAULT_SEARCH_WINDOW_S = 3600
MAX_SPANS_PER_TRACE = 100
_STATUS_NAMES = {s.value: s.name.lower() for s in StatusCode}


class BadParameter(ValueError):
    pass


def _error(status: int, message: str, **extra: object) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status)


def _tenant(request: Request) -> str:
    """Tenants as Tempo and Loki name them: the X-Scope-OrgID header, as on ingest."""
    return request.headers.get("x-scope-orgid") or DEFAULT_TENANT


def _number(request: Request, name: str, default: float) -> float:
    text = request.query_params.get(name)
    if text in (None, ""):
        return default
    try:
        return float(text)
    except ValueError:
        raise BadParameter(f"{name} must be a number, got {text[:40]!r}") from None


def time_range(request: Request) -> tuple[float, float]:
    """`start`/`end` in Unix seconds, the last hour by default."""
    end = _number(request, "end", time.time())
    start = _number(request, "start", end - DEFAULT_SEARCH_WINDOW_S)
    if start > end:
        raise BadParameter("start must not be after end")
    return start, end


def search_request(request: Request) -> SearchRequest:
    """Parameters as Tempo's search takes them: `q`, `start`/`end` in Unix seconds, `limit`, `spss`."""
    q = request.query_params.get("q")
    if q is None:
        raise BadParameter("parameter 'q' is required, for example q={ status = error }")
    start, end = time_range(request)
    limit = _number(request, "limit", DEFAULT_SEARCH_LIMIT)
    if not (1 <= limit <= MAX_SEARCH_LIMIT) or limit != int(limit):
        raise BadParameter(f"limit must be a whole number from 1 to {MAX_SEARCH_LIMIT}")
    spss = _number(request, "spss", 3)
    if not (1 <= spss <= MAX_SPANS_PER_TRACE) or spss != int(spss):
        raise BadParameter(f"spss must be a whole number from 1 to {MAX_SPANS_PER_TRACE}")
    return SearchRequest(
        query=parse(q),
        start=int(start * 10**9),
        end=int(end * 10**9),
        limit=int(limit),
        spans_per_trace=int(spss),
        tenant=_tenant(request),
    )


def summary_json(summary: TraceSummary) -> dict[str, Any]:
    """One search hit, with Tempo's field names where Tempo has one."""
    return {
        "traceID": summary.trace_id.hex(),
        "rootServiceName": summary.root_service,
        "rootTraceName": summary.root_name,
        "startTimeUnixNano": str(summary.start),
        "durationMs": summary.duration // 10**6,
        "durationNanos": str(summary.duration),
        "spanCount": summary.span_count,
        "errorCount": summary.error_count,
        "serviceStats": {
            service: {"spanCount": spans, "errorCount": errors}
            for service, (spans, errors) in summary.services.items()
        },
        "spanSet": {
            "matched": summary.matched,
            "spans": [
                {
                    "spanID": span.span_id.hex(),
                    "service": span.service,
                    "name": span.name,
                    "startTimeUnixNano": str(span.start),
                    "durationNanos": str(span.duration),
                    "status": _STATUS_NAMES.get(span.status_code, "unset"),
                }
                for span in summary.spans
            ],
        },
    }


def search_json(request: SearchRequest, q: str, result: SearchResult) -> dict[str, Any]:
    return {
        "traces": [summary_json(t) for t in result.traces],
        "metrics": {"inspectedTraces": result.inspected_traces, "completed": result.complete},
        "query": q,
        "start": request.start / 10**9,
        "end": request.end / 10**9,
        "limit": request.limit,
    }


def _over_time_range(
    compute: Callable[[int, int, str], dict[str, Any]],
) -> Callable[[Request], Awaitable[JSONResponse]]:
    """An endpoint answering `compute(start_ns, end_ns, tenant)` as JSON for `start`/`end` in seconds."""

    async def endpoint(request: Request) -> JSONResponse:
        try:
            start, end = time_range(request)
        except BadParameter as exc:
            return _error(400, str(exc))
        answer = await asyncio.to_thread(compute, int(start * 10**9), int(end * 10**9), _tenant(request))
        return JSONResponse(answer)

    return endpoint


def native_routes(store: Store) -> list[Route]:
    async def get_trace(request: Request) -> JSONResponse:
        text = request.path_params["trace_id"]
        trace_id = parse_trace_id(text)
        if trace_id is None:
            return _error(400, f"trace id {text[:64]!r} is not up to 32 hex characters")
        batch = await asyncio.to_thread(store.get_trace, trace_id, _tenant(request))
        if not len(batch):
            return _error(404, f"trace {trace_id.hex()} not found")
        return JSONResponse(to_otlp_json(to_traces_data(batch)))

    async def search(request: Request) -> JSONResponse:
        try:
            search_req = search_request(request)
        except QuerySyntaxError as exc:
            return _error(400, str(exc), position=exc.position, expected=exc.expected)
        except BadParameter as exc:
            return _error(400, str(exc))
        result = await asyncio.to_thread(store.search, search_req)
        return JSONResponse(search_json(search_req, request.query_params["q"], result))

    async def sampling(request: Request) -> JSONResponse:
        text = request.path_params["trace_id"]
        trace_id = parse_trace_id(text)
        if trace_id is None:
            return _error(400, f"trace id {text[:64]!r} is not up to 32 hex characters")
        decision = await asyncio.to_thread(store.sampling.decision, trace_id, _tenant(request))
        answer: dict[str, Any] = {"traceID": trace_id.hex(), "decided": decision is not None}
        if decision is not None:
            answer |= {
                "kept": decision.kept,
                "policies": decision.policies,
                "decidedAt": decision.decided_at // 1000,
                "spans": decision.spans,
            }
        return JSONResponse(answer)

    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(OPENAPI)

    return [
        Route("/api/v1/traces/{trace_id}", get_trace),
        Route("/api/v1/traces/{trace_id}/sampling", sampling),
        Route("/api/v1/search", search),
        Route("/api/v1/completeness", _over_time_range(store.completeness.report)),
        Route("/api/v1/servicegraph", _over_time_range(store.servicegraph.graph)),
        Route("/api/v1/openapi.json", openapi),
    ]


def _param(
    name: str, where: str, description: str, schema: dict[str, Any], required: bool = False
) -> dict[str, Any]:
    return {"name": name, "in": where, "description": description, "required": required, "schema": schema}


_TENANT_HEADER = _param(
    "X-Scope-OrgID", "header", "tenant to read (default `default`), as given on ingest", {"type": "string"}
)
_ERROR = {
    "description": "bad request: the reason, and for a syntax error the 1-based column and what was expected",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {"type": "string"},
                    "position": {"type": "integer"},
                    "expected": {"type": "array", "items": {"type": "string"}},
                },
            }
        }
    },
}


def _range_endpoint(summary: str, description: str) -> dict[str, Any]:
    """An endpoint over `start`/`end` (Unix seconds) and the tenant header, answering JSON."""
    return {
        "get": {
            "summary": summary,
            "parameters": [
                _param("start", "query", "Unix seconds (default end - 1h)", {"type": "number"}),
                _param("end", "query", "Unix seconds (default now)", {"type": "number"}),
                _TENANT_HEADER,
            ],
            "responses": {
                "200": {
                    "description": description,
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "400": _ERROR,
            },
        }
    }


_SPAN = {
    "type": "object",
    "properties": {
        "spanID": {"type": "string"},
        "service": {"type": "string"},
        "name": {"type": "string"},
        "startTimeUnixNano": {"type": "string"},
        "durationNanos": {"type": "string"},
        "status": {"type": "string", "enum": ["unset", "ok", "error"]},
    },
}
_SUMMARY = {
    "type": "object",
    "properties": {
        "traceID": {"type": "string", "description": "32 hex characters"},
        "rootServiceName": {"type": "string"},
        "rootTraceName": {"type": "string"},
        "startTimeUnixNano": {"type": "string"},
        "durationMs": {"type": "integer"},
        "durationNanos": {"type": "string"},
        "spanCount": {"type": "integer"},
        "errorCount": {"type": "integer"},
        "serviceStats": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "properties": {"spanCount": {"type": "integer"}, "errorCount": {"type": "integer"}},
            },
        },
        "spanSet": {
            "type": "object",
            "properties": {"matched": {"type": "integer"}, "spans": {"type": "array", "items": _SPAN}},
        },
    },
}
OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "clew native API",
        "version": "1",
        "description": "Traces as OTLP/JSON and search with clew's query language (docs/query-language.md). "
        "The Jaeger-compatible API lives under /api/ beside it.",
    },
    "paths": {
        "/api/v1/search": {
            "get": {
                "summary": "Traces matching a query, the most recent first",
                "parameters": [
                    _param("q", "query", "the query, e.g. `{ status = error }`", {"type": "string"}, True),
                    _param("start", "query", "Unix seconds (default end - 1h)", {"type": "number"}),
                    _param("end", "query", "Unix seconds (default now)", {"type": "number"}),
                    _param(
                        "limit",
                        "query",
                        f"most traces to return (default {DEFAULT_SEARCH_LIMIT})",
                        {"type": "integer", "minimum": 1, "maximum": MAX_SEARCH_LIMIT},
                    ),
                    _param(
                        "spss",
                        "query",
                        "most matching spans listed per trace (default 3)",
                        {"type": "integer", "minimum": 1, "maximum": MAX_SPANS_PER_TRACE},
                    ),
                    _TENANT_HEADER,
                ],
                "responses": {
                    "200": {
                        "description": "matching traces",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "traces": {"type": "array", "items": _SUMMARY},
                                        "metrics": {
                                            "type": "object",
                                            "properties": {
                                                "inspectedTraces": {"type": "integer"},
                                                "completed": {"type": "boolean"},
                                            },
                                        },
                                        "query": {"type": "string"},
                                        "start": {"type": "number"},
                                        "end": {"type": "number"},
                                        "limit": {"type": "integer"},
                                    },
                                }
                            }
                        },
                    },
                    "400": _ERROR,
                },
            }
        },
        "/api/v1/traces/{traceID}": {
            "get": {
                "summary": "One trace as OTLP/JSON (a TracesData document)",
                "parameters": [
                    _param("traceID", "path", "up to 32 hex characters", {"type": "string"}, True),
                    _TENANT_HEADER,
                ],
                "responses": {
                    "200": {
                        "description": "the trace",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "400": _ERROR,
                    "404": {"description": "no such trace", "content": _ERROR["content"]},
                },
            }
        },
        "/api/v1/traces/{traceID}/sampling": {
            "get": {
                "summary": "The tail-sampling decision for a trace: kept or not, and by which policies",
                "parameters": [
                    _param("traceID", "path", "up to 32 hex characters", {"type": "string"}, True),
                    _TENANT_HEADER,
                ],
                "responses": {
                    "200": {
                        "description": "`decided` false while the trace is still pending; otherwise `kept`, "
                        "`policies` (names from clew.toml), `decidedAt` (microseconds) and `spans`",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "400": _ERROR,
                },
            }
        },
        "/api/v1/completeness": _range_endpoint(
            "Incomplete traces: orphan spans, several roots, propagation gaps, clock skew",
            "per service the share of broken traces, and each kind of break with example trace ids",
        ),
        "/api/v1/servicegraph": _range_endpoint(
            "Services and the calls between them, with errors and latency; uninstrumented peers "
            "(databases, external APIs) as virtual nodes",
            "nodes and edges",
        ),
        "/api/v1/openapi.json": {
            "get": {"summary": "This description", "responses": {"200": {"description": "OpenAPI 3.1"}}}
        },
    },
}
