"""The `Host` header a request may carry. A server on loopback answers only to loopback names: a
web page whose own name an attacker re-points at 127.0.0.1 (DNS rebinding) sends its name in `Host`
and is refused, so it cannot read the API through the victim's browser."""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})


def host_name(header: str) -> str:
    """The name in a `Host` header, without its port: `[::1]:80` -> `::1`, `a.b:1` -> `a.b`."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class HostCheck:
    """Answers 400 to a request whose `Host` names none of `allowed` (None: any name)."""

    def __init__(self, app: ASGIApp, allowed: frozenset[str] | None) -> None:
        self.app, self.allowed = app, allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.allowed is not None:
            host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
            if host_name(host) not in self.allowed:
                reason = (
                    f"Host {host[:60]!r} is not served here: use one of {', '.join(sorted(self.allowed))}"
                )
                await JSONResponse({"error": reason}, 400)(scope, receive, send)
                return
        await self.app(scope, receive, send)
