"""OTLP/HTTP: `POST /v1/traces` and `POST /v1/logs` with protobuf or JSON bodies (gzip or not),
answered in the request's encoding."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from google.rpc.status_pb2 import Status
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from clew.core.errors import ClewError, UnsupportedMedia
from clew.core.identity import caller_of
from clew.gateway.errors import Problem, handlers
from clew.gateway.identity import IdentityMiddleware
from clew.receivers import Sink
from clew.receivers.http_body import media_type, read_body
from clew.receivers.otlp import Decoded, decode_json, decode_protobuf, to_otlp_json
from clew.receivers.otlp_logs import decode_logs_json, decode_logs_protobuf

PROTOBUF_TYPES = ("application/x-protobuf", "application/protobuf")
JSON_TYPE = "application/json"


def _problem(request: Request, problem: Problem, exc: ClewError) -> Response:
    """An error answered as a `google.rpc.Status`, in the request's encoding as OTLP asks (JSON when
    the content type itself was refused)."""
    code = problem.code.value[0]
    headers = dict(problem.headers)
    if isinstance(exc, UnsupportedMedia) or media_type(request) == JSON_TYPE:
        body = json.dumps({"code": code, "message": problem.message}).encode()
        return Response(body, problem.status, headers=headers, media_type=JSON_TYPE)
    body = Status(code=code, message=problem.message).SerializeToString()
    return Response(body, problem.status, headers=headers, media_type=PROTOBUF_TYPES[0])


def _success(decoded: Decoded, as_json: bool) -> Response:
    response = decoded.response()
    if as_json:
        return Response(json.dumps(to_otlp_json(response)).encode(), 200, media_type=JSON_TYPE)
    return Response(response.SerializeToString(), 200, media_type=PROTOBUF_TYPES[0])


Decoder = Callable[[bytes, str], Decoded]


def otlp_http_app(sink: Sink, max_body_bytes: int) -> Starlette:
    def export(decode_json: Decoder, decode_protobuf: Decoder) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            ctype = media_type(request)
            as_json = ctype == JSON_TYPE
            if not as_json and ctype not in PROTOBUF_TYPES:
                raise UnsupportedMedia(
                    f"unsupported Content-Type {ctype or '(none)'!r}: send application/x-protobuf or application/json"
                )
            body = await read_body(request, max_body_bytes)
            tenant = caller_of(request.scope).tenant
            decoded = decode_json(body, tenant) if as_json else decode_protobuf(body, tenant)
            await sink(decoded.batch)
            return _success(decoded, as_json)

        return handle

    return Starlette(
        routes=[
            Route("/v1/traces", export(decode_json, decode_protobuf), methods=["POST"]),
            Route("/v1/logs", export(decode_logs_json, decode_logs_protobuf), methods=["POST"]),
        ],
        middleware=[Middleware(IdentityMiddleware)],
        exception_handlers=handlers(_problem),
    )
