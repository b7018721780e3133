"""`/api/v1/servicegraph` over the shop: calls with errors and latency, and an uninstrumented database."""

from __future__ import annotations

import httpx

from tests.conftest import ServerProcess


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
