"""OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export` and
`opentelemetry.proto.collector.logs.v1.LogsService/Export`.

The handler takes the raw request bytes so that gRPC and HTTP share one decoder; gRPC itself
negotiates and undoes gzip compression.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc

from clew.core.errors import ClewError, TooLarge
from clew.core.identity import KeyRing
from clew.core.limits import LimitsConfig
from clew.gateway.errors import abort
from clew.gateway.identity import IdentityInterceptor, grpc_caller
from clew.receivers import Sink
from clew.receivers.otlp import Decoded, decode_protobuf
from clew.receivers.otlp_logs import decode_logs_protobuf

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"

Handler = Callable[[bytes, grpc.aio.ServicerContext[bytes, bytes]], Awaitable[bytes]]


def _export(sink: Sink, limits: LimitsConfig | None, decode: Callable[[bytes, str], Decoded]) -> Handler:
    async def export(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        try:
            tenant = grpc_caller().tenant
            most = limits.of(tenant).max_request_bytes if limits is not None else 0
            if most and len(request) > most:
                raise TooLarge(
                    f"request of {len(request)} bytes is over tenant {tenant!r}'s limit of {most} bytes "
                    "(max_request_bytes)"
                )
            decoded = decode(request, tenant)
            await sink(decoded.batch)
        except ClewError as exc:
            await abort(context, exc)
            raise  # abort raises; this only tells the type checker
        return bytes(decoded.response().SerializeToString())

    return export


def trace_service_handler(sink: Sink, limits: LimitsConfig | None = None) -> grpc.GenericRpcHandler:
    export = _export(sink, limits, decode_protobuf)
    return grpc.method_handlers_generic_handler(
        SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(export)}
    )


def logs_service_handler(sink: Sink, limits: LimitsConfig | None = None) -> grpc.GenericRpcHandler:
    export = _export(sink, limits, decode_logs_protobuf)
    return grpc.method_handlers_generic_handler(
        LOGS_SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(export)}
    )


def grpc_server(
    sink: Sink, max_message_bytes: int, keys: KeyRing | None = None, limits: LimitsConfig | None = None
) -> grpc.aio.Server:
    """OTLP/gRPC; with `keys`, every call needs a key with the ingest role."""
    server = grpc.aio.server(
        interceptors=[IdentityInterceptor(keys, need="ingest")],
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),
        ],
    )
    server.add_generic_rpc_handlers((trace_service_handler(sink, limits), logs_service_handler(sink, limits)))
    return server
