"""SLOs with multi-window, multi-burn-rate alerts, and an alert when a service goes silent.

SLOs come from clew.toml (`[[slos]]`) and from `PUT /api/v1/slos` (kept in the store per tenant, and
then the tenant's list). Their indicators are computed from the span-derived RED minutes, which
count every span before sampling, handed in by the assembly (`series`). Each evaluation turns every
condition into an alert state: inactive, pending (holding for less than `pending_for`), firing,
resolved (false for `resolve_after`, so an alert that wavers around its threshold does not flap).
Firing and resolving are notified (notify.py) with example traces that broke the objective; the
states are `GET /api/v1/alerts` and Prometheus' `ALERTS` series on `/metrics`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from clew.components.alerts.config import (
    SPAN_KINDS,
    AlertingConfig,
    AlertingError,
    BurnWindow,
    Slo,
    parse_slos,
)
from clew.components.alerts.notify import Event, Notifier
from clew.components.base import BaseComponent, Context
from clew.components.http import tenant
from clew.core.errors import BadRequest, Forbidden
from clew.core.identity import caller_of
from clew.core.telemetry import Metric, Sample
from clew.store.migrations import Migration, steps

__all__ = ["Alerts", "AlertingConfig", "AlertingError"]

log = logging.getLogger(__name__)
S = 10**9
MAX_BODY = 256 * 1024
HISTORY_NS = 24 * 3600 * S  # resolved alerts are listed this long
EXAMPLES = 3
HISTORY_STEPS = 24
SLOS_DDL = """
CREATE TABLE IF NOT EXISTS {db}.slos (tenant String, doc String, updated DateTime64(9, 'UTC'))
ENGINE = ReplacingMergeTree(updated) ORDER BY tenant
"""
MIGRATIONS = steps("alerts", ("SLOs set through the API", [SLOS_DDL]))
ALERTS = Metric("ALERTS", "gauge", "Alerts pending or firing (1), as Prometheus names them.")
NOTIFICATIONS = Metric("clew_alert_notifications", "counter", "Webhook deliveries of alert notifications.")


class RedSeries(Protocol):
    """A RED series over a time range (the RED component's): what an SLO's indicator reads."""

    @property
    def service(self) -> str: ...
    @property
    def operation(self) -> str: ...
    @property
    def kind(self) -> int: ...
    @property
    def calls(self) -> int: ...
    @property
    def errors(self) -> int: ...
    @property
    def buckets(self) -> list[int]: ...  # cumulative counts at the bounds
    @property
    def slowest_trace(self) -> bytes: ...
    @property
    def last_error_trace(self) -> bytes: ...


class BrokenService(Protocol):
    """A service's traces over a window and how many are broken (the completeness component's)."""

    @property
    def service(self) -> str: ...
    @property
    def traces(self) -> int: ...
    @property
    def broken(self) -> int: ...
    @property
    def examples(self) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class Pipeline:
    """clew's own ingest at one moment: spans refused (a full queue or log) and failed commits so
    far, and how long the oldest acknowledged span has waited for its commit (s)."""

    refused: int = 0
    failed: int = 0
    commit_lag_s: float = 0.0


PIPELINE_TENANT = ""  # clew's own alerts, listed to every tenant (no tenant is named "")


@dataclass(slots=True)
class Indicator:
    """Good and total events of an SLO over a window, with traces of bad events."""

    total: int = 0
    bad: int = 0
    examples: list[str] = field(default_factory=list)

    def burn(self, slo: Slo) -> float:
        """How many times faster than the objective allows the budget burns (0 without events)."""
        return (self.bad / self.total) / slo.budget if self.total else 0.0


@dataclass(slots=True)
class AlertState:
    name: str
    tenant: str
    labels: dict[str, str]
    summary: str = ""
    state: str = "inactive"  # pending, firing, resolved
    since: int = 0  # when it became pending or firing
    false_since: int | None = None  # firing, but its condition false since then
    resolved_at: int | None = None
    examples: tuple[str, ...] = ()
    value: float = 0.0
    source: str = "slo"  # slo, silent, broken or pipeline: what evaluates its condition

    def step(self, holds: bool, now: int, pending_for: int, resolve_after: int) -> str | None:
        """The next state for a condition that holds or not now; "firing" or "resolved" when that
        is news to notify."""
        if holds:
            self.false_since = None
            if self.state in ("inactive", "resolved"):
                self.state, self.since, self.resolved_at = "pending", now, None
            if self.state == "pending" and now - self.since >= pending_for:
                self.state, self.since = "firing", now
                return "firing"
            return None
        if self.state == "pending":
            self.state = "inactive"
        elif self.state == "firing":
            self.false_since = self.false_since if self.false_since is not None else now
            if now - self.false_since >= resolve_after:
                self.state, self.resolved_at = "resolved", now
                return "resolved"
        return None

    def expired(self, now: int) -> bool:
        """Resolved longer ago than the alert list shows."""
        return self.state == "resolved" and now - (self.resolved_at or now) > HISTORY_NS

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "state": self.state, "labels": self.labels, "summary": self.summary,
            "since": self.since / 1e9, "resolvedAt": None if self.resolved_at is None else self.resolved_at / 1e9,
            "value": self.value, "examples": list(self.examples),
        }  # fmt: skip


class Alerts(BaseComponent):
    name = "alerts"
    telemetry = (ALERTS, NOTIFICATIONS)

    def __init__(
        self,
        ctx: Context,
        config: AlertingConfig,
        series: Callable[[int, int, str], Sequence[RedSeries]],
        bounds: Sequence[float],
        broken: Callable[[int, int, str], Sequence[BrokenService]] | None = None,
    ) -> None:
        """`series(start, end, tenant)`: RED totals over a range; `bounds`: their bucket bounds (s);
        `broken(start, end, tenant)`: each service's broken traces (completeness)."""
        self.conn, self.db, self.clock = ctx.conn, ctx.db, ctx.clock
        self.config, self.series, self.bounds = config, series, tuple(bounds)
        self.interval = config.evaluate_every
        self.notifier = Notifier(config.webhooks, config.external_url)
        self.states: dict[tuple[str, str], AlertState] = {}
        self.last_seen: dict[tuple[str, str], int] = {}  # (tenant, service) -> last received (ns)
        self.lock = threading.Lock()
        self.pipeline: Callable[[], Pipeline] | None = None
        self.broken = broken
        self._broken_at: dict[str, tuple[int, Sequence[BrokenService]]] = {}  # tenant -> (when, report)
        self._pipeline_seen = Pipeline()

    def watch_pipeline(self, read: Callable[[], Pipeline]) -> None:
        """Alert when ingest refuses spans, fails a commit or falls behind (`read` is the server's
        view of its writer, which exists only once the server runs)."""
        self.pipeline, self._pipeline_seen = read, read()

    def migrations(self) -> Sequence[Migration]:
        return MIGRATIONS

    def start(self) -> None:
        """Also on gaining leadership: refusals counted before are not news."""
        if self.pipeline is not None:
            self._pipeline_seen = self.pipeline()

    # --- SLOs --------------------------------------------------------------------------------------

    def slos(self) -> list[Slo]:
        """Every tenant's SLOs: its own list if one was set through the API, else clew.toml's."""
        stored = self.conn.query(
            f"SELECT tenant, argMax(doc, updated) AS doc FROM {self.db}.slos GROUP BY tenant"
        ).to_pylist()
        by_tenant: dict[str, tuple[Slo, ...]] = {}
        for r in stored:
            try:  # one tenant's list that no longer parses must not stop the others' alerts
                by_tenant[str(r["tenant"])] = parse_slos(json.loads(r["doc"]), str(r["tenant"]))
            except (BadRequest, ValueError, RecursionError) as exc:
                log.error(
                    "the stored SLOs of tenant %r do not parse, clew.toml's apply: %s", r["tenant"], exc
                )
        configured = [s for s in self.config.slos if s.tenant not in by_tenant]
        return configured + [s for slos in by_tenant.values() for s in slos]

    def put_slos(self, docs: list[Any], owner: str) -> list[Slo]:
        slos = parse_slos(docs, owner)
        self.conn.command(
            f"INSERT INTO {self.db}.slos SELECT {{t:String}}, {{d:String}}, now64(9, 'UTC')",
            {"t": owner, "d": json.dumps([s.to_json() for s in slos])},
        )
        return list(slos)

    def indicator(self, slo: Slo, start: int, end: int, cache: dict[Any, Any] | None = None) -> Indicator:
        """The SLO's events over [start, end] ns from the RED minutes (`cache` keeps one range's
        series for the SLOs of one evaluation)."""
        cache = {} if cache is None else cache
        key = (start, end, slo.tenant)
        if key not in cache:
            cache[key] = self.series(start, end, slo.tenant)
        kind = SPAN_KINDS[slo.span_kind]
        out = Indicator()
        at = self._bound(slo)
        for s in cache[key]:
            if s.service != slo.service or (slo.operation and s.operation != slo.operation):
                continue
            if kind is not None and s.kind != kind:
                continue
            out.total += s.calls
            if slo.sli == "availability":
                out.bad += s.errors
                trace = s.last_error_trace if s.errors else b""
            else:
                fast = 0 if at is None else s.buckets[at] if at < len(s.buckets) else s.calls
                out.bad += s.calls - fast
                trace = s.slowest_trace if s.calls > fast else b""
            if trace.strip(b"\x00") and len(out.examples) < EXAMPLES and trace.hex() not in out.examples:
                out.examples.append(trace.hex())
        return out

    def _bound(self, slo: Slo) -> int | None:
        """The RED bucket a latency threshold counts up to: the largest bound at or below it (the
        objective gets stricter, never laxer; `effectiveThresholdMs` says which). None under the
        smallest bound: no span can be shown to be that fast."""
        below = [i for i, b in enumerate(self.bounds) if b * 1000 <= slo.threshold_ms]
        return below[-1] if below else None

    def effective_threshold_ms(self, slo: Slo) -> float | None:
        if slo.sli != "latency":
            return None
        at = self._bound(slo)
        return 0.0 if at is None else self.bounds[at] * 1000

    def status(self, slo: Slo, now: int, cache: dict[Any, Any] | None = None) -> dict[str, Any]:
        cache = {} if cache is None else cache
        whole = self.indicator(slo, now - slo.window, now, cache)
        return {
            **slo.to_json(),
            "effectiveThresholdMs": self.effective_threshold_ms(slo),
            "sliValue": 1 - whole.bad / whole.total if whole.total else None,
            "events": whole.total, "badEvents": whole.bad,
            "errorBudgetRemaining": 1 - whole.burn(slo),
            "burnRates": [
                {"severity": w.severity, "threshold": w.burn_rate,
                 "long": self.indicator(slo, now - w.long, now, cache).burn(slo),
                 "short": self.indicator(slo, now - w.short, now, cache).burn(slo)}
                for w in self.config.windows
            ],
            "examples": whole.examples,
            "burnHistory": self.history(slo, now, cache),
        }  # fmt: skip

    def history(self, slo: Slo, now: int, cache: dict[Any, Any]) -> list[dict[str, float]]:
        """The burn rate per step over the longest alert window, HISTORY_STEPS steps: the SLO page's
        chart."""
        span = max((w.long for w in self.config.windows), default=3600 * S)
        step = max(1, -(-span // HISTORY_STEPS // (60 * S))) * 60 * S  # whole RED minutes, covering span
        end = now // (60 * S) * (60 * S)
        points = []
        for start in range(end - HISTORY_STEPS * step, end, step):
            burn = self.indicator(slo, start, start + step - 1, cache).burn(slo)
            points.append({"time": (start + step) / 1e9, "burnRate": burn})
        return points

    # --- evaluation --------------------------------------------------------------------------------

    def tick(self, now: int) -> None:
        self.evaluate(now)

    def evaluate(self, now: int) -> list[Event]:
        """Every condition at `now`, each alert's state stepped, and the news notified. A source
        that fails (the store down) leaves its alerts as they were: neither fired nor resolved."""
        conditions: dict[tuple[str, str], tuple[bool, AlertState, float, tuple[str, ...]]] = {}
        failed: set[str] = set()
        lag_s = 0.0
        if self.pipeline is not None:  # first: it needs no store, and matters most when that fails
            try:
                lag_s = self._add_pipeline(conditions)
            except Exception:
                log.exception("alerts: reading the ingest pipeline failed")
                failed.add("pipeline")
        for source, add in (
            ("slo", self._add_slos),
            ("silent", self._add_silences),
            ("broken", self._add_broken),
        ):
            if source == "silent" and lag_s * S > self.config.silent_after / 2 and self.config.silent_after:
                failed.add(source)  # commits stall: every service would look silent
                continue
            try:
                add(conditions, now)
            except Exception:
                log.exception("alerts: evaluating %s alerts failed", source)
                failed.add(source)
        events = []
        with self.lock:
            for key in set(self.states) | set(conditions):
                if key not in conditions:
                    state = self.states[key]
                    if state.source in failed:
                        continue
                    # what it was about is gone (an SLO removed, a service forgotten): dropped
                    # unannounced, a resolved one once its day in the list is over
                    if state.state != "resolved" or state.expired(now):
                        del self.states[key]
                    continue
                holds, fresh, value, examples = conditions[key]
                state = self.states.setdefault(key, fresh)
                state.summary, state.labels, state.value = fresh.summary, fresh.labels, value
                if holds and examples:
                    state.examples = examples
                news = state.step(holds, now, self.config.pending_for, self.config.resolve_after)
                if news is not None:
                    event = Event(state.name, news, state.labels, state.summary, state.since,
                                  state.resolved_at, state.examples, state.tenant)  # fmt: skip
                    events.append(event)
                    self.notifier.send(event)
                if state.state == "inactive" or state.expired(now):
                    del self.states[key]
        return events

    def _add_slos(self, conditions: dict[Any, Any], now: int) -> None:
        cache: dict[Any, Any] = {}
        for slo in self.slos():
            for w in self.config.windows:
                holds, value, examples = self._burning(slo, w, now, cache)
                name = f"{slo.name}:{w.severity}"
                labels = {
                    "slo": slo.name,
                    "service": slo.service,
                    "severity": w.severity,
                    "tenant": slo.tenant,
                }
                summary = (
                    f"{slo.service} burns the error budget of {slo.name} ({slo.objective:g}% {slo.sli}) "
                    f"{value:.1f}x too fast (over {w.long // S}s and {w.short // S}s; alerts past {w.burn_rate:g}x)"
                )
                conditions[(slo.tenant, name)] = (
                    holds,
                    AlertState(name, slo.tenant, labels, summary),
                    value,
                    examples,
                )

    def _add_silences(self, conditions: dict[Any, Any], now: int) -> None:
        silences = self._silence(now)  # also the tenants and services seen lately
        if not self.config.silent_after:
            return
        for (owner, service), silent_for in silences.items():
            name = f"silent:{service}"
            labels = {"service": service, "severity": "ticket", "tenant": owner, "kind": "silent"}
            summary = f"{service} sent spans, then none for {silent_for / S:.0f} s"
            holds = silent_for >= self.config.silent_after
            state = AlertState(name, owner, labels, summary, source="silent")
            conditions[(owner, name)] = (holds, state, silent_for / S, ())

    def _add_broken(self, conditions: dict[Any, Any], now: int) -> None:
        if self.broken is None or self.config.broken_share <= 0:
            return
        if not self.last_seen:
            self._silence(now)
        for owner in sorted({t for t, _ in self.last_seen}):
            for b in self._broken(owner, now):
                share = b.broken / b.traces if b.traces else 0.0
                holds = b.traces >= self.config.broken_min_traces and share > self.config.broken_share
                name = f"broken:{b.service}"
                labels = {"service": b.service, "severity": "ticket", "tenant": owner, "kind": "broken"}
                summary = (f"{share:.0%} of {b.service}'s {b.traces} traces are broken (orphan spans or lost "
                           f"propagation; alerts past {self.config.broken_share:.0%})")  # fmt: skip
                state = AlertState(name, owner, labels, summary, source="broken")
                conditions[(owner, name)] = (holds, state, share, tuple(b.examples[:EXAMPLES]))

    def _add_pipeline(self, conditions: dict[Any, Any]) -> float:
        """clew's own alerts; returns the commit lag (s)."""
        for name, (holds, summary, value) in self._pipeline_conditions().items():
            labels = {"service": "clew", "severity": "page", "kind": "pipeline"}
            state = AlertState(name, PIPELINE_TENANT, labels, summary, source="pipeline")
            conditions[(PIPELINE_TENANT, name)] = (holds, state, value, ())
        return self._pipeline_seen.commit_lag_s

    def _burning(
        self, slo: Slo, w: BurnWindow, now: int, cache: dict[Any, Any]
    ) -> tuple[bool, float, tuple[str, ...]]:
        long = self.indicator(slo, now - w.long, now, cache)
        short = self.indicator(slo, now - w.short, now, cache)
        holds = long.burn(slo) > w.burn_rate and short.burn(slo) > w.burn_rate
        if not holds:
            return False, long.burn(slo), ()
        found = self._examples(slo, now - w.short, now) or short.examples or long.examples
        return True, long.burn(slo), tuple(found)

    def _examples(self, slo: Slo, start: int, end: int) -> list[str]:
        """The latest spans that broke the objective in [start, end] ns, while the spans are kept in
        full (the RED minutes keep one example a minute beyond that)."""
        kind = SPAN_KINDS[slo.span_kind]
        bad = "status_code = 2" if slo.sli == "availability" else "duration > {threshold:UInt64}"
        rows = self.conn.query(
            f"SELECT lower(hex(trace_id)) AS t FROM {self.db}.spans WHERE tenant = {{tenant:String}} "
            "AND service_name = {service:String} AND start_time >= fromUnixTimestamp64Nano({start:Int64}, 'UTC') "
            f"AND start_time <= fromUnixTimestamp64Nano({{end:Int64}}, 'UTC') AND {bad}"
            + (" AND name = {operation:String}" if slo.operation else "")
            + (" AND kind = {kind:UInt8}" if kind is not None else "")
            + f" ORDER BY start_time DESC LIMIT 1 BY trace_id LIMIT {EXAMPLES}",
            {"tenant": slo.tenant, "service": slo.service, "start": start, "end": end, "operation": slo.operation,
             "kind": kind or 0, "threshold": int((self.effective_threshold_ms(slo) or 0) * 10**6)},
        ).to_pylist()  # fmt: skip
        return list(dict.fromkeys(str(r["t"]) for r in rows))

    def _broken(self, owner: str, now: int) -> Sequence[BrokenService]:
        """The completeness report of the last `broken_window`, made at most once a minute."""
        assert self.broken is not None
        at, report = self._broken_at.get(owner, (None, ()))
        if at is None or now - at >= max(self.config.evaluate_every, 60 * S):
            report = self.broken(now - self.config.broken_window, now, owner)
            self._broken_at[owner] = (now, report)
        return report

    def _pipeline_conditions(self) -> dict[str, tuple[bool, str, float]]:
        """Since the last evaluation: spans refused, commits failed; and the commit lag now."""
        assert self.pipeline is not None
        now, before = self.pipeline(), self._pipeline_seen
        self._pipeline_seen = now
        refused, failed = now.refused - before.refused, now.failed - before.failed
        lag = self.config.max_commit_lag / S
        return {
            "pipeline:refused": (refused > 0, f"clew refused {refused} spans: its write queue or log was full", refused),
            "pipeline:failed": (failed > 0, f"{failed} spans failed to commit to the store", failed),
            "pipeline:commit-lag": (now.commit_lag_s > lag,
                f"acknowledged spans waited {now.commit_lag_s:.1f} s for their commit (more than {lag:g} s)",
                now.commit_lag_s),
        }  # fmt: skip

    def _silence(self, now: int) -> dict[tuple[str, str], int]:
        """How long each service seen recently has sent nothing (ns). Remembered here past the
        spans' own retention; forgotten a day after it fell silent."""
        since = now - max(2 * self.config.silent_after, self.config.broken_window, 3600 * S)
        rows = self.conn.query(
            "SELECT toString(tenant) AS t, toString(service_name) AS s, "
            f"toUnixTimestamp64Nano(max(received_at)) AS last FROM {self.db}.spans "
            "WHERE received_at > fromUnixTimestamp64Nano({since:Int64}, 'UTC') GROUP BY t, s",
            {"since": since},
        ).to_pylist()
        for r in rows:
            key = (str(r["t"]), str(r["s"]))
            self.last_seen[key] = max(self.last_seen.get(key, 0), int(r["last"]))
        for key in [k for k, last in self.last_seen.items() if now - last > HISTORY_NS]:
            del self.last_seen[key]
        return {key: max(0, now - last) for key, last in self.last_seen.items()}

    # --- API and telemetry -------------------------------------------------------------------------

    def alerts(self, owner: str, now: int) -> list[dict[str, Any]]:
        with self.lock:
            listed = [
                s for s in self.states.values()
                if s.tenant in (owner, PIPELINE_TENANT) and s.state != "inactive" and not s.expired(now)
            ]  # fmt: skip
        order = {"firing": 0, "pending": 1, "resolved": 2}
        return [s.to_json() for s in sorted(listed, key=lambda s: (order[s.state], -s.since, s.name))]

    def routes(self) -> Sequence[BaseRoute]:
        async def get_slos(request: Request) -> JSONResponse:
            owner, now = tenant(request), self.clock()
            slos = [s for s in await asyncio.to_thread(self.slos) if s.tenant == owner]
            cache: dict[Any, Any] = {}  # one RED query a range for all of them
            return JSONResponse({"slos": [await asyncio.to_thread(self.status, s, now, cache) for s in slos]})

        async def put_slos(request: Request) -> JSONResponse:
            caller = caller_of(request.scope)
            if not caller.may("admin"):
                raise Forbidden(f"this key has the {caller.role} role; setting SLOs needs admin")
            body = await request.body()
            if len(body) > MAX_BODY:
                raise BadRequest(f"the SLO list is at most {MAX_BODY} bytes")
            try:
                doc = json.loads(body)
            except (ValueError, RecursionError):
                raise BadRequest('the body is a JSON object {"slos": [...]}') from None
            if not isinstance(doc, dict) or not isinstance(doc.get("slos"), list):
                raise BadRequest('the body is a JSON object {"slos": [...]}')
            slos = await asyncio.to_thread(self.put_slos, doc["slos"], caller.tenant)
            return JSONResponse({"slos": [s.to_json() for s in slos]})

        async def list_alerts(request: Request) -> JSONResponse:
            return JSONResponse({"alerts": self.alerts(tenant(request), self.clock())})

        return [
            Route("/api/v1/slos", get_slos, methods=["GET"]),
            Route("/api/v1/slos", put_slos, methods=["PUT"]),
            Route("/api/v1/alerts", list_alerts),
        ]

    def metrics(self) -> Iterable[Sample]:
        with self.lock:
            active = [s for s in self.states.values() if s.state in ("pending", "firing")]
        for s in active:
            yield Sample(ALERTS, 1, {"alertname": s.name, "alertstate": s.state, **s.labels})
        for (fmt, outcome), n in sorted(self.notifier.counts.items()):
            yield Sample(NOTIFICATIONS, n, {"format": fmt, "outcome": outcome})
