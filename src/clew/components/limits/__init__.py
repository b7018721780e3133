"""Attribute limits in the insert, per tenant (`[limits]` of clew.toml, clew.core.limits): a span
keeps at most `max_attributes_per_span` attributes (string ones first, then integers, floats,
booleans and complex values, each in the order sent), the others are dropped and added to its
`dropped_attributes_count`, as OpenTelemetry SDKs do; string values longer than
`max_attribute_value_length` characters are cut to it. A request is never refused for either.

Runs after redaction, so the detectors see whole values. The tenant's own limits are chosen in the
SQL from the insert's tenant, so one statement serves every tenant."""

from __future__ import annotations

from clew.components.base import BaseComponent, Context
from clew.core.limits import LimitsConfig
from clew.store.sql import per_tenant
from clew.store.transforms import Transforms

__all__ = ["Limits"]

KINDS = ("string", "int", "float", "bool", "complex")  # the order attributes are kept in


def transforms(config: LimitsConfig) -> Transforms:
    """Each input map is named once (`clew_lim_in_*`), and what a kind keeps depends on the counts of
    the kinds before it, never on what they keep: the engine inlines aliases, so a chain of keeps
    would grow the insert's SQL (and its analysis, paid by every insert) exponentially."""
    aliases = {
        "clew_lim_n": f"toUInt64({per_tenant(*config.by_tenant('max_attributes_per_span'), '{in:tenant}')})",
        "clew_lim_len": f"toUInt64({per_tenant(*config.by_tenant('max_attribute_value_length'), '{in:tenant}')})",
    }
    before = "0"  # attributes of the kinds kept first (what they keep is least(N, this))
    columns: dict[str, str] = {}
    for kind in KINDS:
        column, count, keep = f"clew_lim_in_{kind}", f"clew_lim_count_{kind}", f"clew_lim_keep_{kind}"
        aliases[column] = f"{{in:attributes_{kind}}}"
        aliases[count] = f"length({column})"
        aliases[keep] = f"least({count}, greatest(toInt64(clew_lim_n) - toInt64({before}), 0))"
        keys, values = (
            f"arraySlice(mapKeys({column}), 1, {keep})",
            f"arraySlice(mapValues({column}), 1, {keep})",
        )
        if kind == "string":  # every value measured, whether or not attributes are dropped
            columns[f"attributes_{kind}"] = (
                f"mapFromArrays({keys}, arrayMap(v -> substringUTF8(v, 1, clew_lim_len), {values}))"
            )
        else:
            columns[f"attributes_{kind}"] = (
                f"if({count} <= {keep}, {column}, mapFromArrays({keys}, {values}))"
            )
        before = f"{before} + {count}"
    columns["dropped_attributes"] = (
        f"{{in:dropped_attributes}} + toUInt32(({before}) - least({before}, clew_lim_n))"
    )
    return Transforms(columns, aliases)


class Limits(BaseComponent):
    name = "limits"

    def __init__(self, ctx: Context, config: LimitsConfig) -> None:
        self.config = config

    def insert_stage(self) -> Transforms | None:
        return transforms(self.config)

    def log_stage(self) -> Transforms | None:
        """Log records have the spans' attribute maps and `dropped_attributes`: the same SQL."""
        return transforms(self.config)
