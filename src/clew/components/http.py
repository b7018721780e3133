"""What the components' routes share: the caller's tenant, time ranges, JSON answers off the loop.

Errors are raised as domain exceptions (`clew.core.errors`) and answered by the app's one mapping
(`clew.gateway.errors`), never caught route by route."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from clew.core.errors import BadRequest
from clew.core.identity import caller_of
from clew.core.model import parse_trace_id

DEFAULT_WINDOW_S = 3600


def tenant(request: Request) -> str:
    return caller_of(request.scope).tenant


def number(request: Request, name: str, default: float) -> float:
    text = request.query_params.get(name)
    if text in (None, ""):
        return default
    try:
        return float(text)
    except ValueError:
        raise BadRequest(f"{name} must be a number, got {text[:40]!r}") from None


def time_range(request: Request) -> tuple[float, float]:
    """`start`/`end` in Unix seconds, the last hour by default."""
    end = number(request, "end", time.time())
    start = number(request, "start", end - DEFAULT_WINDOW_S)
    if start > end:
        raise BadRequest("start must not be after end")
    return start, end


def over_time_range(
    compute: Callable[[int, int, str], dict[str, Any]],
) -> Callable[[Request], Awaitable[JSONResponse]]:
    """An endpoint answering `compute(start_ns, end_ns, tenant)` as JSON for `start`/`end` in seconds."""

    async def endpoint(request: Request) -> JSONResponse:
        start, end = time_range(request)
        answer = await asyncio.to_thread(compute, int(start * 10**9), int(end * 10**9), tenant(request))
        return JSONResponse(answer)

    return endpoint


def int_param(request: Request, name: str) -> int | None:
    text = request.query_params.get(name)
    if text in (None, ""):
        return None
    try:
        return int(text)
    except ValueError as exc:
        raise BadRequest(f"{name} must be an integer, got {text!r}") from exc


def jaeger_envelope(data: Any, status: int = 200, errors: list[dict[str, Any]] | None = None) -> JSONResponse:
    """Jaeger's query API answers in this envelope, errors included."""
    total = len(data) if isinstance(data, list) else 0
    return JSONResponse({"data": data, "total": total, "limit": 0, "offset": 0, "errors": errors}, status)


def trace_id_param(request: Request) -> bytes:
    text = request.path_params["trace_id"]
    trace_id = parse_trace_id(text)
    if trace_id is None:
        raise BadRequest(f"trace id {text[:64]!r} is not up to 32 hex characters")
    return trace_id
