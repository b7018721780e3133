"""Sampling's SQL: per-trace features of newly received spans, the decisions table, and which traces
are kept (for the retention)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from clew.components.sampling.policies import SamplingPolicy, TraceState, flagged
from clew.components.sampling.sampler import Decision
from clew.store.connection import Connection
from clew.store.migrations import steps
from clew.store.search import Params

DECISIONS_DDL = """
CREATE TABLE IF NOT EXISTS {db}.sampling_decisions (
    tenant LowCardinality(String),
    trace_id FixedString(16),
    kept Bool,
    policies Array(LowCardinality(String)),
    decided_at DateTime64(9, 'UTC'),
    spans UInt32
) ENGINE = MergeTree
ORDER BY (tenant, trace_id)
"""
DECISION_ROW = (
    "tenant String, trace_id String, kept Bool, policies Array(String), decided_at Int64, spans UInt32"
)
NS = "toUnixTimestamp64Nano"


MIGRATIONS = steps("sampling", ("sampling decisions", [DECISIONS_DDL]))


@dataclass(frozen=True, slots=True)
class Features:
    """`countIf` per flagged policy (policies.py `flagged`), with their parameters; rare
    operations are a parameter computed at each scan."""

    flags: list[str]
    params: dict[str, object]
    rare: dict[str, int]  # parameter name -> max_per_hour


def features(policies: tuple[SamplingPolicy, ...]) -> Features:
    params = Params()
    flags: list[str] = []
    rare: dict[str, int] = {}
    for leaf in flagged(policies):
        slot = f"rare{len(flags)}"
        expr = leaf.flag_sql(params, slot)
        most = leaf.scan_param()
        if most is not None:  # a parameter computed at each scan: the rare operations of the last hour
            rare[slot] = most
        flags.append(f"countIf({expr})")
    return Features(flags, params.values, rare)


@dataclass(frozen=True, slots=True)
class TraceDecision:
    kept: bool
    policies: list[str]
    decided_at: int
    spans: int


class SamplingQueries:
    """The store as the sampler sees it (sampler.ActivitySource), and the decisions as the API and
    the retention read them."""

    def __init__(
        self,
        conn: Connection,
        db: str,
        received_until: Callable[[], int],
        policies: tuple[SamplingPolicy, ...],
        wrote_after: Callable[[int], bool] = lambda t: True,
    ) -> None:
        self.conn, self.db = conn, db
        self.received_until, self.wrote_after = received_until, wrote_after
        self.features = features(policies)

    def trace_activity(
        self, since: int, until: int, now: int, only_undecided: bool
    ) -> list[tuple[str, bytes, TraceState]]:
        """Per trace, sums over its spans received in (since, until]."""
        features = self.features
        rare = {name: self.rare_operations(now, most) for name, most in features.rare.items()}
        flags = "".join(f", {f}" for f in features.flags)
        undecided = (
            f" AND (tenant, trace_id) NOT IN (SELECT tenant, trace_id FROM {self.db}.sampling_decisions)"
            if only_undecided
            else ""
        )
        table = self.conn.query(
            f"SELECT toString(tenant), trace_id, min({NS}(received_at)), max({NS}(received_at)), "
            "countIf(parent_span_id = ''), countIf(status_code = 2), "
            f"min({NS}(start_time)), max({NS}(start_time) + duration), "
            "if(countIf(parent_span_id = '') > 0, anyIf(service_name, parent_span_id = ''), "
            "argMin(service_name, start_time)), count()"
            f"{flags} FROM {self.db}.spans "
            "WHERE received_at > fromUnixTimestamp64Nano({since:Int64}, 'UTC') "
            "AND received_at <= fromUnixTimestamp64Nano({until:Int64}, 'UTC')"
            f"{undecided} GROUP BY tenant, trace_id",
            {**features.params, **rare, "since": since, "until": until},
        )
        columns = [c.to_pylist() for c in table.columns]
        out = []
        for row in zip(*columns, strict=True):
            tenant, trace_id, first, last, roots, errors, start, end, root_service, spans, *counts = row
            state = TraceState(first, last, roots, errors, start, end, str(root_service), spans, counts)
            out.append((tenant, bytes(trace_id), state))
        return out

    def rare_operations(self, now: int, max_per_hour: int) -> list[int]:
        """Hashes of (service, operation) seen at most `max_per_hour` times in the last hour, as an
        array parameter; from the RED table, which counts every span before sampling."""
        table = self.conn.query(
            "SELECT cityHash64(service, operation) FROM ("
            f"SELECT service, operation, sum(calls) AS n FROM {self.db}.red_minutes "
            "WHERE minute >= toDateTime(intDiv({now:Int64}, 1000000000) - 3600, 'UTC') "
            "GROUP BY service, operation HAVING n <= {most:UInt64})",
            {"now": now, "most": max_per_hour},
        )
        return [int(h) for h in table.column(0).to_pylist()]

    def write_decisions(self, decisions: list[Decision]) -> None:
        rows = "".join(
            json.dumps(
                {
                    "tenant": d.tenant,
                    "trace_id": d.trace_id.hex(),
                    "kept": d.kept,
                    "policies": list(d.policies),
                    "decided_at": d.decided_at,
                    "spans": d.spans,
                }
            )
            + "\n"
            for d in decisions
        )
        self.conn.insert_formatted(
            f"INSERT INTO {self.db}.sampling_decisions SELECT tenant, toFixedString(unhex(trace_id), 16), "
            "kept, policies, fromUnixTimestamp64Nano(decided_at, 'UTC'), spans FROM {source}",
            "JSONEachRow",
            DECISION_ROW,
            rows.encode(),
            {},
            {},
        )

    def decision(self, trace_id: bytes, tenant: str) -> TraceDecision | None:
        """The trace's decision; when late spans made the sampler decide twice, a keep wins."""
        table = self.conn.query(
            f"SELECT kept, policies, {NS}(decided_at), spans FROM {self.db}.sampling_decisions "
            "WHERE tenant = {tenant:String} AND trace_id = toFixedString(unhex({id:String}), 16) "
            "ORDER BY kept DESC, decided_at LIMIT 1",
            {"tenant": tenant, "id": trace_id.hex()},
        )
        rows = table.to_pylist()
        if not rows:
            return None
        kept, policies, decided_at, spans = rows[0].values()
        return TraceDecision(bool(kept), [str(p) for p in policies], int(decided_at), int(spans))

    def kept_sql(self) -> str:
        """`(tenant, trace_id) IN` this: the traces a policy kept."""
        return f"SELECT tenant, trace_id FROM {self.db}.sampling_decisions WHERE kept"

    def forget(self, before: int, unkept_before: int) -> None:
        """Decisions older than the long retention, and unkept ones whose spans are gone."""
        self.conn.command(
            f"DELETE FROM {self.db}.sampling_decisions WHERE decided_at < fromUnixTimestamp64Nano({{old:Int64}}, 'UTC') "
            "OR (NOT kept AND decided_at < fromUnixTimestamp64Nano({cut:Int64}, 'UTC'))",
            {"old": before, "cut": unkept_before},
        )
