"""Who is calling: resolved once per request at the edge (an ASGI middleware and a gRPC interceptor,
`clew.gateway.identity`) and read by every route from the request's scope.

Without API keys, a caller is a tenant named by the `X-Scope-OrgID` header as Tempo, Loki and Mimir
name it (single-team use). With keys, the key decides: its role (`ingest`, `read`, `admin`) and its
tenants; the header only chooses among the tenants of a read key (or any tenant, for an admin key).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from clew.core.errors import BadRequest, Forbidden, Unauthorized
from clew.core.model import DEFAULT_TENANT

TENANT_HEADER = "x-scope-orgid"
AUTHORIZATION = "authorization"
SCOPE_KEY = "clew.caller"  # where the middleware leaves the caller in an ASGI scope

Role = Literal["ingest", "read", "admin"]
ROLES: tuple[Role, ...] = ("ingest", "read", "admin")

# Mimir's and Cortex's rule for tenant ids, so that the same names work across the stack
TENANT_CHARS = "letters, digits and ! - _ . * ' ( )"
MAX_TENANT_LENGTH = 150
_TENANT = re.compile(r"[A-Za-z0-9!._*'()-]+")


def check_tenant(name: str) -> str:
    """`name` if it is a valid tenant id, else a `BadRequest` saying the rule."""
    if not name or len(name) > MAX_TENANT_LENGTH or name in (".", "..") or not _TENANT.fullmatch(name):
        raise BadRequest(
            f"tenant {name[:40]!r} is not valid: 1 to {MAX_TENANT_LENGTH} of {TENANT_CHARS}, not . or .."
        )
    return name


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key as clew keeps it: never the key itself, only its SHA-256 (keys are 256-bit random
    tokens, so a fast hash is enough) and what it may do."""

    id: str  # the first 12 hex digits of the hash: shown in lists and logs, never enough to use
    sha256: str
    role: Role
    tenants: tuple[str, ...]  # ingest: exactly one; read: one or more; admin: ignored
    name: str = ""


class KeyRing(Protocol):
    @property
    def active(self) -> bool:
        """Whether authentication is on (any key is configured)."""
        ...

    def find(self, secret: str) -> ApiKey | None: ...


@dataclass(frozen=True, slots=True)
class Caller:
    tenant: str = DEFAULT_TENANT
    role: Role = "admin"  # without keys, everyone may do everything
    key: str | None = None  # the id of the key that authenticated the call, None without keys

    def may(self, need: Role) -> bool:
        return self.role == "admin" or self.role == need

    @property
    def sees_every_tenant(self) -> bool:
        """An authenticated admin: /metrics shows it every tenant's series."""
        return self.key is not None and self.role == "admin"


def secret_of(value: str) -> str | None:
    """The key in an `Authorization` value: `Bearer <key>`, or Basic with the key as the password
    (Grafana's data sources send Basic auth)."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() == "bearer":
        return rest.strip() or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(rest.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None


def resolve(headers: Iterable[tuple[str, str]], keys: KeyRing | None = None) -> Caller:
    """The caller of a request with these headers (lower-case names). Raises `Unauthorized` (no or
    unknown key while keys are configured), `Forbidden` (a tenant the key does not cover) or
    `BadRequest` (a tenant name outside the rule)."""
    header_tenant: str | None = None
    authorization: str | None = None
    for name, value in headers:
        if name == TENANT_HEADER and value and header_tenant is None:
            header_tenant = value
        elif name == AUTHORIZATION and authorization is None:
            authorization = value
    if keys is None or not keys.active:
        return Caller(tenant=check_tenant(header_tenant) if header_tenant else DEFAULT_TENANT)
    secret = secret_of(authorization) if authorization else None
    if secret is None:
        raise Unauthorized("an API key is required: send it as 'Authorization: Bearer <key>'")
    key = keys.find(secret)
    if key is None:
        raise Unauthorized("unknown API key")
    if key.role == "ingest":  # the key's tenant wins over the header
        return Caller(tenant=key.tenants[0], role="ingest", key=key.id)
    if key.role == "read":
        if header_tenant is None:
            return Caller(tenant=key.tenants[0], role="read", key=key.id)
        if header_tenant not in key.tenants:
            raise Forbidden(f"this key may not read tenant {header_tenant[:40]!r}")
        return Caller(tenant=header_tenant, role="read", key=key.id)
    tenant = check_tenant(header_tenant) if header_tenant else DEFAULT_TENANT
    return Caller(tenant=tenant, role="admin", key=key.id)


def caller_of(scope: Mapping[str, Any]) -> Caller:
    """The caller the identity middleware resolved for this request; a route served without the
    middleware is a wiring bug, never a silent default tenant."""
    caller = scope.get(SCOPE_KEY)
    if not isinstance(caller, Caller):
        raise RuntimeError("no caller in the request scope: the identity middleware is not installed")
    return caller
