"""The identity seam: an ASGI middleware and a gRPC interceptor resolve the caller once per request
(`clew.core.identity.resolve`), check that its role may use the surface they guard, and leave it
where routes read it. Authentication (API keys, roles) lives here and nowhere else."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import grpc
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from clew.core.errors import ClewError, Forbidden
from clew.core.identity import SCOPE_KEY, Caller, KeyRing, Role, resolve
from clew.gateway.errors import problem


def _never(path: str) -> bool:
    return False


def admit(caller: Caller, need: Role | None) -> Caller:
    """`caller` if its role may use a surface that needs `need` (None: anyone), else `Forbidden`."""
    if need is not None and not caller.may(need):
        raise Forbidden(f"this key has the {caller.role} role; this needs {need}")
    return caller


class IdentityMiddleware:
    """Puts the `Caller` of every HTTP request into its scope (`clew.core.identity.caller_of`), or
    answers 401/403/400 itself. `need` is the role the app's routes require; `public` names the
    paths anyone may reach (health, the UI's static shell, which holds no data)."""

    def __init__(
        self,
        app: ASGIApp,
        keys: KeyRing | None = None,
        need: Role | None = None,
        public: Callable[[str], bool] = _never,
    ) -> None:
        self.app = app
        self.keys, self.need, self.public = keys, need, public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and SCOPE_KEY not in scope:  # resolved once, by the outermost
            headers = ((k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"])
            open_path = self.public(scope["path"])
            try:
                caller = resolve(headers, self.keys)
                scope[SCOPE_KEY] = caller if open_path else admit(caller, self.need)
            except ClewError as exc:
                if not open_path:
                    p = problem(exc)
                    await JSONResponse({"error": p.message}, p.status, dict(p.headers))(scope, receive, send)
                    return
                scope[SCOPE_KEY] = Caller()  # a public page: nobody's data is served there
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
    """Resolves the caller from each call's metadata (`authorization`, `x-scope-orgid`, as OTLP
    exporters' `headers` send them); handlers read it with `grpc_caller`. A call whose caller may not
    use the service ends with UNAUTHENTICATED / PERMISSION_DENIED / INVALID_ARGUMENT.

    gRPC's interceptor sees the metadata but not the handler's call, so it wraps unary handlers to
    set the caller for the task that runs them."""

    def __init__(self, keys: KeyRing | None = None, need: Role | None = None) -> None:
        self.keys, self.need = keys, need

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        metadata = handler_call_details.invocation_metadata or ()
        refusal: ClewError | None = None
        caller = Caller()
        try:
            caller = admit(
                resolve(
                    ((k, v if isinstance(v, str) else v.decode("latin-1")) for k, v in metadata), self.keys
                ),
                self.need,
            )
        except ClewError as exc:
            refusal = exc
        if handler is None or handler.unary_unary is None:
            return handler
        inner: Any = handler.unary_unary  # typed for the sync server; aio's handlers are coroutines

        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if refusal is not None:
                p = problem(refusal)
                await context.abort(p.code, p.message)
            _GRPC_CALLER.set(caller)  # the handler runs in this task, so it sees this value
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
