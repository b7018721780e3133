"""One mapping from domain errors (`clew.core.errors`) to HTTP statuses and gRPC codes. Each HTTP
surface only chooses the shape of its error body (OTLP's `google.rpc.Status`, Jaeger's envelope,
`{"error": ...}`); the status, the reason and `Retry-After` come from here."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ExceptionHandler

from clew.core.errors import (
    Backpressure,
    BadRequest,
    ClewError,
    Forbidden,
    NotFound,
    QueryTooCostly,
    RequestTimeout,
    StoreError,
    TooLarge,
    TooManyRequests,
    Unauthorized,
    UnsupportedMedia,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Problem:
    status: int
    code: grpc.StatusCode
    message: str
    headers: Mapping[str, str] = field(default_factory=dict)


# most specific first
_TABLE: list[tuple[type[ClewError], int, grpc.StatusCode]] = [
    (TooLarge, 413, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (UnsupportedMedia, 415, grpc.StatusCode.INVALID_ARGUMENT),
    (BadRequest, 400, grpc.StatusCode.INVALID_ARGUMENT),
    (Unauthorized, 401, grpc.StatusCode.UNAUTHENTICATED),
    (Forbidden, 403, grpc.StatusCode.PERMISSION_DENIED),
    (NotFound, 404, grpc.StatusCode.NOT_FOUND),
    (RequestTimeout, 408, grpc.StatusCode.DEADLINE_EXCEEDED),
    (TooManyRequests, 429, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (QueryTooCostly, 422, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Backpressure, 503, grpc.StatusCode.UNAVAILABLE),
    (StoreError, 503, grpc.StatusCode.UNAVAILABLE),
]


def problem(exc: ClewError) -> Problem:
    status, code = next(
        ((s, c) for kind, s, c in _TABLE if isinstance(exc, kind)), (500, grpc.StatusCode.INTERNAL)
    )
    headers: dict[str, str] = {}
    message = exc.message
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="clew"'
    if isinstance(exc, Backpressure | TooManyRequests):
        headers["Retry-After"] = str(exc.retry_after)
    elif isinstance(exc, StoreError):
        headers["Retry-After"] = "1"
        # the engine's own text names tables, settings and SQL: it goes to the server's log only
        message = "storage unavailable: retry later (the server's log has the details)"
        log.warning("storage unavailable: %s", exc.message)
    return Problem(status, code, message, headers)


Render = Callable[[Request, Problem, ClewError], Response]


def handlers(render: Render) -> Mapping[Any, ExceptionHandler]:
    """Starlette `exception_handlers` answering every domain error through `render`."""

    async def handle(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ClewError)
        return render(request, problem(exc), exc)

    return {ClewError: handle}


async def abort(context: grpc.aio.ServicerContext[Any, Any], exc: ClewError) -> None:
    """End a gRPC call with the code and reason of `exc`. A limit's RESOURCE_EXHAUSTED carries
    `RetryInfo`, which is what makes OTLP exporters retry it (the OTLP specification)."""
    p = problem(exc)
    if isinstance(exc, TooManyRequests):
        status = status_pb2.Status(code=p.code.value[0], message=p.message)
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay={"seconds": exc.retry_after}))
        context.set_trailing_metadata((("grpc-status-details-bin", status.SerializeToString()),))
    await context.abort(p.code, p.message)
