"""Zipkin v2: `POST /api/v2/spans` with a JSON list of spans, translated to OTLP and decoded as OTLP.

Mapping (as the OpenTelemetry Collector's Zipkin receiver does): `localEndpoint.serviceName` becomes
the resource's `service.name`; `remoteEndpoint` becomes `peer.service`, `net.peer.ip`, `net.peer.port`;
tags stay string attributes; an `error` tag sets status ERROR; annotations become events; times are
microseconds. A `shared` SERVER span gets its own span id (derived from the shared one, which becomes
its parent) so that client and server keep distinct ids in the tree.

Bad input, as for OTLP: a body that is not a JSON list of span objects, or a field of the wrong type
(a timestamp that is not a non-negative number, `annotations` that are not a list, a `port` that is
no integer up to 65535, ...), is a 400 naming the field; the body is read by `json_body.load_json`
(nesting, number and text limits, lone surrogate escapes made U+FFFD). A span whose values have the
right type but cannot be stored (an id of the wrong length, a time past the year 2262 however large)
is dropped and counted, like an invalid OTLP span. Only `application/json` is taken: a POST without
that type (a "simple" request, which a page on another origin may send without asking) is a 415.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any, cast

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from clew.core.errors import BadRequest, ClewError, UnsupportedMedia
from clew.core.identity import caller_of
from clew.core.json_body import load_json
from clew.core.model import DEFAULT_TENANT, SpanKind
from clew.gateway.errors import Problem, handlers
from clew.gateway.identity import IdentityMiddleware
from clew.receivers import Sink
from clew.receivers.http_body import media_type, read_body
from clew.receivers.otlp import Decoded, accept_request

_KINDS = {
    "CLIENT": SpanKind.CLIENT,
    "SERVER": SpanKind.SERVER,
    "PRODUCER": SpanKind.PRODUCER,
    "CONSUMER": SpanKind.CONSUMER,
}
# Times past DateTime64(9)'s range are held at one past it, where `accept_request` drops the span
# ("time is past the year 2262") rather than protobuf's uint64 overflowing.
_PAST_2262 = 1 << 63
_MAX_PORT = 65535


def _hex(value: Any, where: str, width: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise BadRequest(f"{where}: expected a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError as exc:
        raise BadRequest(f"{where}: not a hex string: {value[:40]!r}") from exc
    if width is not None and 0 < len(raw) < width:
        raw = raw.rjust(width, b"\0")  # 64-bit Zipkin trace ids are the low half of a 128-bit id
    return raw


def _str_attr(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _port(value: Any, where: str) -> int:
    """A port as Zipkin reads it: an integer or a quoted one; 0 or less is none; past 65535 is refused."""
    if isinstance(value, str) and len(value) < 20:
        try:
            value = int(value)
        except ValueError:
            pass  # refused below
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value > _MAX_PORT:
        raise BadRequest(f"{where}: expected a port number up to {_MAX_PORT}")
    return max(value, 0)


def _endpoint_attrs(endpoint: Any, prefix: str, where: str) -> list[KeyValue]:
    if endpoint is None:
        return []
    if not isinstance(endpoint, Mapping):
        raise BadRequest(f"{where}: expected an object")
    out: list[KeyValue] = []
    if prefix == "peer" and endpoint.get("serviceName"):
        out.append(_str_attr("peer.service", str(endpoint["serviceName"])))
    ip = endpoint.get("ipv4") or endpoint.get("ipv6")
    if ip:
        out.append(_str_attr(f"net.{prefix}.ip", str(ip)))
    port = _port(endpoint.get("port"), f"{where}.port")
    if port:
        out.append(KeyValue(key=f"net.{prefix}.port", value=AnyValue(int_value=port)))
    return out


def _nanos(value: Any, where: str) -> int:
    """Zipkin's microseconds as nanoseconds, at most `_PAST_2262`."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or value < 0
        or (isinstance(value, float) and not math.isfinite(value))
    ):
        raise BadRequest(f"{where}: expected a non-negative number of microseconds")
    return min(int(value) * 1000, _PAST_2262)


_STATUS_CODES = {"UNSET": 0, "OK": 1, "ERROR": 2}


def _status(tags: dict[str, str]) -> Status:
    """The span status from its tags, as the OpenTelemetry Collector's Zipkin translator reads them,
    and the tags that carried it removed: `otel.status_code` (`ERROR`, `STATUS_CODE_ERROR`, ...) with
    `otel.status_description`; an `error` tag makes it an error (`error=true` is dropped). One step
    further than the translator: an `error` tag holding a message, when no description was given (the
    OpenTelemetry SDKs' Zipkin exporters put it there), becomes the status message instead of staying
    a tag, so it is not lost nor written twice."""
    status = Status()
    code = tags.pop("otel.status_code", None)
    if code is not None:
        status.code = cast(
            "Status.StatusCode.ValueType", _STATUS_CODES.get(code.upper().removeprefix("STATUS_CODE_"), 0)
        )
        status.message = tags.pop("otel.status_description", "")
    if "error" in tags:
        status.code = Status.STATUS_CODE_ERROR
        value = tags["error"]
        if value.lower() in ("true", ""):
            del tags["error"]
        elif not status.message:
            status.message = tags.pop("error")
    return status


