"""What the components' routes share: the caller's tenant, time ranges, JSON answers off the loop.

Errors are raised as domain exceptions (`clew.core.errors`) and answered by the app's one mapping
(`clew.gateway.errors`), never caught route by route."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from clew.core.errors import BadRequest
from clew.core.identity import caller_of
from clew.core.model import parse_trace_id
from clew.store.traces import Window

DEFAULT_WINDOW_S = 3600
# times travel as Int64 nanoseconds since the epoch (what the engine stores): the last second it holds
MAX_NS = 2**63 - 1
MAX_SECONDS = MAX_NS // 10**9  # 2262-04-11
# the most traces one search answers, on every API (Jaeger's `limit` included)
MAX_LIMIT = 1000


def tenant(request: Request) -> str:
    return caller_of(request.scope).tenant


def number(
    request: Request, name: str, default: float, low: float = -math.inf, high: float = math.inf
) -> float:
    """A finite number from `low` to `high` (NaN and infinities are refused, as is anything an
    engine type could not hold once scaled)."""
    text = request.query_params.get(name)
    if text in (None, ""):
        return default
    try:
        value = float(text)
    except ValueError:
        raise BadRequest(f"{name} must be a number, got {text[:40]!r}") from None
    if not math.isfinite(value):
        raise BadRequest(f"{name} must be a finite number, got {text[:40]!r}")
    if not low <= value <= high:
        raise BadRequest(f"{name} must be from {low:g} to {high:g}, got {text[:40]!r}")
    return value


def time_range(request: Request) -> tuple[float, float]:
    """`start`/`end` in Unix seconds, the last hour by default."""
    end = number(request, "end", time.time(), 0, MAX_SECONDS)
    start = number(request, "start", max(0.0, end - DEFAULT_WINDOW_S), 0, MAX_SECONDS)
    if start > end:
        raise BadRequest("start must not be after end")
    return start, end


def time_range_ns(request: Request) -> tuple[int, int]:
    """`time_range` in nanoseconds, as the store takes it."""
    start, end = time_range(request)
    return int(start * 10**9), int(end * 10**9)


def over_time_range(
    compute: Callable[[int, int, str], dict[str, Any]],
) -> Callable[[Request], Awaitable[JSONResponse]]:
    """An endpoint answering `compute(start_ns, end_ns, tenant)` as JSON for `start`/`end` in seconds."""

    async def endpoint(request: Request) -> JSONResponse:
        start, end = time_range_ns(request)
        answer = await asyncio.to_thread(compute, start, end, tenant(request))
        return JSONResponse(answer)

    return endpoint


# A trace lookup's time hint says where to look, not where to cut the trace: the spans read start up
# to this much before and after it, as Tempo reads whole blocks and Jaeger whole daily indices that
# the hint overlaps. A trace that began just before a dashboard's range stays whole, and the engine
# still skips the other hours and parts (bench/RESULTS.md: 3 hours read cost ~1 ms more than 1).
HINT_MARGIN_NS = 3600 * 10**9


def trace_window(first: int | None, last: int | None) -> Window | None:
    """The store's window (`TraceReader.get_trace`) for a lookup's time hint, from its optional bounds
    in ns: None without either; one bound alone leaves the other side open."""
    if first is None and last is None:
        return None
    if first is not None and last is not None and first > last:
        raise BadRequest("the trace's time range starts after it ends")
    low = 0 if first is None else max(0, first - HINT_MARGIN_NS)
    high = MAX_NS if last is None else min(MAX_NS, last + HINT_MARGIN_NS)
    return low, high


def seconds_window(request: Request, start: str = "start", end: str = "end") -> Window | None:
    """`trace_window` of optional Unix seconds (Tempo's and the native API's trace lookups)."""

    def bound(name: str) -> int | None:
        if request.query_params.get(name) in (None, ""):
            return None
        return int(number(request, name, 0.0, 0, MAX_SECONDS) * 10**9)

    return trace_window(bound(start), bound(end))


def int_param(request: Request, name: str, low: int = -MAX_NS - 1, high: int = MAX_NS) -> int | None:
    """A whole number from `low` to `high` (by default what an Int64 holds), or None when absent."""
    text = request.query_params.get(name)
    if text in (None, ""):
        return None
    if len(text) > 40:
        raise BadRequest(f"{name} must be an integer from {low} to {high}, got {text[:40]!r}...")
    try:
        value = int(text)
    except ValueError as exc:
        raise BadRequest(f"{name} must be an integer, got {text!r}") from exc
    if not low <= value <= high:
        raise BadRequest(f"{name} must be an integer from {low} to {high}, got {text}")
    return value


def epoch_param(request: Request, name: str, unit_ns: int) -> int | None:
    """A time since the epoch in units of `unit_ns` nanoseconds, returned in nanoseconds."""
    value = int_param(request, name, 0, MAX_NS // unit_ns)
    return None if value is None else value * unit_ns


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
