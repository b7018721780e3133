"""Sampling policies: one interface, one class per kind, each parsed from its `[[sampling.policy]]`
table. A policy either decides from the per-trace sums every trace has (errors, duration, root
service, trace id) or asks the engine for one more per-trace count (`flag_sql`): the number of the
trace's spans matching a condition, summed across ticks like every other feature.

They follow the OpenTelemetry Collector's `tail_sampling`: a trace is kept when any top-level policy
keeps it, and `and`/`or` combine policies.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from clew.core.durations import DurationError, parse_duration
from clew.core.errors import BadRequest, ConfigError
from clew.core.language import BoolOp, Comparison, Field, SpansetFilter, Value, ValueKind, parse
from clew.store.search import Params, condition_sql

SECOND = 10**9


class SamplingError(ConfigError):
    pass


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


@dataclass(slots=True)
class Candidate:
    """A complete trace being decided, with what policies may consult."""

    trace_id: bytes
    state: TraceState
    now: int
    flag: Callable[[SamplingPolicy], int]  # the engine's count for a policy with `flag_sql`
    bucket: Callable[[SamplingPolicy, str, float], TokenBucket]  # a rate limiter's bucket per key


class SamplingPolicy(ABC):
    """One kind of policy. `KEYS` are the settings its table takes besides `name` and `type`."""

    type: ClassVar[str]
    KEYS: ClassVar[frozenset[str]] = frozenset()
    name: str

    def leaves(self) -> Iterator[SamplingPolicy]:
        yield self

    def flag_sql(self, params: Params, slot: str) -> str | None:
        """A condition on one span, counted per trace by the engine; None if the policy needs none.
        `slot` names a parameter the policy may fill at every scan (`scan_param`)."""
        return None

    def scan_param(self) -> int | None:
        """For rare operations: the most calls an hour that still count as rare."""
        return None

    @abstractmethod
    def keeps(self, trace: Candidate) -> bool: ...

    @classmethod
    @abstractmethod
    def parse(cls, name: str, table: dict[str, Any], where: str) -> SamplingPolicy: ...


@dataclass(frozen=True, slots=True)
class Errors(SamplingPolicy):
    name: str
    type: ClassVar[str] = "errors"

    def keeps(self, trace: Candidate) -> bool:
        return trace.state.errors > 0

    @classmethod
    def parse(cls, name: str, table: dict[str, Any], where: str) -> Errors:
        return cls(name)


@dataclass(frozen=True, slots=True)
class Latency(SamplingPolicy):
    """The whole trace at least `threshold` long; with `service` (and `operation`), a span of it."""

    name: str
    threshold: int  # ns
    service: str | None = None
    operation: str | None = None
    type: ClassVar[str] = "latency"
    KEYS: ClassVar[frozenset[str]] = frozenset({"threshold", "service", "operation"})

    def flag_sql(self, params: Params, slot: str) -> str | None:
        if self.service is None:
            return None
        expr = f"service_name = {params.add(self.service, 'String')}"
        if self.operation is not None:
            expr += f" AND name = {params.add(self.operation, 'String')}"
        return expr + f" AND duration >= {params.add(self.threshold, 'UInt64')}"

    def keeps(self, trace: Candidate) -> bool:
        if self.service is None:
            return trace.state.end - trace.state.start >= self.threshold
        return trace.flag(self) > 0

    @classmethod
    def parse(cls, name: str, table: dict[str, Any], where: str) -> Latency:
        if "threshold" not in table:
            raise SamplingError(f'{where}: a latency policy needs threshold, e.g. threshold = "500ms"')
        service, operation = table.get("service"), table.get("operation")
        if operation is not None and service is None:
            raise SamplingError(f"{where}: operation needs service too")
        return cls(name, _duration(table["threshold"], f"{where} threshold"), service, operation)


@dataclass(frozen=True, slots=True)
class RareOperation(SamplingPolicy):
    """A span of an operation seen at most `max_per_hour` times in the last hour (RED minutes)."""

    name: str
    max_per_hour: int = 10
    type: ClassVar[str] = "rare_operation"
    KEYS: ClassVar[frozenset[str]] = frozenset({"max_per_hour"})

    def flag_sql(self, params: Params, slot: str) -> str | None:
        return f"has({{{slot}:Array(UInt64)}}, cityHash64(service_name, name))"

    def scan_param(self) -> int | None:
        return self.max_per_hour

    def keeps(self, trace: Candidate) -> bool:
        return trace.flag(self) > 0

    @classmethod
    def parse(cls, name: str, table: dict[str, Any], where: str) -> RareOperation:
        return cls(name, _number(table.get("max_per_hour", 10), f"{where} max_per_hour", int))


@dataclass(frozen=True, slots=True)
class Attribute(SamplingPolicy):
    """A span or resource attribute `key` with one of `values`, or matching `pattern` whole."""

    name: str
    key: str
    values: tuple[str | int | float | bool, ...] = ()
    pattern: str | None = None
    type: ClassVar[str] = "attribute"
    KEYS: ClassVar[frozenset[str]] = frozenset({"key", "values", "pattern"})

    def condition(self) -> BoolOp | Comparison:
        attribute = Field("any", self.key)
        if self.pattern is not None:
            return Comparison(attribute, "=~", Value("string", self.pattern))
        conditions: list[BoolOp | Comparison] = []
        for v in self.values:
            kind: ValueKind = (
                "string"
                if isinstance(v, str)
                else "bool"
                if isinstance(v, bool)
                else "int"
                if isinstance(v, int)
                else "float"
            )
            conditions.append(Comparison(attribute, "=", Value(kind, v)))
        condition = conditions[0]
        for more in conditions[1:]:
            condition = BoolOp("||", condition, more)
        return condition

    def flag_sql(self, params: Params, slot: str) -> str | None:
        return condition_sql(self.condition(), params)

    def keeps(self, trace: Candidate) -> bool:
        return trace.flag(self) > 0

    @classmethod
    def parse(cls, name: str, table: dict[str, Any], where: str) -> Attribute:
        if not table.get("key") or ("values" in table) == ("pattern" in table):
            raise SamplingError(f"{where}: an attribute policy needs key and either values or pattern")
        raw = table.get("values", [])
        if not isinstance(raw, list) or not all(isinstance(v, str | int | float | bool) for v in raw):
            raise SamplingError(f"{where}: values must be a list of strings, numbers or booleans")
        pattern = None if table.get("pattern") is None else str(table["pattern"])
        return cls(name, str(table["key"]), tuple(raw), pattern)


@dataclass(frozen=True, slots=True)
class SpanFilterPolicy(SamplingPolicy):
    """A span matching a spanset filter of the query language, e.g. `{ span.http.status_code >= 500 }`."""

    name: str
    query: str
    type: ClassVar[str] = "span_filter"
    KEYS: ClassVar[frozenset[str]] = frozenset({"query"})

    def flag_sql(self, params: Params, slot: str) -> str | None:
        return condition_sql(span_filter(self.query, self.name).condition, params)

    def keeps(self, trace: Candidate) -> bool:
        return trace.flag(self) > 0

    @classmethod
    def parse(cls, name: str, table: dict[str, Any], where: str) -> SpanFilterPolicy:
        query = str(table.get("query", ""))
        span_filter(query, where)  # reject a bad query at start-up, not at the first tick
        return cls(name, query)


@dataclass(frozen=True, slots=True)
class RateLimiting(SamplingPolicy):
    """At most `traces_per_second` traces per root service."""

    name: str
    traces_per_second: float
    type: ClassVar[str] = "rate_limiting"
    KEYS: ClassVar[frozenset[str]] = frozenset({"traces_per_second"})

    def keeps(self, trace: Candidate) -> bool:
        return trace.bucket(self, trace.state.root_service, self.traces_per_second).take(trace.now)

    @classmethod
    def parse(cls, name: str, table: dict[str, Any], where: str) -> RateLimiting:
        return cls(name, _number(table.get("traces_per_second"), f"{where} traces_per_second", float))


def probabilistic(trace_id: bytes, percentage: float) -> bool:
    """By a hash of the trace id, so every clew instance (and a re-decided trace) agrees."""
    digest = int.from_bytes(hashlib.blake2b(trace_id, digest_size=8).digest(), "big")
    return digest < percentage / 100 * 2**64


@dataclass(frozen=True, slots=True)
class Probabilistic(SamplingPolicy):
    name: str
    percentage: float
    type: ClassVar[str] = "probabilistic"
    KEYS: ClassVar[frozenset[str]] = frozenset({"percentage"})

    def keeps(self, trace: Candidate) -> bool:
        return probabilistic(trace.trace_id, self.percentage)

    @classmethod
    def parse(cls, name: str, table: dict[str, Any], where: str) -> Probabilistic:
        percentage = _number(table.get("percentage"), f"{where} percentage", float)
        if percentage > 100:
            raise SamplingError(f"{where}: percentage must be at most 100")
        return cls(name, percentage)


@dataclass(frozen=True, slots=True)
class And(SamplingPolicy):
    name: str
    policies: tuple[SamplingPolicy, ...] = field(default_factory=tuple)
    type: ClassVar[str] = "and"
    KEYS: ClassVar[frozenset[str]] = frozenset({"policy"})

    def leaves(self) -> Iterator[SamplingPolicy]:
        for sub in self.policies:
            yield from sub.leaves()

    def keeps(self, trace: Candidate) -> bool:
        return all(p.keeps(trace) for p in self.policies)

    @classmethod
    def parse(cls, name: str, table: dict[str, Any], where: str) -> And:
        return cls(name, policies_from_toml(table.get("policy"), f"{where} policy"))


@dataclass(frozen=True, slots=True)
class Or(And):
    type: ClassVar[str] = "or"

    def keeps(self, trace: Candidate) -> bool:
        return any([p.keeps(trace) for p in self.policies])  # every one asked: rate limiters count


KINDS: dict[str, type[SamplingPolicy]] = {
    k.type: k
    for k in (
        Errors,
        Latency,
        RareOperation,
        Attribute,
        SpanFilterPolicy,
        RateLimiting,
        Probabilistic,
        And,
        Or,
    )
}
POLICY_TYPES = tuple(KINDS)

DEFAULT_POLICIES: tuple[SamplingPolicy, ...] = (
    Errors("errors"),
    Latency("slow", threshold=2 * SECOND),
    RareOperation("rare", max_per_hour=10),
    Probabilistic("baseline", percentage=5.0),
)


def _duration(value: object, where: str) -> int:
    try:
        return parse_duration(str(value), allow_days=True)
    except DurationError as exc:
        raise SamplingError(f"{where}: {exc}") from None


def _number(value: object, where: str, kind: type[int] | type[float]) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise SamplingError(f"{where} must be a non-negative number, got {value!r}")
    return kind(value)


def policies_from_toml(tables: object, where: str) -> tuple[SamplingPolicy, ...]:
    if not isinstance(tables, list) or not tables:
        raise SamplingError(f"{where}: expected a list of policy tables")
    policies = tuple(policy_from_toml(t, f"{where} #{i + 1}") for i, t in enumerate(tables))
    names = [p.name for p in policies]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise SamplingError(f"{where}: two policies are named {duplicate!r}")
    return policies


def policy_from_toml(table: object, where: str) -> SamplingPolicy:
    if not isinstance(table, dict):
        raise SamplingError(f"{where}: expected a table")
    kind = KINDS.get(str(table.get("type")))
    if kind is None:
        raise SamplingError(
            f"{where}: type must be one of {', '.join(POLICY_TYPES)}, got {table.get('type')!r}"
        )
    name = str(table.get("name", kind.type))
    where = f"{where} ({name})"
    unknown = set(table) - {"name", "type"} - kind.KEYS
    if unknown:
        raise SamplingError(f"{where}: unknown setting {sorted(unknown)[0]!r} for a {kind.type} policy")
    return kind.parse(name, table, where)


def span_filter(query: str, where: str) -> SpansetFilter:
    try:
        parsed = parse(query)
    except BadRequest as exc:
        raise SamplingError(f"{where}: query {query!r}: {exc}") from None
    if not parsed.simple or not isinstance(parsed.spansets, SpansetFilter):
        raise SamplingError(f"{where}: query must be one spanset filter such as {{ span.x = 1 }}")
    return parsed.spansets


def flagged(policies: tuple[SamplingPolicy, ...]) -> list[SamplingPolicy]:
    """The leaves that need a per-trace count from the engine, in the order of those counts."""
    params = Params()
    return [leaf for top in policies for leaf in top.leaves() if leaf.flag_sql(params, "probe") is not None]


def policy(name: str, type: str, **values: Any) -> SamplingPolicy:
    """A policy by the name of its kind, as clew.toml names it: `policy("slow", "latency", threshold=...)`."""
    kind = KINDS.get(type)
    if kind is None:
        raise SamplingError(f"type must be one of {', '.join(POLICY_TYPES)}, got {type!r}")
    build: Callable[..., SamplingPolicy] = kind  # each kind's own fields, as its dataclass declares them
    return build(name, **values)
