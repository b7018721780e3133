"""clew's native HTTP API (`/api/v1/...`): traces as OTLP/JSON and query-language search."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from clew.components.http import number, seconds_window, tenant, time_range, time_range_ns, trace_id_param
from clew.core.errors import BadRequest, NotFound
from clew.core.language import parse
from clew.core.model import StatusCode
from clew.core.otlp import to_otlp_json, to_traces_data
from clew.store.traces import SearchRequest, SearchResult, TraceReader, TraceSummary

DEFAULT_SEARCH_LIMIT = 20  # Tempo's default
MAX_SEARCH_LIMIT = 1000
DEFAULT_SEARCH_WINDOW_S = 3600
MAX_SPANS_PER_TRACE = 100
# a trace of more spans opens in the UI from its skeleton, each span's details fetched when shown
DEFAULT_FULL_TRACE_SPANS = 5000
_STATUS_NAMES = {s.value: s.name.lower() for s in StatusCode}


def search_request(
    request: Request,
    q: str | None = None,
    min_trace_duration: int | None = None,
    max_trace_duration: int | None = None,
) -> SearchRequest:
    """Parameters as Tempo's search takes them: `q` (unless given), `start`/`end` in Unix seconds,
    `limit`, `spss`."""
    q = q if q is not None else request.query_params.get("q")
    if q is None:
        raise BadRequest("parameter 'q' is required, for example q={ status = error }")
    start, end = time_range(request)
    limit = number(request, "limit", DEFAULT_SEARCH_LIMIT, 1, MAX_SEARCH_LIMIT)
    if limit != int(limit):
        raise BadRequest(f"limit must be a whole number from 1 to {MAX_SEARCH_LIMIT}")
    spss = number(request, "spss", 3, 1, MAX_SPANS_PER_TRACE)
    if spss != int(spss):
        raise BadRequest(f"spss must be a whole number from 1 to {MAX_SPANS_PER_TRACE}")
    return SearchRequest(
        query=parse(q),
        start=int(start * 10**9),
        end=int(end * 10**9),
        limit=int(limit),
        spans_per_trace=int(spss),
        tenant=tenant(request),
        min_trace_duration=min_trace_duration,
        max_trace_duration=max_trace_duration,
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
                    **(
                        {
                            "attributes": [
                                {"key": k, "value": {"stringValue": v}} for k, v in span.attributes.items()
                            ]
                        }
                        if span.attributes
                        else {}
                    ),
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


def skeleton_json(trace_id: bytes, table: pa.Table, full_trace_spans: int) -> dict[str, Any]:
    """A trace's skeleton as columns (one array a field, services and names as indexes into their
    lists), built column by column: a 100,000-span trace is never a Python object per span.
    `full` says whether the UI should fetch the whole trace at once (at most `full_trace_spans`)."""
    starts = table.column("start")
    base = pc.min(starts).as_py()
    columns: dict[str, Any] = {}
    lists: dict[str, list[str]] = {}
    for name in table.column_names:
        column = table.column(name)
        if name in ("service", "name"):
            encoded = column.dictionary_encode().combine_chunks()
            lists[name] = encoded.dictionary.to_pylist()
            column = encoded.indices
        elif name == "start":
            column = pc.subtract(starts, base)
        columns[_camel(name)] = column.to_pylist()
    return {
        "traceID": trace_id.hex(),
        "startTimeUnixNano": str(base),
        "spanCount": table.num_rows,
        "full": table.num_rows <= full_trace_spans,
        "services": lists["service"],
        "names": lists["name"],
        "spans": columns,
    }


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def span_id_param(request: Request) -> bytes:
    text = request.path_params["span_id"]
    if not re.fullmatch(r"[0-9a-fA-F]{16}", text):
        raise BadRequest("a span id is 16 hexadecimal digits")
    return bytes.fromhex(text)


def native_routes(reader: TraceReader, full_trace_spans: int = DEFAULT_FULL_TRACE_SPANS) -> list[Route]:
    async def get_trace(request: Request) -> JSONResponse:
        trace_id = trace_id_param(request)
        batch = await asyncio.to_thread(reader.get_trace, trace_id, tenant(request), seconds_window(request))
        if not len(batch):
            raise NotFound(f"trace {trace_id.hex()} not found")
        return JSONResponse(to_otlp_json(to_traces_data(batch)))

    async def skeleton(request: Request) -> Response:
        trace_id = trace_id_param(request)
        table = await asyncio.to_thread(reader.skeleton, trace_id, tenant(request))
        if not table.num_rows:
            raise NotFound(f"trace {trace_id.hex()} not found")
        doc = await asyncio.to_thread(skeleton_json, trace_id, table, full_trace_spans)
        return Response(orjson.dumps(doc), media_type="application/json")

    async def get_span(request: Request) -> JSONResponse:
        trace_id, span_id = trace_id_param(request), span_id_param(request)
        batch = await asyncio.to_thread(reader.get_span, trace_id, span_id, tenant(request))
        if not len(batch):
            raise NotFound(f"span {span_id.hex()} of trace {trace_id.hex()} not found")
        return JSONResponse(to_otlp_json(to_traces_data(batch)))

    async def search(request: Request) -> JSONResponse:
        search_req = search_request(request)
        result = await asyncio.to_thread(reader.search, search_req)
        return JSONResponse(search_json(search_req, request.query_params["q"], result))

    async def linked_from(request: Request) -> JSONResponse:
        """Back-references: spans of other traces (starting in `start`..`end`) linking to this one."""
        trace_id = trace_id_param(request)
        start, end = time_range_ns(request)
        refs = await asyncio.to_thread(reader.linked_from, trace_id, start, end, tenant(request))
        return JSONResponse(
            {
                "linkedFrom": [
                    {
                        "traceID": r.trace_id.hex(),
                        "spanID": r.span_id.hex(),
                        "service": r.service,
                        "name": r.name,
                        "linkedSpanID": r.linked_span_id.hex(),
                    }
                    for r in refs
                ]
            }
        )

    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(OPENAPI)

    return [
        Route("/api/v1/traces/{trace_id}", get_trace),
        Route("/api/v1/traces/{trace_id}/linked-from", linked_from),
        Route("/api/v1/traces/{trace_id}/skeleton", skeleton),
        Route("/api/v1/traces/{trace_id}/spans/{span_id}", get_span),
        Route("/api/v1/search", search),
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
                    _param(
                        "start",
                        "query",
                        "Unix seconds: a hint of when the trace ran; only spans starting at most an hour "
                        "earlier are read, which makes the lookup cheaper",
                        {"type": "number"},
                    ),
                    _param(
                        "end",
                        "query",
                        "Unix seconds: only spans starting at most an hour later are read",
                        {"type": "number"},
                    ),
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
        "/api/v1/traces/{traceID}/skeleton": {
            "get": {
                "summary": "The trace's shape as columns (one array a field): ids, names, services, "
                "start offsets, durations, status, kinds, counts of attributes and events, in-trace links; "
                "`full` says whether it is small enough (full_trace_spans) to fetch whole",
                "parameters": [
                    _param("traceID", "path", "up to 32 hex characters", {"type": "string"}, True),
                    _TENANT_HEADER,
                ],
                "responses": {
                    "200": {
                        "description": "the skeleton",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "404": _ERROR,
                },
            }
        },
        "/api/v1/traces/{traceID}/spans/{spanID}": {
            "get": {
                "summary": "One span of the trace, whole, as OTLP/JSON (with its resource and scope)",
                "parameters": [
                    _param("traceID", "path", "up to 32 hex characters", {"type": "string"}, True),
                    _param("spanID", "path", "16 hex characters", {"type": "string"}, True),
                    _TENANT_HEADER,
                ],
                "responses": {
                    "200": {
                        "description": "OTLP/JSON TracesData",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "400": _ERROR,
                    "404": _ERROR,
                },
            }
        },
        "/api/v1/traces/{traceID}/linked-from": {
            "get": {
                "summary": "Spans of other traces that link to this one (back-references), oldest first, at most 100",
                "parameters": [
                    _param("traceID", "path", "up to 32 hex characters", {"type": "string"}, True),
                    _param(
                        "start", "query", "Unix seconds (default: an hour before end)", {"type": "number"}
                    ),
                    _param("end", "query", "Unix seconds (default: now)", {"type": "number"}),
                    _TENANT_HEADER,
                ],
                "responses": {
                    "200": {
                        "description": "linkedFrom: traceID, spanID, service, name, linkedSpanID",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "400": _ERROR,
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
