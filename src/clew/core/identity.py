"""Who is calling: resolved once per request at the edge (an ASGI middleware and a gRPC interceptor,
`clew.gateway.identity`) and read by every route from the request's scope.

Today a caller is a tenant, named by the `X-Scope-OrgID` header as Tempo, Loki and Mimir name it;
API keys and roles will resolve into the same `Caller`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from clew.core.model import DEFAULT_TENANT

TENANT_HEADER = "x-scope-orgid"
SCOPE_KEY = "clew.caller"  # where the middleware leaves the caller in an ASGI scope


@dataclass(frozen=True, slots=True)
class Caller:
    tenant: str = DEFAULT_TENANT


def resolve(headers: Iterable[tuple[str, str]]) -> Caller:
    """The caller named by request headers (lower-case names), or the default tenant."""
    for name, value in headers:
        if name == TENANT_HEADER and value:
            return Caller(tenant=value)
    return Caller()


def caller_of(scope: Mapping[str, Any]) -> Caller:
    """The caller the identity middleware resolved for this request; a route served without the
    middleware is a wiring bug, never a silent default tenant."""
    caller = scope.get(SCOPE_KEY)
    if not isinstance(caller, Caller):
        raise RuntimeError("no caller in the request scope: the identity middleware is not installed")
    return caller
