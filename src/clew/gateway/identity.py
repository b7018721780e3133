"""The identity seam: an ASGI middleware and a gRPC interceptor resolve the caller once per request
(`clew.core.identity.resolve`) and leave it where routes read it. Authentication (API keys, roles)
belongs here and nowhere else."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
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


_GRPC_CALLER: ContextVar[Caller] = ContextVar("clew_grpc_caller")


def grpc_caller() -> Caller:
    """The caller the interceptor resolved for the call being handled (a handler served without the
    interceptor is a wiring bug)."""
    caller = _GRPC_CALLER.get(None)
    if caller is None:
        raise RuntimeError("no caller for this call: the identity interceptor is not installed")
    return caller


class IdentityInterceptor(grpc.aio.ServerInterceptor):
    """Resolves the caller from each call's metadata; handlers read it with `grpc_caller`.

    gRPC's interceptor sees the metadata but not the handler's call, so it wraps unary handlers to
    set the caller for the task that runs them."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        metadata = handler_call_details.invocation_metadata or ()
        caller = resolve((k, v if isinstance(v, str) else v.decode("latin-1")) for k, v in metadata)
        if handler is None or handler.unary_unary is None:
            return handler
        inner: Any = handler.unary_unary  # typed for the sync server; aio's handlers are coroutines

        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            _GRPC_CALLER.set(caller)  # the handler runs in this task, so it sees this value
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
