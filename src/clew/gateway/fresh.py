"""Reads see every acknowledged span. Ingest answers once spans are in the write-ahead log and
commits the log to the store later (clew.ingest.logged); before a query under /api/ runs, the log is
committed up to that moment (at most `timeout` seconds of waiting, then the query runs anyway). So a
client that sent spans and then asks for them always finds them, and the commit interval is free to
be long when nobody reads, which is what an idle server's CPU pays for."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Receive, Scope, Send


class FreshReads:
    def __init__(
        self, app: ASGIApp, flushed: Callable[[float], Awaitable[bool]], timeout: float = 5.0
    ) -> None:
        self.app, self.flushed, self.timeout = app, flushed, timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/api/"):
            await self.flushed(self.timeout)
        await self.app(scope, receive, send)
