"""The service graph for the UI: edges from parent/child spans across services (calls, or messaging
when a producer or consumer is involved) and from client spans to uninstrumented peers (databases,
external APIs named by `peer.service`, `db.system`, `server.address` or `net.peer.name`), each with
call and error counts and callee latency percentiles."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starlette.routing import BaseRoute, Route

from clew.components.base import BaseComponent, Context
from clew.components.http import over_time_range
from clew.core.model import DEFAULT_TENANT
from clew.store.sql import AROUND, PARENT_KEY, SPAN_KEY, WINDOW, childless_clients

PEER = (
    "multiIf(attributes_string['peer.service'] != '', attributes_string['peer.service'], "
    "attributes_string['db.system'] != '', attributes_string['db.system'], "
    "attributes_string['server.address'] != '', attributes_string['server.address'], "
    "attributes_string['net.peer.name'])"
)


@dataclass(frozen=True, slots=True)
class Node:
    service: str
    spans: int
    errors: int
    virtual: bool  # an untraced peer (a database, an external API) named by its callers' spans


@dataclass(frozen=True, slots=True)
class Edge:
    parent: str
    child: str
    type: str  # call, messaging or peer
    calls: int
    errors: int
    p50: float  # nanoseconds
    p95: float
    p99: float


@dataclass(frozen=True, slots=True)
class Graph:
    start: int
    end: int
    nodes: list[Node]
    edges: list[Edge]
    # first and last span start of the range (ns): rates are over the time the data covers, not a
    # week chosen over a minute of spans
    first: int | None = None
    last: int | None = None

    @property
    def rate_seconds(self) -> float:
        """What rates divide by: the data's span of time, at least a minute, at most the range."""
        whole = (self.end - self.start) / 1e9
        if self.first is None or self.last is None:
            return whole
        return min(whole, max(MIN_RATE_WINDOW_S, (self.last - self.first) / 1e9))


MIN_RATE_WINDOW_S = 60


class ServiceGraph(BaseComponent):
    """`/api/v1/servicegraph`, the UI's service map."""

    name = "servicegraph"

    def __init__(self, ctx: Context) -> None:
        self.conn, self.db = ctx.conn, ctx.db

    def routes(self) -> Sequence[BaseRoute]:
        return [
            Route("/api/v1/servicegraph", over_time_range(lambda s, e, t: graph_json(self.graph(s, e, t))))
        ]

    def graph_dict(self, start: int, end: int, tenant: str = DEFAULT_TENANT) -> dict[str, Any]:
        """The graph as `/api/v1/servicegraph` answers it (for the MCP tools)."""
        return graph_json(self.graph(start, end, tenant))

    def graph(self, start: int, end: int, tenant: str = DEFAULT_TENANT) -> Graph:
        params = {"tenant": tenant, "start": start, "end": end}
        calls = self.conn.query(
            "SELECT toString(p.service_name) AS parent, toString(c.service_name) AS child, "
            "if(c.kind = 5 OR p.kind = 4, 'messaging', 'call') AS type, count() AS calls, "
            "countIf(c.status_code = 2) AS errors, quantiles(0.5, 0.95, 0.99)(c.duration) AS q FROM "
            f"(SELECT {PARENT_KEY} AS k, service_name, kind, status_code, duration "
            f"FROM {self.db}.spans WHERE {WINDOW} AND parent_span_id != '') AS c "
            f"INNER JOIN (SELECT {SPAN_KEY} AS k, service_name, kind FROM {self.db}.spans "
            f"WHERE {AROUND}) AS p ON c.k = p.k "
            "WHERE p.service_name != c.service_name GROUP BY parent, child, type ORDER BY parent, child, type",
            params,
        ).to_pylist()
        peers = self.conn.query(
            f"SELECT toString(c.service_name) AS parent, c.peer AS child, 'peer' AS type, count() AS calls, "
            "countIf(c.status_code = 2) AS errors, quantiles(0.5, 0.95, 0.99)(c.duration) AS q FROM "
            f"{childless_clients(self.db, f'trace_id, span_id, service_name, status_code, duration, {PEER} AS peer')} "
            "WHERE c.peer != '' GROUP BY parent, child ORDER BY parent, child",
            params,
        ).to_pylist()
        nodes = self.conn.query(
            "SELECT toString(service_name) AS service, count() AS spans, countIf(status_code = 2) AS errors, "
            "toUnixTimestamp64Nano(min(start_time)) AS first, toUnixTimestamp64Nano(max(start_time)) AS last "
            f"FROM {self.db}.spans WHERE {WINDOW} GROUP BY service ORDER BY service",
            params,
        ).to_pylist()
        instrumented = {n["service"] for n in nodes}
        edges = [
            Edge(e["parent"], e["child"], e["type"], int(e["calls"]), int(e["errors"]), *map(float, e["q"]))
            for e in calls + peers
            if not (e["type"] == "peer" and e["child"] in instrumented)  # a peer that is traced itself
        ]
        virtual = sorted({e.child for e in edges if e.type == "peer"})
        return Graph(
            start,
            end,
            [Node(n["service"], int(n["spans"]), int(n["errors"]), False) for n in nodes]
            + [Node(v, 0, 0, True) for v in virtual],
            edges,
            min((int(n["first"]) for n in nodes), default=None),
            max((int(n["last"]) for n in nodes), default=None),
        )


def graph_json(graph: Graph) -> dict[str, Any]:
    seconds = graph.rate_seconds
    per_second = 1 / seconds if seconds > 0 else 0.0  # start == end: no time to rate over
    return {
        "start": graph.start / 1e9,
        "end": graph.end / 1e9,
        "rateSeconds": seconds,
        "nodes": [
            {
                "service": n.service,
                "spans": n.spans,
                "errors": n.errors,
                "virtual": n.virtual,
                "spansPerSecond": n.spans * per_second,
            }
            for n in graph.nodes
        ],  # fmt: skip
        "edges": [
            {
                "parent": e.parent,
                "child": e.child,
                "type": e.type,
                "calls": e.calls,
                "errors": e.errors,
                "callsPerSecond": e.calls * per_second,
                "p50Ms": e.p50 / 1e6,
                "p95Ms": e.p95 / 1e6,
                "p99Ms": e.p99 / 1e6,
            }
            for e in graph.edges
        ],
    }
