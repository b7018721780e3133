"""OTLP/HTTP: `POST /v1/traces` with protobuf or JSON bodies, answered in the request's encoding."""

from __future__ import annotations

import json

from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from clew.model import DEFAULT_TENANT
from clew.receivers import Sink
from clew.receivers.http_body import HTTPProblem, media_type, read_body
from clew.receivers.otlp import BadRequest, Decoded, decode_json, decode_protobuf, to_otlp_json
from clew.store.base import StoreError
from clew.store.writer import Backpressure

PROTOBUF_TYPES = ("application/x-protobuf", "application/protobuf")
JSON_TYPE = "application/json"
# google.rpc.Code values for the error bodies
_RPC_CODE = {400: 3, 413: 8, 415: 3, 503: 14}


def _problem(status: int, reason: str, as_json: bool, headers: dict[str, str] | None = None) -> Response:
    """An error answered as a `google.rpc.Status`, in the request's encoding as OTLP asks."""
    code = _RPC_CODE.get(status, 2)
    if as_json:
        body = json.dumps({"code": code, "message": reason}).encode()
        return Response(body, status, headers=headers, media_type=JSON_TYPE)
    body = Status(code=code, message=reason).SerializeToString()
    return Response(body, status, headers=headers, media_type=PROTOBUF_TYPES[0])


def _success(decoded: Decoded, as_json: bool) -> Response:
    response = ExportTraceServiceResponse()
    if decoded.rejected:
        response.partial_success.rejected_spans = decoded.rejected
        response.partial_success.error_message = decoded.error_message
    if as_json:
        return Response(json.dumps(to_otlp_json(response)).encode(), 200, media_type=JSON_TYPE)
    return Response(response.SerializeToString(), 200, media_type=PROTOBUF_TYPES[0])


def otlp_http_app(sink: Sink, max_body_bytes: int) -> Starlette:
    async def export_traces(request: Request) -> Response:
        ctype = media_type(request)
        as_json = ctype == JSON_TYPE
        if not as_json and ctype not in PROTOBUF_TYPES:
            return _problem(
                415,
                f"unsupported Content-Type {ctype or '(none)'!r}: "
                "send application/x-protobuf or application/json",
                as_json=True,
            )
        try:
            body = await read_body(request, max_body_bytes)
            tenant = request.headers.get("x-scope-orgid", DEFAULT_TENANT) or DEFAULT_TENANT
            decoded = decode_json(body, tenant) if as_json else decode_protobuf(body, tenant)
            await sink(decoded.batch)
        except HTTPProblem as exc:
            return _problem(exc.status, exc.reason, as_json)
        except BadRequest as exc:
            return _problem(400, str(exc), as_json)
        except Backpressure as exc:
            return _problem(503, str(exc), as_json, {"Retry-After": str(exc.retry_after)})
        except StoreError as exc:
            return _problem(503, f"storage unavailable: {exc}", as_json, {"Retry-After": "1"})
        return _success(decoded, as_json)

    return Starlette(routes=[Route("/v1/traces", export_traces, methods=["POST"])])
