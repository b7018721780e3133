"""Tail-based sampling and the retention tiers, with a controlled clock.

The server parts run in-process on real loopback sockets (OTLP/HTTP receiver, the http port's APIs) over
the real embedded store; spans come from the OpenTelemetry SDK; results are read over HTTP. Only the
clock is ours: the store stamps spans with it, the sampler and the retention decide by it.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import uvicorn
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from clew.assembly import open_embedded
from clew.components.retention import Retention
from clew.components.sampling import Sampler, Sampling, SamplingConfig, probabilistic
from clew.components.sampling import policy as Policy
from clew.config import ConfigError, Settings
from clew.core.limits import LimitsConfig, TenantLimits
from clew.ingest.writer import Writer
from clew.receivers.otlp_http import otlp_http_app
from clew.server import assembly_http_app, bind
from clew.store.schema import SETTLED

S = 10**9
MS = 10**6


class Clock:
    def __init__(self) -> None:
        # 01:00 UTC today: the tests move it on by hours, and from late in the day that crossed
        # midnight, which moves the settled partition (by day) of the spans received after
        now = time.time_ns()
        self.now = now - now % (86400 * S) + 3600 * S

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * S)


class Harness:
    """Receiver, APIs, writer, store and sampler on one clock; the sampler and retention run when told."""

    def __init__(self, tmp_path, config: SamplingConfig, **configs: object) -> None:
        self.clock = Clock()
        self.config = config
        self.store = open_embedded(tmp_path / "data", sampling=config, clock=self.clock, **configs)
        self.sampling = self.store.component(Sampling)
        self.retention = self.store.component(Retention)
        self.sampler = self.sampling.sampler
        self.writer = Writer(self.store.writer)
        self.writer.start()
        self._servers = [
            uvicorn.Server(uvicorn.Config(otlp_http_app(self.writer.write, 1 << 22), log_level="warning")),
            uvicorn.Server(uvicorn.Config(assembly_http_app(self.store, self.writer), log_level="warning")),
        ]
        self._sockets = [bind("127.0.0.1", 0), bind("127.0.0.1", 0)]
        self.otlp_url = f"http://127.0.0.1:{self._sockets[0].getsockname()[1]}/v1/traces"
        self.api = httpx.Client(base_url=f"http://127.0.0.1:{self._sockets[1].getsockname()[1]}", timeout=30)
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not all(s.started for s in self._servers) and time.monotonic() < deadline:
            time.sleep(0.01)
        self.providers: dict[str, TracerProvider] = {}

    async def _serve(self) -> None:
        await asyncio.gather(
            *(s.serve(sockets=[k]) for s, k in zip(self._servers, self._sockets, strict=True))
        )

    def tracer(self, service: str) -> trace.Tracer:
        if service not in self.providers:
            provider = TracerProvider(resource=Resource.create({"service.name": service}))
            provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=self.otlp_url)))
            self.providers[service] = provider
        return self.providers[service].get_tracer("test")

    def span(
        self,
        service: str,
        name: str,
        ms: float,
        parent: trace.Span | None = None,
        error: bool = False,
        end: bool = True,
        **attributes: str,
    ) -> trace.Span:
        """A span of `ms` milliseconds starting a minute before the clock (exported when it ends)."""
        begin = (parent.start_time + MS) if parent is not None else self.clock.now - 60 * S
        context = trace.set_span_in_context(parent) if parent is not None else None
        span = self.tracer(service).start_span(name, context=context, start_time=begin, attributes=attributes)
        span._clew_end = begin + int(ms * MS)  # type: ignore[attr-defined]
        if error:
            span.set_status(Status(StatusCode.ERROR, "failed"))
        if end:
            span.end(end_time=span._clew_end)  # type: ignore[attr-defined]
        return span

    def trace_id(self, span: trace.Span) -> str:
        return f"{span.get_span_context().trace_id:032x}"

    def spans_stored(self, trace_id: str) -> int:
        response = self.api.get(f"/api/traces/{trace_id}")
        if response.status_code == 404:
            return 0
        response.raise_for_status()
        return len(response.json()["data"][0]["spans"])

    def decision(self, trace_id: str) -> dict:
        response = self.api.get(f"/api/v1/traces/{trace_id}/sampling")
        response.raise_for_status()
        return response.json()

    def dependencies(self) -> dict[tuple[str, str], int]:
        params = {"endTs": str(self.clock.now // 10**6), "lookback": str(3 * 3600 * 1000)}
        response = self.api.get("/api/dependencies", params=params)
        response.raise_for_status()
        return {(d["parent"], d["child"]): d["callCount"] for d in response.json()["data"]}

    def partitions(self) -> dict[str, int]:
        table = self.store.conn.query(
            "SELECT partition_id, sum(rows) FROM system.parts WHERE database = {db:String} AND table = 'spans' "
            "AND active GROUP BY partition_id",
            {"db": self.store.conn.database},
        )
        return {str(p): int(n) for p, n in zip(*(c.to_pylist() for c in table.columns), strict=True)}

    @staticmethod
    def settled(received: int) -> str:
        """The settled partition of spans that started and were received on the day of `received`."""
        day = received // (86400 * S) * 86400
        return f"{datetime.fromtimestamp(day, UTC):%Y%m%d}-{day + 1}"

    @staticmethod
    def day_end(ns: int) -> int:
        return (ns // (86400 * S) + 1) * 86400 * S

    @staticmethod
    def hour_end(ns: int) -> int:
        return (ns // (3600 * S) + 1) * 3600 * S

    def past_full_fidelity(self) -> None:
        """Move the clock to where every span received so far is past the full-fidelity window."""
        self.clock.now = self.hour_end(self.clock.now) + self.config.full_fidelity

    def expire(self) -> int:
        return self.retention.expire(self.clock.now)

    def close(self) -> None:
        for provider in self.providers.values():
            provider.shutdown()
        for server in self._servers:
            server.should_exit = True
        self._thread.join(timeout=30)
        self.api.close()
        self.writer.close()
        self.store.close()


@pytest.fixture
def make(tmp_path, storage) -> Iterator:
    """Harnesses on each store connection (sampling and retention run in the store's SQL)."""
    made: list[Harness] = []

    def factory(limits: LimitsConfig | None = None, **config: object) -> Harness:
        extra = {"limits": limits} if limits is not None else {}
        directory = tmp_path / str(len(made))
        extra["storage"] = storage(directory)
        harness = Harness(directory, replace(SamplingConfig(), **config), **extra)
        made.append(harness)
        return harness

    yield factory
    for harness in made:
        harness.close()


POLICIES = (
    Policy("errors", "errors"),
    Policy("slow", "latency", threshold=1 * S),
    Policy("vip", "attribute", key="customer.tier", values=("enterprise",)),
    Policy(
        "slow-checkout-posts",
        "and",
        policies=(
            Policy("checkout-300ms", "latency", threshold=300 * MS, service="checkout"),
            Policy("posts", "span_filter", query='{ span.http.method = "POST" }'),
        ),
    ),
)


def test_policies_decide_complete_traces_and_only_kept_ones_outlive_the_full_fidelity_window(make):
    h = make(policies=POLICIES)
    root = h.span("frontend", "GET /", 50, end=False)
    h.span("payments", "charge", 20, parent=root, error=True)
    root.end(end_time=root._clew_end)
    failed = h.trace_id(root)
    slow = h.trace_id(h.span("frontend", "GET /report", 1500))
    vip = h.trace_id(h.span("frontend", "GET /account", 30, **{"customer.tier": "enterprise"}))
    root = h.span("frontend", "POST /buy", 600, end=False)
    h.span("checkout", "place order", 400, parent=root, **{"http.method": "POST"})
    root.end(end_time=root._clew_end)
    slow_post = h.trace_id(root)
    root = h.span("frontend", "GET /cart", 600, end=False)
    h.span("checkout", "view cart", 400, parent=root, **{"http.method": "GET"})  # slow, but not a POST
    root.end(end_time=root._clew_end)
    slow_get = h.trace_id(root)
    plain = [h.trace_id(h.span("frontend", "GET /", 20 + i)) for i in range(3)]

    h.clock.advance(1)
    assert h.sampler.tick() == []  # complete only after decision_wait without new spans
    assert len(h.sampler.pending) == 8
    assert h.decision(failed) == {"traceID": failed, "decided": False}

    h.clock.advance(10)
    decisions = {d.trace_id.hex(): d for d in h.sampler.tick()}
    assert set(decisions) == {failed, slow, vip, slow_post, slow_get, *plain}
    expected = {failed: ["errors"], slow: ["slow"], vip: ["vip"], slow_post: ["slow-checkout-posts"]}
    for trace_id in decisions:
        answer = h.decision(trace_id)
        assert answer["decided"] is True
        assert answer["kept"] is (trace_id in expected)
        assert answer["policies"] == expected.get(trace_id, [])
    assert h.decision(failed)["spans"] == 2

    # the full-fidelity window: every span stays queryable for an hour after it arrived, and goes
    # once the hour it arrived in ended an hour ago
    h.clock.advance(3600 - 11)
    assert h.expire() == 0
    assert all(h.spans_stored(t) for t in plain)
    h.clock.now = h.hour_end(h.clock.now - 3600 * S) + 3600 * S - S
    assert h.expire() == 0
    h.clock.advance(1)
    assert h.expire() == len(plain) + 2  # the three plain traces and the slow GET's two spans
    assert [h.spans_stored(t) for t in plain] == [0, 0, 0]
    assert h.spans_stored(slow_get) == 0
    assert h.spans_stored(failed) == 2 and h.spans_stored(slow_post) == 2
    assert h.spans_stored(slow) == 1 and h.spans_stored(vip) == 1
    # the kept rows moved to their start day's settled partition; the swept hour is gone
    assert h.partitions() == {h.settled(h.clock.now - 2 * 3600 * S): 6}
    # calls between services still count the dropped trace's call: the retention computed the
    # dependency buckets of the spans it deleted first (nothing asked for them before)
    assert h.dependencies() == {("frontend", "payments"): 1, ("frontend", "checkout"): 2}

    # metrics were computed from every span, before sampling
    families = {f.name: f for f in text_string_to_metric_families(h.api.get("/metrics").text)}
    frontend_calls = sum(
        s.value
        for s in families["clew_spanmetrics_calls"].samples
        if s.name == "clew_spanmetrics_calls_total" and s.labels["service"] == "frontend"
    )
    assert frontend_calls == 8
    kept_by = {
        s.labels["policy"]: s.value
        for s in families["clew_sampling_kept_by_policy"].samples
        if s.name.endswith("_total")
    }
    assert kept_by == {"errors": 1, "slow": 1, "vip": 1, "slow-checkout-posts": 1}
    assert families["clew_sampling_traces_dropped"].samples[0].value == 4
    assert families["clew_retention_deleted_spans"].samples[0].value == 5

    # the long retention: sampled traces go too, with their settled day once it ended seven days ago
    h.clock.now = h.day_end(h.clock.now - 2 * 3600 * S) + 7 * 86400 * S - S
    assert h.expire() == 0 and h.spans_stored(failed) == 2
    h.clock.advance(1)
    assert h.expire() == 6
    assert h.spans_stored(failed) == 0
    assert h.decision(failed) == {"traceID": failed, "decided": False}


def test_a_trace_waits_for_its_last_span_and_late_spans_follow_the_decision(make):
    h = make(policies=(Policy("errors", "errors"),), decision_wait=10 * S, max_age=120 * S)
    root = h.span("web", "GET /", 100, end=False)
    child = h.span("api", "load", 10, parent=root)
    h.clock.advance(8)
    assert h.sampler.tick() == []  # no root yet: the trace is not complete however quiet it is
    root.end(end_time=root._clew_end)
    h.clock.advance(8)
    assert h.sampler.tick() == []  # the root arrived 8 s ago
    h.span("api", "retry", 10, parent=root, error=True)  # still arriving: the wait starts again
    h.clock.advance(8)
    assert h.sampler.tick() == []
    h.clock.advance(3)
    [decision] = h.sampler.tick()
    assert decision.kept and decision.policies == ("errors",) and decision.spans == 3

    # a trace whose root never comes is decided at max_age
    orphan = h.span("api", "background", 10, parent=h.span("web", "never sent", 10, end=False))
    h.clock.advance(100)
    assert h.sampler.tick() == []
    h.clock.advance(21)
    [late_decision] = h.sampler.tick()
    assert late_decision.trace_id.hex() == h.trace_id(orphan) and not late_decision.kept
    assert h.sampler.counters.decided_early == 1

    # spans arriving after the decision: the kept trace keeps them, the dropped one loses them
    h.span("api", "late", 5, parent=root)
    h.span("api", "late", 5, parent=child)
    h.span("api", "late orphan", 5, parent=orphan)
    h.clock.advance(1)
    assert h.sampler.tick() == []
    assert h.sampler.counters.late_spans == 3
    h.past_full_fidelity()
    h.expire()
    assert h.spans_stored(h.trace_id(root)) == 5
    assert h.spans_stored(h.trace_id(orphan)) == 0


def test_rare_operations_rate_limits_and_probabilistic(make):
    h = make(
        policies=(
            Policy("rare", "rare_operation", max_per_hour=2),
            Policy("two-per-second", "rate_limiting", traces_per_second=2),
            Policy("half", "probabilistic", percentage=50),
        )
    )
    common = [h.trace_id(h.span("shop", "GET /", 5)) for _ in range(8)]
    rare = h.trace_id(h.span("shop", "GET /admin", 5))
    h.clock.advance(11)
    decisions = {d.trace_id.hex(): d for d in h.sampler.tick()}
    assert "rare" in decisions[rare].policies
    assert not any("rare" in decisions[t].policies for t in common)
    limited = [t for t in decisions if "two-per-second" in decisions[t].policies]
    assert len(limited) == 2  # one bucket of two for the root service, in one instant
    for t in decisions:
        assert ("half" in decisions[t].policies) is probabilistic(bytes.fromhex(t), 50)
    # the bucket refills with the clock
    more = [h.trace_id(h.span("shop", "GET /", 5)) for _ in range(3)]
    h.clock.advance(11)
    refilled = [d for d in h.sampler.tick() if "two-per-second" in d.policies]
    assert len(refilled) == 2 and {d.trace_id.hex() for d in refilled} <= set(more)


def test_a_restarted_sampler_decides_pending_traces_once(make):
    h = make(policies=(Policy("errors", "errors"),))
    decided = h.trace_id(h.span("web", "GET /a", 5, error=True))
    h.clock.advance(11)
    assert len(h.sampler.tick()) == 1
    pending = h.trace_id(h.span("web", "GET /b", 5, error=True))
    h.clock.advance(1)
    h.sampler.tick()
    restarted = Sampler(h.sampling.queries, h.config, h.clock)  # in-memory state gone, as after a restart
    h.clock.advance(11)
    [decision] = restarted.tick()
    assert decision.trace_id.hex() == pending and decision.kept
    assert h.decision(decided)["kept"] is True


def test_sampling_settings_are_checked():
    def load(text: str) -> Settings:
        path = Path(tempfile.mkdtemp()) / "clew.toml"
        path.write_text(text)
        return Settings.load(path)

    config = load(
        '[sampling]\ndecision_wait = "5s"\nfull_fidelity = "2h"\n'
        '[[sampling.policy]]\nname = "errors"\ntype = "errors"\n'
        '[[sampling.policy]]\nname = "both"\ntype = "and"\n'
        '[[sampling.policy.policy]]\ntype = "latency"\nthreshold = "250ms"\nservice = "api"\n'
        '[[sampling.policy.policy]]\ntype = "attribute"\nkey = "http.status_code"\nvalues = [500, 503]\n'
    ).sampling
    assert config.decision_wait == 5 * S and config.full_fidelity == 7200 * S
    assert [p.name for p in config.policies] == ["errors", "both"]
    assert config.policies[1].policies[1].values == (500, 503)
    bad = {
        '[sampling]\nwait = "5s"\n': "unknown setting 'wait'",
        '[sampling]\nmax_age = "2h"\n': "max_age must be shorter than full_fidelity",
        '[sampling]\ndecision_wait = "soon"\n': "cannot parse duration 'soon'",
        '[[sampling.policy]]\ntype = "sometimes"\n': "type must be one of",
        '[[sampling.policy]]\ntype = "latency"\n': "needs threshold",
        '[[sampling.policy]]\ntype = "span_filter"\nquery = "{ span.x = }"\n': "query '{ span.x = }'",
        '[[sampling.policy]]\ntype = "probabilistic"\npercentage = 150\n': "at most 100",
        '[[sampling.policy]]\ntype = "errors"\n[[sampling.policy]]\ntype = "errors"\n': "two policies are named",
    }
    for text, message in bad.items():
        with pytest.raises(ConfigError, match=re.escape(message)):
            load(text)


def test_a_sweep_cut_off_between_its_steps_loses_and_doubles_nothing(make):
    """The kept rows of a swept hour wait in `spans_sweep` between the drop of the hour and their
    move to the settled partition; a restart finishes the move, or starts over if nothing was dropped."""
    h = make(policies=(Policy("errors", "errors"),))
    kept = h.trace_id(h.span("web", "GET /", 10, error=True))
    dropped = h.trace_id(h.span("web", "GET /", 10))
    h.clock.advance(11)
    assert len(h.sampler.tick()) == 2
    h.past_full_fidelity()
    sampling = h.retention

    def cut_off() -> None:
        raise RuntimeError("power cut")

    sampling._move_swept = cut_off  # the hour is dropped, its kept rows not moved yet
    with pytest.raises(RuntimeError):
        h.expire()
    assert h.spans_stored(kept) == 0  # only in spans_sweep now
    del sampling._move_swept  # power is back
    h.retention.start()  # a restart
    assert h.spans_stored(kept) == 1 and h.spans_stored(dropped) == 0
    assert sum(h.partitions().values()) == 1

    # cut off before the drop: the copy is thrown away and the hour is swept again, once
    late = h.trace_id(h.span("web", "GET /late", 10, error=True))
    h.clock.advance(11)
    h.sampler.tick()
    h.past_full_fidelity()
    db = h.store.conn.database
    h.store.conn.command(
        f"INSERT INTO {db}.spans_sweep SELECT * REPLACE ({SETTLED} AS tier_hour) FROM {db}.spans "
        "WHERE toMinute(tier_hour) = 0 AND toSecond(tier_hour) = 0"
    )
    h.retention.start()  # a restart
    assert h.expire() == 0
    assert h.spans_stored(late) == 1 and h.spans_stored(kept) == 1
    assert h.partitions() == {next(iter(h.partitions())): 2}


def test_without_tail_sampling_spans_settle_at_once_and_stay_until_the_long_retention(make):
    h = make(enabled=False)
    trace_id = h.trace_id(h.span("web", "GET /", 10))
    # nothing will be swept, so nothing waits in a partition by the hour
    assert h.partitions() == {h.settled(h.clock.now): 1}
    # an old trace imported now lives as long as one that just happened: retention counts from arrival
    month_ago = h.clock.now - 30 * 86400 * S
    old = h.tracer("web").start_span("GET /archive", start_time=month_ago)
    old.end(end_time=month_ago + 10 * MS)
    assert h.retention.expire(h.clock.now) == 0
    assert h.spans_stored(h.trace_id(old)) == 1
    h.past_full_fidelity()
    h.clock.advance(86400)
    assert h.retention.expire(h.clock.now) == 0
    assert h.spans_stored(trace_id) == 1 and h.spans_stored(h.trace_id(old)) == 1
    h.clock.advance(7 * 86400)
    assert h.retention.expire(h.clock.now) == 2


def test_a_kept_trace_keeps_its_first_spans_up_to_its_tenants_limit(make):
    """`max_spans_per_trace`: past the full-fidelity window a kept trace keeps its first spans by start
    time (the root among them), the rest are dropped with the hour and counted."""
    h = make(policies=(Policy("errors", "errors"),), limits=LimitsConfig(TenantLimits(max_spans_per_trace=4)))
    root = h.span("web", "GET /", 50, error=True, end=False)
    for i in range(9):
        h.span("db", f"query {i}", 1, parent=root)
    root.end(end_time=root._clew_end)  # type: ignore[attr-defined]
    small = h.span("web", "GET /small", 10, error=True)
    big, little = h.trace_id(root), h.trace_id(small)
    assert h.spans_stored(big) == 10  # the full-fidelity tier holds everything
    h.clock.advance(11)
    h.sampler.tick()
    h.past_full_fidelity()
    h.expire()
    kept = h.api.get(f"/api/traces/{big}").json()["data"][0]["spans"]
    assert len(kept) == 4 and "GET /" in {s["operationName"] for s in kept}
    assert h.spans_stored(little) == 1
    assert h.retention.capped_spans == 6
    assert "clew_retention_capped_spans_total 6" in h.api.get("/metrics").text


def test_ticks_read_nothing_while_nothing_was_written(make):
    """An idle server's sampler and processor counters skip their queries (what an idle server's
    CPU went on); the first span written is read at the next tick."""
    h = make(policies=(Policy("errors", "errors"),))
    h.sampler.tick()  # the first tick looks back over the window, whatever was written
    conn = h.store.conn
    statements: list[str] = []
    real_query = conn.query

    def counted(sql: str, params: dict | None = None):
        statements.append(sql)
        return real_query(sql, params)

    conn.query = counted  # type: ignore[method-assign]
    try:
        for _ in range(3):
            h.clock.advance(1)
            h.sampler.tick()
            for component in h.store.components:
                if component.name in ("redaction", "enrichment"):
                    component.tick(h.clock.now)
        assert statements == []
        trace_id = h.trace_id(h.span("web", "GET /", 10, error=True))
        h.clock.advance(1)
        h.sampler.tick()
        assert statements and any(
            (k[1].hex() if isinstance(k[1], bytes) else k[1]) == trace_id for k in h.sampler.pending
        )
    finally:
        conn.query = real_query  # type: ignore[method-assign]
