"""`/api/v1/servicegraph` over the shop: calls with errors and latency, and an uninstrumented database."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import ServerProcess
from tests.shop_data import NOW


def test_edges_carry_errors_latency_and_uninstrumented_peers(shop_server: ServerProcess) -> None:
    graph = httpx.get(f"{shop_server.http_url}/api/v1/servicegraph", timeout=30).json()
    edges = {(e["parent"], e["child"]): e for e in graph["edges"]}
    assert set(edges) == {("frontend", "checkout"), ("checkout", "postgres")}
    call = edges[("frontend", "checkout")]
    assert (call["type"], call["calls"], call["errors"]) == ("call", 2, 1)  # POST /pay failed once
    assert 240 <= call["p50Ms"] <= 1100 and call["p99Ms"] >= 1000  # the callee took 240 ms and 1.1 s
    db = edges[("checkout", "postgres")]
    assert (db["type"], db["calls"], db["errors"]) == ("peer", 1, 0)
    assert db["p50Ms"] == 50.0
    nodes = {n["service"]: n for n in graph["nodes"]}
    assert nodes["postgres"]["virtual"] is True and nodes["checkout"]["virtual"] is False
    assert (nodes["checkout"]["spans"], nodes["checkout"]["errors"]) == (4, 1)


def test_servicegraph_refuses_a_reversed_range(shop_server: ServerProcess) -> None:
    response = httpx.get(
        f"{shop_server.http_url}/api/v1/servicegraph", params={"start": 10, "end": 5}, timeout=30
    )
    assert response.status_code == 400


def test_rates_are_over_the_time_the_data_covers(shop_server: ServerProcess) -> None:
    """Rates divide by the time from the range's first span to its last (at least a minute), not
    by the range: a week chosen over minutes of spans does not read as a trickle."""
    hour = httpx.get(f"{shop_server.http_url}/api/v1/servicegraph", timeout=30).json()
    assert hour["rateSeconds"] == pytest.approx(15 * 60, abs=1)  # B (20 min ago) to C (5 min ago)
    nodes = {n["service"]: n for n in hour["nodes"]}
    assert nodes["checkout"]["spansPerSecond"] == pytest.approx(4 / hour["rateSeconds"])
    edge = next(e for e in hour["edges"] if e["child"] == "checkout")
    assert edge["callsPerSecond"] == pytest.approx(2 / hour["rateSeconds"])
    end = NOW / 1e9 + 60
    week = httpx.get(
        f"{shop_server.http_url}/api/v1/servicegraph",
        params={"start": end - 7 * 86400, "end": end},
        timeout=30,
    ).json()
    assert week["rateSeconds"] == pytest.approx(175 * 60, abs=1)  # from D, three hours ago, to C
    empty = httpx.get(
        f"{shop_server.http_url}/api/v1/servicegraph", params={"start": 10, "end": 100}, timeout=30
    ).json()
    assert empty["rateSeconds"] == 90 and empty["nodes"] == []


def test_an_empty_range_with_spans_at_its_instant_has_zero_rates() -> None:
    """start == end is a valid range; a span starting at that very instant made the rate divide
    by zero (a 500, found in review)."""
    from clew.components.servicegraph import Edge, Graph, Node, graph_json

    t = NOW
    doc = graph_json(
        Graph(t, t, [Node("a", 1, 0, False)], [Edge("a", "b", "call", 1, 0, 1.0, 1.0, 1.0)], t, t)
    )
    assert doc["rateSeconds"] == 0 and doc["nodes"][0]["spansPerSecond"] == 0.0
    assert doc["edges"][0]["callsPerSecond"] == 0.0
