"""OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export`.

The handler takes the raw request bytes so that gRPC and HTTP share one decoder; gRPC itself
negotiates and undoes gzip compression.
"""

from __future__ import annotations

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from clew.core.errors import ClewError
from clew.core.identity import KeyRing
from clew.gateway.errors import abort
from clew.gateway.identity import IdentityInterceptor, grpc_caller
from clew.receivers import Sink
from clew.receivers.otlp import decode_protobuf

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


def trace_service_handler(sink: Sink) -> grpc.GenericRpcHandler:
    async def export(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        try:
            decoded = decode_protobuf(request, grpc_caller().tenant)
            await sink(decoded.batch)
        except ClewError as exc:
            await abort(context, exc)
            raise  # abort raises; this only tells the type checker
        response = ExportTraceServiceResponse()
        if decoded.rejected:
            response.partial_success.rejected_spans = decoded.rejected
            response.partial_success.error_message = decoded.error_message
        return response.SerializeToString()

    return grpc.method_handlers_generic_handler(
        SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(export)}
    )


def grpc_server(sink: Sink, max_message_bytes: int, keys: KeyRing | None = None) -> grpc.aio.Server:
    """OTLP/gRPC; with `keys`, every call needs a key with the ingest role."""
    server = grpc.aio.server(
        interceptors=[IdentityInterceptor(keys, need="ingest")],
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),
        ],
    )
    server.add_generic_rpc_handlers((trace_service_handler(sink),))
    return server
