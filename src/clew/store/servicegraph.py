"""The service graph for the UI: edges from parent/child spans across services (calls, or messaging
when a producer or consumer is involved) and from client spans to uninstrumented peers (databases,
external APIs named by `peer.service`, `db.system`, `server.address` or `net.peer.name`), each with
call and error counts and callee latency percentiles."""

from __future__ import annotations

from typing import Any

from clew.model import DEFAULT_TENANT
from clew.store.base import Connection
from clew.store.sql import AROUND, PARENT_KEY, SPAN_KEY, WINDOW, childless_clients

PEER = (
    "multiIf(attributes_string['peer.service'] != '', attributes_string['peer.service'], "
    "attributes_string['db.system'] != '', attributes_string['db.system'], "
    "attributes_string['server.address'] != '', attributes_string['server.address'], "
    "attributes_string['net.peer.name'])"
)


class ServiceGraph:
    def __init__(self, conn: Connection, db: str) -> None:
        self.conn, self.db = conn, db

    def graph(self, start: int, end: int, tenant: str = DEFAULT_TENANT) -> dict[str, Any]:
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
            "SELECT toString(service_name) AS service, count() AS spans, countIf(status_code = 2) AS errors "
            f"FROM {self.db}.spans WHERE {WINDOW} GROUP BY service ORDER BY service",
            params,
        ).to_pylist()
        instrumented = {n["service"] for n in nodes}
        edges = [
            {
                "parent": e["parent"],
                "child": e["child"],
                "type": e["type"],
                "calls": int(e["calls"]),
                "errors": int(e["errors"]),
                "p50Ms": float(e["q"][0]) / 1e6,
                "p95Ms": float(e["q"][1]) / 1e6,
                "p99Ms": float(e["q"][2]) / 1e6,
            }
            for e in calls + peers
            if not (e["type"] == "peer" and e["child"] in instrumented)  # a peer that is traced itself
        ]
        virtual = sorted({e["child"] for e in edges if e["type"] == "peer"})
        return {
            "start": start / 1e9,
            "end": end / 1e9,
            "nodes": [
                {
                    "service": n["service"],
                    "spans": int(n["spans"]),
                    "errors": int(n["errors"]),
                    "virtual": False,
                }
                for n in nodes
            ]
            + [{"service": v, "spans": 0, "errors": 0, "virtual": True} for v in virtual],
            "edges": edges,
        }
