"""The application on the http port (16686)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from clew.query.api import native_routes
from clew.query.jaeger_api import jaeger_routes
from clew.store.base import Store


def http_app(store: Store) -> Starlette:
    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/healthz", healthz), *native_routes(store), *jaeger_routes(store)])
