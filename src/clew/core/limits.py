"""Limits per tenant, as clew.toml sets them: the edges enforce rates and query budgets
(clew.gateway.limits), the insert enforces attribute limits (clew.components.limits).

```toml
[limits]                        # every tenant
spans_per_second = 50000        # 0: no limit
max_concurrent_queries = 8
query_timeout_s = 30
max_attributes_per_span = 128   # beyond: dropped, counted in the span's dropped_attributes_count
max_attribute_value_length = 32768  # string values cut to this many characters
max_request_bytes = 4194304     # a request body over it is answered 413 (0: the server's max_body_bytes)
max_spans_per_trace = 32000     # a sampled trace keeps its first spans by start time (0: all)
[limits.tenants.shop]           # one tenant's own values
spans_per_second = 5000
```
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from clew.core.errors import ConfigError

_WHOLE = (
    "max_concurrent_queries",
    "max_attributes_per_span",
    "max_attribute_value_length",
    "max_request_bytes",
)


@dataclass(frozen=True, slots=True)
class TenantLimits:
    spans_per_second: float = 0.0  # 0: no limit
    max_concurrent_queries: int = 8
    query_timeout_s: float = 30.0
    max_attributes_per_span: int = 128  # the OpenTelemetry SDKs' default attribute count limit
    max_attribute_value_length: int = 32768
    max_request_bytes: int = 0  # 0: the server's max_body_bytes; a tenant may be given less
    max_spans_per_trace: int = 0  # 0: no limit; past it, the spans a trace keeps once sampled


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    default: TenantLimits = field(default_factory=TenantLimits)
    tenants: Mapping[str, TenantLimits] = field(default_factory=dict)

    def of(self, tenant: str) -> TenantLimits:
        return self.tenants.get(tenant, self.default)

    def by_tenant(self, name: str) -> tuple[int, dict[str, int]]:
        """One limit: its default and each tenant's own value."""
        return getattr(self.default, name), {t: getattr(v, name) for t, v in self.tenants.items()}

    @classmethod
    def from_toml(cls, doc: Mapping[str, Any]) -> LimitsConfig:
        if not isinstance(doc, Mapping):
            raise ConfigError("[limits] must be a table")
        default = _limits(TenantLimits(), {k: v for k, v in doc.items() if k != "tenants"}, "[limits]")
        tenants = doc.get("tenants", {})
        if not isinstance(tenants, Mapping):
            raise ConfigError("[limits.tenants] must hold one table per tenant")
        return cls(default, {t: _limits(default, v, f"[limits.tenants.{t}]") for t, v in tenants.items()})


def _limits(base: TenantLimits, values: Any, where: str) -> TenantLimits:
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where} must be a table")
    known = {f.name for f in fields(TenantLimits)}
    changes: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown limit {key!r} (known: {', '.join(sorted(known))})")
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or value < 0
            or not math.isfinite(value)
        ):
            raise ConfigError(f"{where}: {key} must be a number from 0 up, got {value!r}")
        changes[key] = int(value) if key in _WHOLE else float(value)
    limits = replace(base, **changes)
    if (
        min(limits.max_concurrent_queries, limits.max_attribute_value_length) < 1
        or limits.query_timeout_s <= 0
    ):
        raise ConfigError(
            f"{where}: max_concurrent_queries, max_attribute_value_length and query_timeout_s must be above 0"
        )
    return limits
