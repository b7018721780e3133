"""`[sampling]` of clew.toml."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clew.components.sampling.policies import (
    DEFAULT_POLICIES,
    SECOND,
    SamplingError,
    SamplingPolicy,
    _duration,
    _number,
    policies_from_toml,
)


@dataclass(frozen=True, slots=True)
class SamplingConfig:
    enabled: bool = True
    decision_wait: int = 10 * SECOND  # no new span for this long after the root ended: complete
    max_age: int = 300 * SECOND  # decided at the latest this long after its first span arrived
    full_fidelity: int = 3600 * SECOND  # every span stays queryable this long after it arrived
    max_pending_traces: int = 200_000  # beyond this many undecided traces the oldest are decided early
    tick: int = SECOND
    policies: tuple[SamplingPolicy, ...] = DEFAULT_POLICIES

    @classmethod
    def from_toml(cls, doc: dict[str, Any]) -> SamplingConfig:
        """`[sampling]` of clew.toml, with `[[sampling.policy]]` tables (nested ones under `policy`)."""
        durations = ("decision_wait", "max_age", "full_fidelity", "tick")
        # `retention` and `retention_interval` are the retention component's, read from here too
        known = {"enabled", "max_pending_traces", "policy", "retention", "retention_interval", *durations}
        for key in doc:
            if key not in known:
                raise SamplingError(f"[sampling]: unknown setting {key!r}")
        values: dict[str, Any] = {}
        for key in durations:
            if key in doc:
                values[key] = _duration(doc[key], f"[sampling] {key}")
        if "enabled" in doc:
            values["enabled"] = bool(doc["enabled"])
        if "max_pending_traces" in doc:
            values["max_pending_traces"] = _number(
                doc["max_pending_traces"], "[sampling] max_pending_traces", int
            )
        if "policy" in doc:
            values["policies"] = policies_from_toml(doc["policy"], "[[sampling.policy]]")
        config = cls(**values)
        if config.max_age >= config.full_fidelity:
            raise SamplingError(
                "[sampling]: max_age must be shorter than full_fidelity (traces are decided first)"
            )
        return config
