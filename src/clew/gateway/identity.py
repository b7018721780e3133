"""The identity seam: an ASGI middleware and a gRPC interceptor resolve the caller once per request
(`clew.core.identity.resolve`) and leave it where routes read it. Authentication (API keys, roles)
belongs here and nowhere else."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from starlette.types import ASGIApp, Receive, Scope, Send

from clew.core.identity import SCOPE_KEY, Caller, resolve


class IdentityMiddleware:
    """Puts the `Caller` of every HTTP request into its scope (`clew.core.identity.caller_of`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = ((k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"])
            scope[SCOPE_KEY] = resolve(headers)
        await self.app(scope, receive, send)


def grpc_caller(context: grpc.aio.ServicerContext[Any, Any]) -> Caller:
    """The caller the interceptor resolved for this call."""
    caller = getattr(context, "clew_caller", None)
    if isinstance(caller, Caller):
        return caller
    return resolve((k, str(v)) for k, v in context.invocation_metadata() or ())


class IdentityInterceptor(grpc.aio.ServerInterceptor):
    """Resolves the caller from each call's metadata; handlers read it with `grpc_caller`.

    gRPC's interceptor sees the metadata but not the handler's context, so it wraps unary handlers
    to stamp the context they receive."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        metadata = handler_call_details.invocation_metadata or ()
        caller = resolve((k, v if isinstance(v, str) else v.decode("latin-1")) for k, v in metadata)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary

        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            context.clew_caller = caller  # type: ignore[attr-defined]  # the context has no slot for it
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
