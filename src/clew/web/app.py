"""The application on the http port (16686)."""

from __future__ import annotations

import asyncio

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from clew.model import parse_trace_id
from clew.query.jaeger_api import jaeger_routes
from clew.query.otlp import to_traces_data
from clew.receivers.otlp import to_otlp_json
from clew.store.base import Store


def http_app(store: Store) -> Starlette:
    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def get_trace(request: Request) -> JSONResponse:
        text = request.path_params["trace_id"]
        trace_id = parse_trace_id(text)
        if trace_id is None:
            return JSONResponse({"error": f"trace id {text[:64]!r} is not up to 32 hex characters"}, 400)
        batch = await asyncio.to_thread(store.get_trace, trace_id)
        if not len(batch):
            return JSONResponse({"error": f"trace {trace_id.hex()} not found"}, 404)
        return JSONResponse(to_otlp_json(to_traces_data(batch)))

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/api/v1/traces/{trace_id}", get_trace),
            *jaeger_routes(store),
        ]
    )
