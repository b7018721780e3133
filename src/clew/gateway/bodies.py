"""What request bodies may cost the server: time and memory, shared by every client.

A body that stops arriving is answered 408 after `timeout` seconds without a byte (a client holding
thousands of half-sent requests open holds nothing for long). The bytes of bodies being received at
once are bounded by `budget`: a request that would go over it is answered 503 with `Retry-After`
(backpressure, which OTLP exporters retry), unless it is the only one in flight, so that a single
request up to the body limit always gets through."""

from __future__ import annotations

import asyncio
import threading

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clew.core.errors import Backpressure, ClewError, RequestTimeout
from clew.gateway.errors import problem


class BodyBudget:
    """Bytes of request bodies held at once, across every port."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.requests = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> bool:
        with self._lock:
            if self.requests > 1 and self.held + n > self.limit:
                return False
            self.held += n
            return True

    def enter(self) -> None:
        with self._lock:
            self.requests += 1

    def leave(self, n: int) -> None:
        with self._lock:
            self.held -= n
            self.requests -= 1


class BodyGuard:
    def __init__(self, app: ASGIApp, timeout: float, budget: BodyBudget) -> None:
        self.app, self.timeout, self.budget = app, timeout, budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held = 0
        complete = False
        started = False

        async def guarded_receive() -> Message:
            nonlocal held, complete
            if complete:  # the body is in: waiting for a disconnect has no deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.timeout)
            except TimeoutError:
                raise RequestTimeout(
                    f"the request body stopped arriving: nothing for {self.timeout:g} s (body_timeout_s)"
                ) from None
            if message["type"] == "http.request":
                size = len(message.get("body", b""))
                if not self.budget.take(size):
                    raise Backpressure(
                        message="the server is receiving too many large requests at once, retry later"
                    )
                held += size
                complete = not message.get("more_body", False)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        self.budget.enter()
        try:
            await self.app(scope, guarded_receive, tracking_send)
        except ClewError as exc:  # raised where the app does not map errors itself
            if started:
                raise
            p = problem(exc)
            await JSONResponse({"error": p.message}, p.status, dict(p.headers))(scope, receive, send)
        finally:
            self.budget.leave(held)
