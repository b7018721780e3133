"""The web UI: one HTML shell for every UI address, static files, and the security headers of the
http port (the server mounts these beside the APIs)."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC = Path(__file__).parent / "static"
# Everything the UI loads comes from clew itself: no fonts, scripts or calls to other hosts, and no
# inline script, so span data that slipped into markup still could not run.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
# Jaeger UI's addresses, so links people already share keep their shape.
UI_PATHS = [
    "/",
    "/search",
    "/logs",
    "/trace/{trace_id}",
    "/dependencies",
    "/compare",
    "/monitor",
    "/releases",
    "/alerts",
    "/signin",
]


def is_ui_path(path: str) -> bool:
    """The UI's shell and static files: no data is served there, so they load without a key (the
    sign-in page among them); every call for data goes to /api and needs one."""
    return path.startswith("/static/") or path in UI_PATHS or path.startswith("/trace/")


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


async def _ui(request: Request) -> FileResponse:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def not_found(request: Request, exc: Exception) -> Response:
    """An address nothing serves: the UI's shell with 404 (it shows "Not found" with its navigation)
    for a browser, a JSON reason for the API."""
    path = request.url.path
    if path.startswith("/api/") or path in ("/metrics", "/healthz"):
        return JSONResponse({"error": f"no such endpoint: {path[:200]}"}, 404)
    return FileResponse(STATIC / "index.html", status_code=404, headers={"Cache-Control": "no-cache"})


def ui_routes() -> list[BaseRoute]:
    """The UI shell at Jaeger UI's addresses, and its static files."""
    return [
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
        *(Route(path, _ui) for path in UI_PATHS),
    ]
