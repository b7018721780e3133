"""The limits per tenant the edges enforce (clew.core.limits has the settings), so that no tenant's
traffic or queries degrade another's: spans a second (a token bucket per tenant: 429 /
RESOURCE_EXHAUSTED with a retry hint past it), queries at once (429 past it), and the time one query
may run (the engine stops it: 422 naming the budget)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Awaitable, Callable

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clew.core.budget import QUERY_SECONDS
from clew.core.errors import TooLarge, TooManyRequests
from clew.core.identity import caller_of
from clew.core.limits import LimitsConfig
from clew.core.model import OtlpBatch
from clew.gateway.errors import problem


class SpanRate:
    """A token bucket per tenant holding up to one second of its rate. A request may take the
    bucket below zero (a large batch is never refused for its size alone); while it is below, the
    tenant's requests are refused with the time until it refills."""

    def __init__(self, config: LimitsConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config, self.clock = config, clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # tenant -> (tokens, when)

    def admit(self, tenant: str, spans: int) -> None:
        rate = self.config.of(tenant).spans_per_second
        if rate <= 0:
            return
        now = self.clock()
        with self._lock:
            tokens, when = self._buckets.get(tenant, (rate, now))
            tokens = min(rate, tokens + (now - when) * rate)
            if tokens <= 0:
                self._buckets[tenant] = (tokens, now)
                wait = max(1, math.ceil(-tokens / rate + spans / rate))
                raise TooManyRequests(
                    f"tenant {tenant!r} is over its limit of {rate:g} spans a second (spans_per_second)",
                    retry_after=wait,
                )
            self._buckets[tenant] = (tokens - spans, now)


def rate_limited(
    write: Callable[[OtlpBatch], Awaitable[None]], rate: SpanRate
) -> Callable[[OtlpBatch], Awaitable[None]]:
    """The ingest sink with each tenant's rate checked before its spans are taken."""

    async def limited(batch: OtlpBatch) -> None:
        rate.admit(batch.tenant, len(batch))
        await write(batch)

    return limited


class QueryGate:
    """Around the query API (paths under /api/): at most `max_concurrent_queries` of a tenant at
    once, each given the tenant's `query_timeout_s` for the engine (clew.core.budget)."""

    def __init__(self, app: ASGIApp, config: LimitsConfig) -> None:
        self.app, self.config = app, config
        self._lock = threading.Lock()
        self._running: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return
        tenant = caller_of(scope).tenant
        limits = self.config.of(tenant)
        with self._lock:
            running = self._running.get(tenant, 0)
            if running >= limits.max_concurrent_queries:
                refused = TooManyRequests(
                    f"tenant {tenant!r} already runs {running} queries, its limit "
                    f"(max_concurrent_queries): retry when one is done"
                )
            else:
                refused = None
                self._running[tenant] = running + 1
        if refused is not None:
            p = problem(refused)
            await JSONResponse({"error": p.message}, p.status, dict(p.headers))(scope, receive, send)
            return
        token = QUERY_SECONDS.set(limits.query_timeout_s)
        try:
            await self.app(scope, receive, send)
        finally:
            QUERY_SECONDS.reset(token)
            with self._lock:
                self._running[tenant] -= 1


class RequestSize:
    """Around an ingest port: a tenant's request body past its `max_request_bytes` is answered 413
    (counted as it arrives, so a chunked body is cut off as soon as it goes over)."""

    def __init__(self, app: ASGIApp, config: LimitsConfig) -> None:
        self.app, self.config = app, config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tenant = caller_of(scope).tenant if scope["type"] == "http" else ""
        limit = self.config.of(tenant).max_request_bytes if tenant else 0
        if limit <= 0:
            await self.app(scope, receive, send)
            return
        size = 0

        async def counted() -> Message:
            nonlocal size
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > limit:
                    raise TooLarge(
                        f"request body is over tenant {tenant!r}'s limit of {limit} bytes (max_request_bytes)"
                    )
            return message

        await self.app(scope, counted, send)
