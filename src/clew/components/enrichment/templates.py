"""Enrichment and normalisation, applied by the insert like redaction (components/redaction/).

- Static resource attributes by tenant (`deployment.environment` for the tenant `prod`, say), added
  when the span's resource does not already carry them.
- Span-name templates: ids in URL-like names (`GET /users/12345`, UUIDs, long hex) become `{id}` and
  query strings are cut, so operation lists and metrics stay small.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clew.core.errors import ConfigError
from clew.store.sql import quote as _quote
from clew.store.transforms import Transforms

# a path segment that is an id: digits, a UUID, or 16+ hex characters
ID_SEGMENT = r"/(?:\d+|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[0-9a-fA-F]{16,})(/|$)"


class EnrichError(ConfigError):
    pass


@dataclass(frozen=True, slots=True)
class EnrichConfig:
    normalize_names: bool = True
    # tenant ("*" for every tenant) -> resource attributes added when absent
    resource: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def from_toml(cls, doc: dict[str, Any]) -> EnrichConfig:
        """`[enrich]` of clew.toml: `normalize_names`, `[enrich.resource]` (every tenant) and
        `[enrich.tenants.NAME.resource]`."""
        for key in doc:
            if key not in ("normalize_names", "resource", "tenants"):
                raise EnrichError(f"[enrich]: unknown setting {key!r}")
        resource: dict[str, dict[str, str]] = {}
        if "resource" in doc:
            resource["*"] = {str(k): str(v) for k, v in dict(doc["resource"]).items()}
        for tenant, table in dict(doc.get("tenants", {})).items():
            unknown = set(table) - {"resource"}
            if unknown:
                raise EnrichError(f"[enrich.tenants.{tenant}]: unknown setting {sorted(unknown)[0]!r}")
            resource[str(tenant)] = {str(k): str(v) for k, v in dict(table.get("resource", {})).items()}
        return cls(bool(doc.get("normalize_names", True)), resource)


def _map_literal(values: dict[str, str]) -> str:
    pairs = ", ".join(f"{_quote(k)}, {_quote(v)}" for k, v in sorted(values.items()))
    return f"map({pairs})"


def transforms(config: EnrichConfig) -> Transforms:
    out: dict[str, str] = {}
    if config.normalize_names:
        pattern, cut = _quote(ID_SEGMENT), _quote(r"\?.*$")
        # twice: a replaced segment consumes the slash the next one starts with (`/1/2`)
        once = f"replaceRegexpAll(replaceRegexpOne({{in:name}}, {cut}, ''), {pattern}, '/{{id}}\\\\1')"
        out["name"] = f"replaceRegexpAll({once}, {pattern}, '/{{id}}\\\\1')"
    if config.resource:
        expr = "{in:resource_string}"
        for tenant, values in sorted(config.resource.items()):
            added = f"mapUpdate({_map_literal(values)}, {expr})"  # the span's own values win
            expr = added if tenant == "*" else f"if({{tenant:String}} = {_quote(tenant)}, {added}, {expr})"
        out["resource_string"] = expr
    return Transforms(out)
