"""OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export`.

The handler takes the raw request bytes so that gRPC and HTTP share one decoder; gRPC itself
negotiates and undoes gzip compression.
"""

from __future__ import annotations

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from clew.model import DEFAULT_TENANT
from clew.receivers import Sink
from clew.receivers.otlp import BadRequest, decode_protobuf
from clew.store.base import StoreError
from clew.store.writer import Backpressure

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


def trace_service_handler(sink: Sink) -> grpc.GenericRpcHandler:
    async def export(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        tenant = DEFAULT_TENANT
        for key, value in context.invocation_metadata() or ():
            if key == "x-scope-orgid" and value:
                tenant = str(value)
        try:
            decoded = decode_protobuf(request, tenant)
            await sink(decoded.batch)
        except BadRequest as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except Backpressure as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except StoreError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"storage unavailable: {exc}")
        response = ExportTraceServiceResponse()
        if decoded.rejected:
            response.partial_success.rejected_spans = decoded.rejected
            response.partial_success.error_message = decoded.error_message
        return response.SerializeToString()

    return grpc.method_handlers_generic_handler(
        SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(export)}
    )


def grpc_server(sink: Sink, max_message_bytes: int) -> grpc.aio.Server:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
    )
    server.add_generic_rpc_handlers((trace_service_handler(sink),))
    return server
