"""The application on the http port (16686): the web UI, the native API and Jaeger's API."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clew.query.api import native_routes
from clew.query.jaeger_api import jaeger_routes
from clew.query.metrics_api import metrics_routes
from clew.store.base import Store

STATIC = Path(__file__).parent / "static"
# Everything the UI loads comes from clew itself: no fonts, scripts or calls to other hosts, and no
# inline script, so span data that slipped into markup still could not run.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
# Jaeger UI's addresses, so links people already share keep their shape.
UI_PATHS = ["/", "/search", "/trace/{trace_id}", "/dependencies", "/compare"]


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"content-security-policy", CSP.encode()))
                headers.append((b"x-content-type-options", b"nosniff"))
                headers.append((b"referrer-policy", b"no-referrer"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def http_app(store: Store, counters: Callable[[], dict[str, tuple[str, float]]] | None = None) -> Starlette:
    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def ui(request: Request) -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            *native_routes(store),
            *metrics_routes(store, counters),
            *jaeger_routes(store),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
            *(Route(path, ui) for path in UI_PATHS),
        ],
        middleware=[Middleware(SecurityHeaders)],
    )
