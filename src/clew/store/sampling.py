"""The store's side of tail-based sampling (pipeline/sampling.py): per-trace features of newly received
spans, the decisions, and the two retention tiers.

Tiers: a span is deleted once it was received longer than `full_fidelity` ago unless a decision kept
its trace; every span goes once received longer than `retention` ago (a kept one: once its received
day ended `retention` ago). Rows are never deleted one by one (a lightweight delete rewrites the
trace projection of every part it touches): spans are partitioned by the hour they were received in
while at full fidelity, and a swept hour's kept rows move to a settled partition per received day
(store/clickhouse.py PARTITION_KEY).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from clew.pipeline.sampling import Decision, Policy, TraceState, flagged, span_filter
from clew.query.language import BoolOp, Comparison, Field, Value
from clew.store.base import Connection
from clew.store.dependencies import DependencyGraph
from clew.store.search import Params, condition_sql

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
# `tier_hour` of settled spans: the day they were received in, plus a second to tell it from an hour
SETTLED = "toStartOfDay(received_at) + 1"
DECISION_ROW = (
    "tenant String, trace_id String, kept Bool, policies Array(String), decided_at Int64, spans UInt32"
)
NS = "toUnixTimestamp64Nano"


def _attribute_condition(policy: Policy) -> BoolOp | Comparison:
    attribute = Field("any", policy.key)
    if policy.pattern is not None:
        return Comparison(attribute, "=~", Value("string", policy.pattern))
    conditions: list[BoolOp | Comparison] = []
    for v in policy.values:
        kind = "bool" if isinstance(v, bool) else "int" if isinstance(v, int) else "float"
        conditions.append(Comparison(attribute, "=", Value("string" if isinstance(v, str) else kind, v)))
    condition = conditions[0]
    for more in conditions[1:]:
        condition = BoolOp("||", condition, more)
    return condition


@dataclass(frozen=True, slots=True)
class Features:
    """`countIf` per flagged policy (pipeline/sampling.py `flagged`), with their parameters; rare
    operations are a parameter computed at each scan."""

    flags: list[str]
    params: dict[str, object]
    rare: dict[str, int]  # parameter name -> max_per_hour


def features(policies: tuple[Policy, ...]) -> Features:
    params = Params()
    flags: list[str] = []
    rare: dict[str, int] = {}
    for leaf in flagged(policies):
        if leaf.type == "latency":
            expr = f"service_name = {params.add(leaf.service, 'String')}"
            if leaf.operation is not None:
                expr += f" AND name = {params.add(leaf.operation, 'String')}"
            expr += f" AND duration >= {params.add(leaf.threshold, 'UInt64')}"
        elif leaf.type == "rare_operation":
            name = f"rare{len(flags)}"
            rare[name] = leaf.max_per_hour
            expr = f"has({{{name}:Array(UInt64)}}, cityHash64(service_name, name))"
        elif leaf.type == "attribute":
            expr = condition_sql(_attribute_condition(leaf), params)
        else:
            expr = condition_sql(span_filter(leaf.query, leaf.name).condition, params)
        flags.append(f"countIf({expr})")
    return Features(flags, params.values, rare)


@dataclass(frozen=True, slots=True)
class TraceDecision:
    kept: bool
    policies: list[str]
    decided_at: int
    spans: int


@dataclass
class RetentionCounters:
    runs: int = 0
    deleted_spans: int = 0  # unsampled spans past the full-fidelity window, and every span past retention


class SamplingStore:
    def __init__(
        self,
        conn: Connection,
        db: str,
        received_until: Callable[[], int],
        graph: DependencyGraph,
        policies: tuple[Policy, ...] = (),
        hourly: bool = True,
    ) -> None:
        self.conn, self.db, self.graph = conn, db, graph
        self.received_until = received_until
        self.features = features(policies)
        self.counters = RetentionCounters()
        conn.command(DECISIONS_DDL.format(db=db))
        # where a partition's kept rows are gathered before they move: the same structure
        conn.command(f"CREATE TABLE IF NOT EXISTS {db}.spans_sweep AS {db}.spans")
        self.hourly = hourly
        if hourly:
            self._recover()

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

    def rare_operations(self, now: int, max_per_hour: int) -> str:
        """Hashes of (service, operation) seen at most `max_per_hour` times in the last hour, as an
        array parameter; from the RED table, which counts every span before sampling."""
        table = self.conn.query(
            "SELECT cityHash64(service, operation) FROM ("
            f"SELECT service, operation, sum(calls) AS n FROM {self.db}.red_minutes "
            "WHERE minute >= toDateTime(intDiv({now:Int64}, 1000000000) - 3600, 'UTC') "
            "GROUP BY service, operation HAVING n <= {most:UInt64})",
            {"now": now, "most": max_per_hour},
        )
        return "[" + ",".join(str(h) for h in table.column(0).to_pylist()) + "]"

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

    def expire(self, now: int, full_fidelity: int | None, retention: int) -> int:
        """Apply both tiers at `now` (ns); `full_fidelity` None keeps every span until `retention`.
        Returns the number of spans deleted.

        A full-fidelity partition holds the spans received in one hour (of one start day): once that
        hour ended `full_fidelity` ago it is swept: its rows of kept traces move to a settled
        partition and it is dropped. So a span stays between one and two full-fidelity windows, and
        no row is ever deleted one by one. A full-fidelity partition goes once its hour ended
        `retention` ago, a settled one once its received day did."""
        if not self.hourly:
            return 0
        deleted = 0
        old = now - retention
        partitions = self._partitions()
        for partition, end, _hourly, rows in partitions:
            if end <= old:
                self.conn.command(f"ALTER TABLE {self.db}.spans DROP PARTITION ID '{partition}'")
                deleted += rows
        self.graph.drop_before(old)
        if full_fidelity is not None:
            cut = now - full_fidelity
            for partition, end, hourly, rows in partitions:
                if hourly and old < end <= cut:
                    deleted += rows - self._sweep(partition, now)
            self.conn.command(
                f"DELETE FROM {self.db}.sampling_decisions WHERE decided_at < fromUnixTimestamp64Nano({{old:Int64}}, 'UTC') "
                "OR (NOT kept AND decided_at < fromUnixTimestamp64Nano({cut:Int64}, 'UTC'))",
                {"old": old, "cut": cut - full_fidelity},  # an unkept decision lives while its spans may
            )
        self.counters.runs += 1
        self.counters.deleted_spans += deleted
        return deleted

    def _partitions(self) -> list[tuple[str, int, bool, int]]:
        """(id, end of its hour or of its day in ns, whether it is a full-fidelity hour, rows) of every
        partition of the spans table."""
        table = self.conn.query(
            "SELECT partition_id, sum(rows) FROM system.parts "
            "WHERE database = {db:String} AND table = 'spans' AND active GROUP BY partition_id",
            {"db": self.db},
        )
        out = []
        for partition, rows in zip(*(c.to_pylist() for c in table.columns), strict=True):
            day, _, hour = str(partition).partition("-")  # 20261124-1795564800: day, then hour start (s)
            if not (len(day) == 8 and day.isdigit() and hour.isdigit()):  # never text to splice otherwise
                continue
            if int(hour) % 3600 == 0:
                out.append((str(partition), (int(hour) + 3600) * 10**9, True, int(rows)))
            else:  # settled: the received day's start + 1 s
                out.append((str(partition), (int(hour) - 1 + 86400) * 10**9, False, int(rows)))
        return out

    def _sweep(self, partition: str, now: int) -> int:
        """Move the partition's rows of kept traces to their settled partition (same start day, by
        received day) and drop it; returns how many rows it kept.

        The rows wait in `spans_sweep` between the drop and the move (one atomic step), so a crash
        in between loses nothing: `_recover` finishes the move at the next start."""
        where = f"_partition_id = '{partition}'"
        starts = self.conn.query(
            f"SELECT toString(tenant), min({NS}(start_time)), max({NS}(start_time)) FROM {self.db}.spans "
            f"WHERE {where} GROUP BY tenant"
        )
        for tenant, first, last in zip(*(c.to_pylist() for c in starts.columns), strict=True):
            self.graph.keep(first, last, now, tenant)  # calls between services outlive sampling
        self.conn.command(f"TRUNCATE TABLE {self.db}.spans_sweep")
        self.conn.command(
            f"INSERT INTO {self.db}.spans_sweep SELECT * REPLACE ({SETTLED} AS tier_hour) "
            f"FROM {self.db}.spans WHERE {where} "
            f"AND (tenant, trace_id) IN (SELECT tenant, trace_id FROM {self.db}.sampling_decisions WHERE kept)"
        )
        kept = int(self.conn.query(f"SELECT count() FROM {self.db}.spans_sweep").column(0)[0].as_py())
        self.conn.command(f"ALTER TABLE {self.db}.spans DROP PARTITION ID '{partition}'")
        self._move_swept()
        return kept

    def _move_swept(self) -> None:
        settled = self.conn.query(
            "SELECT DISTINCT partition_id FROM system.parts "
            "WHERE database = {db:String} AND table = 'spans_sweep' AND active",
            {"db": self.db},
        )
        for partition in settled.column(0).to_pylist():
            if str(partition).replace("-", "").isdigit():
                self.conn.command(
                    f"ALTER TABLE {self.db}.spans_sweep MOVE PARTITION ID '{partition}' TO TABLE {self.db}.spans"
                )

    def _recover(self) -> None:
        """Rows left in `spans_sweep` by a sweep that stopped: if their partition was already dropped,
        they are the only copy and move on; if not, the sweep starts over next time."""
        probe = self.conn.query(f"SELECT hex(trace_id), hex(span_id) FROM {self.db}.spans_sweep LIMIT 1")
        if probe.num_rows == 0:
            return
        trace_id, span_id = probe.column(0)[0].as_py(), probe.column(1)[0].as_py()
        still = self.conn.query(
            f"SELECT count() FROM {self.db}.spans "
            "WHERE trace_id = toFixedString(unhex({t:String}), 16) AND hex(span_id) = {s:String}",
            {"t": trace_id, "s": span_id},
        )
        if int(still.column(0)[0].as_py()):
            self.conn.command(f"TRUNCATE TABLE {self.db}.spans_sweep")
        else:
            self._move_swept()