def _to_span(z: Any, i: int) -> tuple[str, Span]:
    where = f"span[{i}]"
    if not isinstance(z, Mapping):
        raise BadRequest(f"{where}: expected a JSON object")
    trace_id = _hex(z.get("traceId"), f"{where}.traceId", 16)
    span_id = _hex(z.get("id"), f"{where}.id")
    parent = _hex(z["parentId"], f"{where}.parentId") if z.get("parentId") else b""
    local = z.get("localEndpoint") or {}
    service = str(local.get("serviceName") or "unknown_service") if isinstance(local, Mapping) else ""
    kind = _KINDS.get(str(z.get("kind", "")).upper(), SpanKind.INTERNAL)
    start = _nanos(z.get("timestamp", 0), f"{where}.timestamp")
    duration = _nanos(z.get("duration", 0), f"{where}.duration")
    annotations = z.get("annotations") or []
    if not isinstance(annotations, list):
        raise BadRequest(f"{where}.annotations: expected a list")
    tags = z.get("tags") or {}
    if not isinstance(tags, Mapping):
        raise BadRequest(f"{where}.tags: expected an object of strings")
    tags = {str(k): str(v) for k, v in tags.items()}
    status = _status(tags)
    attrs = [_str_attr(k, v) for k, v in tags.items()]
    attrs += _endpoint_attrs(local, "host", f"{where}.localEndpoint")
    attrs += _endpoint_attrs(z.get("remoteEndpoint"), "peer", f"{where}.remoteEndpoint")
    if z.get("shared") and kind == SpanKind.SERVER and span_id:
        parent = span_id
        span_id = hashlib.sha256(trace_id + span_id + b"zipkin.shared").digest()[:8]
        attrs.append(KeyValue(key="zipkin.shared", value=AnyValue(bool_value=True)))
    span = Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        name=str(z.get("name") or ""),
        kind=cast("Span.SpanKind.ValueType", int(kind)),
        start_time_unix_nano=start,
        end_time_unix_nano=min(start + duration, _PAST_2262),
        attributes=attrs,
        status=status,
    )
    for j, annotation in enumerate(annotations):
        if not isinstance(annotation, Mapping):
            raise BadRequest(f"{where}.annotations[{j}]: expected an object")
        span.events.add(
            time_unix_nano=_nanos(annotation.get("timestamp", 0), f"{where}.annotations[{j}].timestamp"),
            name=str(annotation.get("value", "")),
        )
    return service, span


def zipkin_to_otlp(spans: Any) -> ExportTraceServiceRequest:
    """A Zipkin v2 document, as `load_json` reads it, as one OTLP request; `BadRequest` if malformed."""
    if not isinstance(spans, list):
        raise BadRequest("a Zipkin v2 body is a JSON list of spans")
    request = ExportTraceServiceRequest()
    by_service: dict[str, ResourceSpans] = {}
    for i, z in enumerate(spans):
        service, span = _to_span(z, i)
        rs = by_service.get(service)
        if rs is None:
            rs = request.resource_spans.add()
            rs.resource.attributes.append(_str_attr("service.name", service))
            rs.scope_spans.add()
            by_service[service] = rs
        rs.scope_spans[0].spans.append(span)
    return request


def decode_zipkin(body: bytes, tenant: str = DEFAULT_TENANT) -> Decoded:
    return accept_request(zipkin_to_otlp(load_json(body)), tenant)


def _problem(request: Request, problem: Problem, exc: ClewError) -> Response:
    # ASCII-escaped, so that no message can fail to encode
    body = json.dumps({"error": problem.message}).encode()
    return Response(body, problem.status, headers=dict(problem.headers), media_type="application/json")


def zipkin_app(sink: Sink, max_body_bytes: int) -> Starlette:
    async def post_spans(request: Request) -> Response:
        ctype = media_type(request)
        if ctype != "application/json":
            raise UnsupportedMedia(f"unsupported Content-Type {ctype or '(none)'!r}: send application/json")
        body = await read_body(request, max_body_bytes)
        decoded = decode_zipkin(body, caller_of(request.scope).tenant)
        await sink(decoded.batch)
        if decoded.rejected:
            return JSONResponse(
                {"rejectedSpans": decoded.rejected, "errorMessage": decoded.error_message}, 202
            )
        return Response(status_code=202)

    return Starlette(
        routes=[Route("/api/v2/spans", post_spans, methods=["POST"])],
        middleware=[Middleware(IdentityMiddleware)],
        exception_handlers=handlers(_problem),
    )
