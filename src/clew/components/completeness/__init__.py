"""Incomplete traces: what broke the thread between services, found in the stored spans.

- orphan spans: a parent id that no stored span of the trace has (within an hour of the window);
- traces with more than one root;
- propagation gaps: a root server span that starts and ends inside a client span of another
  service that has no child, which is what a call looks like when the trace context did not travel;
- clock skew: a child starting before its parent or ending after it.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starlette.routing import BaseRoute, Route

from clew.components.base import BaseComponent, Context
from clew.components.http import over_time_range
from clew.core.model import DEFAULT_TENANT
from clew.store.sql import AROUND, PARENT_KEY, SPAN_KEY, WINDOW, childless_clients

HOUR = 3600 * 10**9
EXAMPLES = 5
# How far a child may lie outside its parent's time before it is called clock skew: 25 ms for the
# network and scheduling (a server span routinely ends a few ms after its client's, on one clock) plus
# a tenth of the parent's duration. The trace view applies the same rule (web/static/js/model.js).
SKEW_SLACK_NS = 25 * 10**6
MAX_CANDIDATES = 50_000
# A span is called an orphan only once it ended this long ago: its parent (which usually ends after
# it, and may be exported later) has had the time to arrive; a trace still in flight is not broken.
SETTLE_NS = 60 * 10**9


@dataclass(frozen=True, slots=True)
class ServiceHealth:
    service: str
    traces: int
    broken: int  # traces of the service broken by an orphan span or a propagation gap into it

    @property
    def broken_share(self) -> float:
        return self.broken / self.traces if self.traces else 0.0


@dataclass(frozen=True, slots=True)
class BrokenService:
    service: str
    traces: int
    broken: int
    examples: list[str]


@dataclass(frozen=True, slots=True)
class Orphans:
    service: str
    spans: int
    traces: int
    examples: list[str]


@dataclass(frozen=True, slots=True)
class Gap:
    caller: str
    callee: str
    count: int
    examples: list[tuple[str, str]]  # (caller's trace, callee's trace)


@dataclass(frozen=True, slots=True)
class Skew:
    parent: str
    child: str
    spans: int
    examples: list[str]


@dataclass(frozen=True, slots=True)
class Report:
    start: int
    end: int
    services: list[ServiceHealth]
    orphans: list[Orphans]
    multiple_roots: int
    multiple_root_examples: list[str]
    gaps: list[Gap]
    skew: list[Skew]


class Completeness(BaseComponent):
    """`/api/v1/completeness`: what broke the thread between services, at query time."""

    name = "completeness"

    def __init__(self, ctx: Context) -> None:
        self.conn, self.db, self.clock = ctx.conn, ctx.db, ctx.clock

    def routes(self) -> Sequence[BaseRoute]:
        return [
            Route("/api/v1/completeness", over_time_range(lambda s, e, t: report_json(self.report(s, e, t))))
        ]

    def report(self, start: int, end: int, tenant: str = DEFAULT_TENANT) -> Report:
        params: dict[str, object] = {"tenant": tenant, "start": start, "end": end, "n": EXAMPLES}
        q = self.conn.query
        traces = q(
            f"SELECT toString(service_name) AS s, uniqExact(trace_id) AS t FROM {self.db}.spans "
            f"WHERE {WINDOW} GROUP BY s ORDER BY s",
            params,
        ).to_pylist()
        orphans = q(
            "SELECT toString(c.service_name) AS service, count() AS spans, uniqExact(c.trace_id) AS traces, "
            "groupUniqArray({n:UInt32})(lower(hex(c.trace_id))) AS examples FROM "
            f"(SELECT trace_id, service_name, {PARENT_KEY} AS k FROM {self.db}.spans "
            f"WHERE {WINDOW} AND parent_span_id != '' "
            "AND toUnixTimestamp64Nano(start_time) + duration <= {settled:Int64}) AS c "
            f"LEFT ANTI JOIN (SELECT {SPAN_KEY} AS k FROM {self.db}.spans WHERE {AROUND}) AS p "
            "ON c.k = p.k GROUP BY service ORDER BY service",
            {**params, "settled": self.clock() - SETTLE_NS},
        ).to_pylist()
        multi = q(
            "SELECT count() AS traces, groupArray({n:UInt32})(t) AS examples FROM ("
            f"SELECT lower(hex(trace_id)) AS t FROM {self.db}.spans WHERE {WINDOW} "
            "GROUP BY trace_id HAVING countIf(parent_span_id = '') > 1)",
            params,
        ).to_pylist()[0]
        skew = q(
            "SELECT toString(p.service_name) AS parent, toString(c.service_name) AS child, count() AS spans, "
            "groupUniqArray({n:UInt32})(lower(hex(c.trace_id))) AS examples FROM "
            f"(SELECT {PARENT_KEY} AS k, trace_id, service_name, "
            "toUnixTimestamp64Nano(start_time) AS s, toUnixTimestamp64Nano(start_time) + duration AS e "
            f"FROM {self.db}.spans WHERE {WINDOW} AND parent_span_id != '') AS c "
            f"INNER JOIN (SELECT {SPAN_KEY} AS k, service_name, "
            "toUnixTimestamp64Nano(start_time) AS s, toUnixTimestamp64Nano(start_time) + duration AS e "
            f"FROM {self.db}.spans WHERE {AROUND}) AS p ON c.k = p.k "
            "WHERE greatest(p.s - c.s, c.e - p.e) > {slack:Int64} + intDiv(p.e - p.s, 10) "
            "GROUP BY parent, child ORDER BY parent, child",
            {**params, "slack": SKEW_SLACK_NS},
        ).to_pylist()
        gaps = self._gaps(params)
        broken: dict[str, int] = defaultdict(int)
        for row in orphans:
            broken[row["service"]] += int(row["traces"])
        for gap in gaps:
            broken[gap.callee] += gap.count
        return Report(
            start,
            end,
            [ServiceHealth(r["s"], int(r["t"]), min(broken.get(r["s"], 0), int(r["t"]))) for r in traces],
            [
                Orphans(r["service"], int(r["spans"]), int(r["traces"]), sorted(r["examples"]))
                for r in orphans
            ],
            int(multi["traces"]),
            sorted(multi["examples"]),
            gaps,
            [Skew(r["parent"], r["child"], int(r["spans"]), sorted(r["examples"])) for r in skew],
        )

    def broken(self, start: int, end: int, tenant: str) -> list[BrokenService]:
        """Per service: its traces in [start, end] ns, how many are broken, and examples (the
        alerts' view of the report)."""
        report = self.report(start, end, tenant)
        examples: dict[str, list[str]] = defaultdict(list)
        for o in report.orphans:
            examples[o.service] += o.examples
        for g in report.gaps:
            examples[g.callee] += [callee for _, callee in g.examples]
        return [
            BrokenService(h.service, h.traces, h.broken, examples[h.service][:EXAMPLES])
            for h in report.services
        ]

    def _gaps(self, params: dict[str, object]) -> list[Gap]:
        """Root server spans inside a childless client span of another service, paired in time."""
        clients = self.conn.query(
            "SELECT toString(c.service_name) AS service, lower(hex(c.trace_id)) AS trace, "
            "toUnixTimestamp64Nano(c.start_time) AS s, toUnixTimestamp64Nano(c.start_time) + c.duration AS e "
            f"FROM {childless_clients(self.db, 'trace_id, span_id, service_name, start_time, duration')} "
            "ORDER BY s LIMIT {limit:UInt32}",
            {**params, "limit": MAX_CANDIDATES},
        ).to_pylist()
        roots = self.conn.query(
            "SELECT toString(service_name) AS service, lower(hex(trace_id)) AS trace, "
            "toUnixTimestamp64Nano(start_time) AS s, toUnixTimestamp64Nano(start_time) + duration AS e "
            f"FROM {self.db}.spans WHERE {WINDOW} AND kind IN (2, 5) AND parent_span_id = '' "
            "ORDER BY s LIMIT {limit:UInt32}",
            {**params, "limit": MAX_CANDIDATES},
        ).to_pylist()
        starts = [c["s"] for c in clients]
        pairs: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
        longest = max((c["e"] - c["s"] for c in clients), default=0)
        for root in roots:
            # clients that started before the root, no longer ago than the longest client span
            lo = bisect.bisect_left(starts, root["s"] - longest)
            hi = bisect.bisect_right(starts, root["s"])
            best = None
            for c in clients[lo:hi]:
                if c["service"] != root["service"] and c["e"] >= root["e"] and c["trace"] != root["trace"]:
                    if best is None or c["e"] - c["s"] < best["e"] - best["s"]:
                        best = c
            if best is not None:
                pairs[(best["service"], root["service"])].append((best["trace"], root["trace"]))
        return [
            Gap(caller, callee, len(found), found[:EXAMPLES])
            for (caller, callee), found in sorted(pairs.items())
        ]


def report_json(report: Report) -> dict[str, Any]:
    return {
        "start": report.start / 1e9,
        "end": report.end / 1e9,
        "services": [
            {
                "service": s.service,
                "traces": s.traces,
                "brokenTraces": s.broken,
                "brokenShare": s.broken_share,
            }
            for s in report.services
        ],
        "orphans": [
            {"service": o.service, "spans": o.spans, "traces": o.traces, "examples": o.examples}
            for o in report.orphans
        ],
        "multipleRoots": {"traces": report.multiple_roots, "examples": report.multiple_root_examples},
        "propagationGaps": [
            {
                "caller": g.caller,
                "callee": g.callee,
                "count": g.count,
                "examples": [{"callerTrace": a, "calleeTrace": b} for a, b in g.examples],
            }
            for g in report.gaps
        ],
        "clockSkew": [
            {"parent": k.parent, "child": k.child, "spans": k.spans, "examples": k.examples}
            for k in report.skew
        ],
    }
