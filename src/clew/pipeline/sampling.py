"""Tail-based sampling: once a trace is complete, policies decide whether it outlives the full-fidelity
window (`[sampling]` in clew.toml, docs/sampling.md).

Every span is stored when it arrives, so nothing is lost while a trace is undecided and the last hour
can be debugged with every trace. The sampler only decides; the store's retention (store/sampling.py)
later deletes the spans of traces no policy kept. Policies follow the OpenTelemetry Collector's
`tail_sampling`: a trace is kept when any top-level policy keeps it, `and`/`or` combine policies, and
each kept trace records the names of the policies that kept it.

The features a policy looks at (errors, durations, attribute matches, rare operations) are computed by
the engine per trace from the spans received since the last tick, as counts that add up across ticks;
only the per-trace sums live here, never spans.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from clew.durations import DurationError, parse_duration
from clew.query.language import QuerySyntaxError, SpansetFilter, parse

PolicyType = Literal[
    "errors",
    "latency",
    "rare_operation",
    "attribute",
    "span_filter",
    "rate_limiting",
    "probabilistic",
    "and",
    "or",
]
POLICY_TYPES: tuple[str, ...] = PolicyType.__args__  # type: ignore[attr-defined]
SECOND = 10**9


class SamplingError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    type: PolicyType
    threshold: int = 0  # latency, ns
    service: str | None = None  # latency: only spans of this service (and operation) count
    operation: str | None = None
    max_per_hour: int = 10  # rare_operation: an operation seen at most this often in the last hour
    key: str = ""  # attribute: span or resource attribute key
    values: tuple[str | int | float | bool, ...] = ()  # attribute: any of these values
    pattern: str | None = None  # attribute: or a regular expression over the whole value
    query: str = (
        ""  # span_filter: a spanset filter of the query language, e.g. { span.http.status_code >= 500 }
    )
    traces_per_second: float = 0.0  # rate_limiting, per root service
    percentage: float = 0.0  # probabilistic, by trace id hash
    policies: tuple[Policy, ...] = ()  # and / or

    def leaves(self) -> Iterable[Policy]:
        if self.type in ("and", "or"):
            for sub in self.policies:
                yield from sub.leaves()
        else:
            yield self


DEFAULT_POLICIES = (
    Policy("errors", "errors"),
    Policy("slow", "latency", threshold=2 * SECOND),
    Policy("rare", "rare_operation", max_per_hour=10),
    Policy("baseline", "probabilistic", percentage=5.0),
)


@dataclass(frozen=True, slots=True)
class SamplingConfig:
    enabled: bool = True
    decision_wait: int = 10 * SECOND  # no new span for this long after the root ended: complete
    max_age: int = 300 * SECOND  # decided at the latest this long after its first span arrived
    full_fidelity: int = 3600 * SECOND  # every span stays queryable this long after it arrived
    retention: int = 7 * 24 * 3600 * SECOND  # sampled traces (and every span if disabled) stay this long
    max_pending_traces: int = 200_000  # beyond this many undecided traces the oldest are decided early
    tick: int = SECOND
    retention_interval: int = 60 * SECOND
    policies: tuple[Policy, ...] = DEFAULT_POLICIES

    @classmethod
    def from_toml(cls, doc: dict[str, Any]) -> SamplingConfig:
        """`[sampling]` of clew.toml, with `[[sampling.policy]]` tables (nested ones under `policy`)."""
        durations = ("decision_wait", "max_age", "full_fidelity", "retention", "tick", "retention_interval")
        known = {"enabled", "max_pending_traces", "policy", *durations}
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
            values["policies"] = _policies(doc["policy"], "[[sampling.policy]]")
        config = cls(**values)
        if config.max_age >= config.full_fidelity:
            raise SamplingError(
                "[sampling]: max_age must be shorter than full_fidelity (traces are decided first)"
            )
        if config.full_fidelity > config.retention:
            raise SamplingError("[sampling]: full_fidelity must not be longer than retention")
        return config


def _duration(value: object, where: str) -> int:
    try:
        return parse_duration(str(value), allow_days=True)
    except DurationError as exc:
        raise SamplingError(f"{where}: {exc}") from None


def _number(value: object, where: str, kind: type[int] | type[float]) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise SamplingError(f"{where} must be a non-negative number, got {value!r}")
    return kind(value)


_POLICY_KEYS: dict[str, set[str]] = {
    "errors": set(),
    "latency": {"threshold", "service", "operation"},
    "rare_operation": {"max_per_hour"},
    "attribute": {"key", "values", "pattern"},
    "span_filter": {"query"},
    "rate_limiting": {"traces_per_second"},
    "probabilistic": {"percentage"},
    "and": {"policy"},
    "or": {"policy"},
}


def _policies(tables: object, where: str) -> tuple[Policy, ...]:
    if not isinstance(tables, list) or not tables:
        raise SamplingError(f"{where}: expected a list of policy tables")
    policies = tuple(_policy(t, f"{where} #{i + 1}") for i, t in enumerate(tables))
    names = [p.name for p in policies]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise SamplingError(f"{where}: two policies are named {duplicate!r}")
    return policies


def _policy(table: object, where: str) -> Policy:
    if not isinstance(table, dict):
        raise SamplingError(f"{where}: expected a table")
    kind = table.get("type")
    if kind not in POLICY_TYPES:
        raise SamplingError(f"{where}: type must be one of {', '.join(POLICY_TYPES)}, got {kind!r}")
    name = str(table.get("name", kind))
    where = f"{where} ({name})"
    unknown = set(table) - {"name", "type"} - _POLICY_KEYS[kind]
    if unknown:
        raise SamplingError(f"{where}: unknown setting {sorted(unknown)[0]!r} for a {kind} policy")
    values: dict[str, Any] = {}
    if kind == "latency":
        if "threshold" not in table:
            raise SamplingError(f'{where}: a latency policy needs threshold, e.g. threshold = "500ms"')
        values["threshold"] = _duration(table["threshold"], f"{where} threshold")
        values["service"] = table.get("service")
        values["operation"] = table.get("operation")
        if values["operation"] is not None and values["service"] is None:
            raise SamplingError(f"{where}: operation needs service too")
    elif kind == "rare_operation":
        values["max_per_hour"] = _number(table.get("max_per_hour", 10), f"{where} max_per_hour", int)
    elif kind == "attribute":
        if not table.get("key") or ("values" in table) == ("pattern" in table):
            raise SamplingError(f"{where}: an attribute policy needs key and either values or pattern")
        values["key"] = str(table["key"])
        raw = table.get("values", [])
        if not isinstance(raw, list) or not all(isinstance(v, str | int | float | bool) for v in raw):
            raise SamplingError(f"{where}: values must be a list of strings, numbers or booleans")
        values["values"] = tuple(raw)
        values["pattern"] = None if table.get("pattern") is None else str(table["pattern"])
    elif kind == "span_filter":
        values["query"] = str(table.get("query", ""))
        span_filter(values["query"], where)  # reject a bad query at start-up, not at the first tick
    elif kind == "rate_limiting":
        values["traces_per_second"] = _number(
            table.get("traces_per_second"), f"{where} traces_per_second", float
        )
    elif kind == "probabilistic":
        percentage = _number(table.get("percentage"), f"{where} percentage", float)
        if percentage > 100:
            raise SamplingError(f"{where}: percentage must be at most 100")
        values["percentage"] = percentage
    elif kind in ("and", "or"):
        values["policies"] = _policies(table.get("policy"), f"{where} policy")
    return Policy(name, kind, **values)


def span_filter(query: str, where: str) -> SpansetFilter:
    try:
        parsed = parse(query)
    except QuerySyntaxError as exc:
        raise SamplingError(f"{where}: query {query!r}: {exc}") from None
    if not parsed.simple or not isinstance(parsed.spansets, SpansetFilter):
        raise SamplingError(f"{where}: query must be one spanset filter such as {{ span.x = 1 }}")
    return parsed.spansets


def flagged(policies: tuple[Policy, ...]) -> list[Policy]:
    """The leaves that need the trace's spans, in the order of the store's per-trace flag counts."""
    out = []
    for top in policies:
        for leaf in top.leaves():
            if leaf.type in ("rare_operation", "attribute", "span_filter") or (
                leaf.type == "latency" and leaf.service is not None
            ):
                out.append(leaf)
    return out


@dataclass(slots=True)
class TraceState:
    """What the sampler knows of one undecided trace: sums over its spans received so far."""

    first: int  # received, ns
    last: int
    roots: int
    errors: int
    start: int  # earliest span start, ns
    end: int  # latest span end
    root_service: str
    spans: int
    flags: list[int]

    def merge(self, other: TraceState) -> None:
        self.first, self.last = min(self.first, other.first), max(self.last, other.last)
        if other.roots and not self.roots:
            self.root_service = other.root_service
        elif not self.roots and other.start < self.start:
            self.root_service = other.root_service
        self.roots += other.roots
        self.errors += other.errors
        self.start, self.end = min(self.start, other.start), max(self.end, other.end)
        self.spans += other.spans
        self.flags = [a + b for a, b in zip(self.flags, other.flags, strict=True)]


@dataclass(frozen=True, slots=True)
class Decision:
    tenant: str
    trace_id: bytes
    kept: bool
    policies: tuple[str, ...]  # the top-level policies that kept it
    decided_at: int
    spans: int


class ActivitySource(Protocol):
    """The store as the sampler sees it (store/sampling.py)."""

    def received_until(self) -> int: ...

    def trace_activity(
        self, since: int, until: int, now: int, only_undecided: bool
    ) -> list[tuple[str, bytes, TraceState]]:
        """Per trace, sums over its spans received in (since, until]; `flags` in `flagged()` order."""
        ...

    def write_decisions(self, decisions: list[Decision]) -> None: ...


@dataclass
class SamplerCounters:
    ticks: int = 0
    spans_seen: int = 0
    traces_kept: int = 0
    traces_dropped: int = 0
    decided_early: int = 0  # over max_pending_traces, or past max_age without a root
    late_spans: int = 0  # arrived after their trace was decided; they follow that decision
    kept_by_policy: dict[str, int] = field(default_factory=dict)


class TokenBucket:
    def __init__(self, rate: float) -> None:
        self.rate, self.tokens, self.at = rate, rate, 0

    def take(self, now: int) -> bool:
        if self.at:
            self.tokens = min(self.rate, self.tokens + (now - self.at) / SECOND * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


def probabilistic(trace_id: bytes, percentage: float) -> bool:
    """By a hash of the trace id, so every clew instance (and a re-decided trace) agrees."""
    digest = int.from_bytes(hashlib.blake2b(trace_id, digest_size=8).digest(), "big")
    return digest < percentage / 100 * 2**64


class Sampler:
    """Call `tick()` periodically (the server does, every `config.tick`); `clock` is the store's clock."""

    def __init__(
        self, source: ActivitySource, config: SamplingConfig, clock: Callable[[], int] = time.time_ns
    ) -> None:
        self.source, self.config, self.clock = source, config, clock
        self._flag_of = {id(leaf): i for i, leaf in enumerate(flagged(config.policies))}
        self.pending: dict[tuple[str, bytes], TraceState] = {}
        self._decided: OrderedDict[tuple[str, bytes], int] = OrderedDict()  # -> decided at
        self._buckets: dict[tuple[int, str], TokenBucket] = {}
        self._since: int | None = None
        self.counters = SamplerCounters()

    def tick(self) -> list[Decision]:
        now = self.clock()
        until = self.source.received_until()
        first = self._since is None
        # after a start, look back over the window in which traces may still be undecided
        since = now - self.config.max_age - self.config.decision_wait if self._since is None else self._since
        if until > since:
            for tenant, trace_id, state in self.source.trace_activity(since, until, now, first):
                self.counters.spans_seen += state.spans
                key = (tenant, trace_id)
                if key in self._decided:
                    self.counters.late_spans += state.spans
                elif key in self.pending:
                    self.pending[key].merge(state)
                else:
                    self.pending[key] = state
            self._since = until
        decisions = self._decide(now)
        if decisions:
            self.source.write_decisions(decisions)
        self.counters.ticks += 1
        return decisions

    def _decide(self, now: int) -> list[Decision]:
        config = self.config
        complete = [
            key
            for key, s in self.pending.items()
            if (s.roots and s.last <= now - config.decision_wait) or s.first <= now - config.max_age
        ]
        early = [key for key in complete if not self.pending[key].roots]
        overflow = len(self.pending) - len(complete) - config.max_pending_traces
        if overflow > 0:
            done = set(complete)
            oldest = sorted((s.first, key) for key, s in self.pending.items() if key not in done)[:overflow]
            complete += [key for _, key in oldest]
            early += [key for _, key in oldest]
        self.counters.decided_early += len(early)
        decisions = []
        for key in sorted(complete, key=lambda k: self.pending[k].first):
            state = self.pending.pop(key)
            kept = tuple(p.name for p in config.policies if self._keeps(p, key[1], state, now))
            decisions.append(Decision(key[0], key[1], bool(kept), kept, now, state.spans))
            self._decided[key] = now
            if kept:
                self.counters.traces_kept += 1
                for name in kept:
                    self.counters.kept_by_policy[name] = self.counters.kept_by_policy.get(name, 0) + 1
            else:
                self.counters.traces_dropped += 1
        horizon = now - config.max_age - config.decision_wait
        while self._decided and next(iter(self._decided.values())) < horizon:
            self._decided.popitem(last=False)
        return decisions

    def _keeps(self, policy: Policy, trace_id: bytes, state: TraceState, now: int) -> bool:
        kind = policy.type
        if kind == "and":
            return all(self._keeps(p, trace_id, state, now) for p in policy.policies)
        if kind == "or":
            return any([self._keeps(p, trace_id, state, now) for p in policy.policies])  # every one counted
        if kind == "errors":
            return state.errors > 0
        if kind == "latency" and policy.service is None:
            return state.end - state.start >= policy.threshold
        if kind == "probabilistic":
            return probabilistic(trace_id, policy.percentage)
        if kind == "rate_limiting":
            bucket = self._buckets.setdefault(
                (id(policy), state.root_service), TokenBucket(policy.traces_per_second)
            )
            return bucket.take(now)
        return state.flags[self._flag_of[id(policy)]] > 0
