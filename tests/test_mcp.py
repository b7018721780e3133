"""The MCP endpoint (issue 15, part 5) through the `mcp` package's own client over real HTTP: the
tools an agent uses to find a trace and look into it step by step, with the API's tenants."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from tests.conftest import ServerProcess
from tests.shop_data import A, B, C


@pytest.fixture
def served(shop_server: ServerProcess) -> ServerProcess:
    """The shop's traces, on each store connection."""
    return shop_server


def call(proc: ServerProcess, calls: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    """Each tool's structured answer (or its error text), through one client session."""

    async def run() -> list[Any]:
        out: list[Any] = []
        async with Client(f"{proc.http_url}/api/mcp") as client:
            for name, args in calls:
                result = await client.call_tool(name, args)
                if result.is_error:
                    out.append(("error", " ".join(getattr(c, "text", "") for c in result.content)))
                else:
                    out.append(result.structured_content or json.loads(result.content[0].text))
        return out

    return asyncio.run(run())


def test_the_tools_are_listed_with_descriptions(served: ServerProcess) -> None:
    async def tools() -> list[Any]:
        async with Client(f"{served.http_url}/api/mcp") as client:
            return list((await client.list_tools()).tools)

    listed = {t.name: t for t in asyncio.run(tools())}
    assert set(listed) >= {
        "services", "search", "trace_summary", "critical_path", "trace_errors", "span_details",
        "compare_traces", "service_graph", "red_metrics", "compare_releases", "alerts", "trace_logs",
        "search_logs",
    }  # fmt: skip
    assert all(t.description for t in listed.values())


def test_an_agent_finds_a_failed_trace_and_looks_into_it(served: ServerProcess) -> None:
    services, found, summary, errors, path, details = call(
        served,
        [
            ("services", {}),
            ("search", {"query": "{ status = error }", "minutes": 600}),
            ("trace_summary", {"trace_id": A}),
            ("trace_errors", {"trace_id": A}),
            ("critical_path", {"trace_id": A}),
            ("span_details", {"trace_id": A, "span_id": "7" * 16}),
        ],
    )
    assert {s["service"] for s in services["services"]} == {"frontend", "checkout"}
    assert "POST /pay" in next(s for s in services["services"] if s["service"] == "checkout")["operations"]
    assert [t["traceId"] for t in found["traces"]] == [A]
    assert found["traces"][0]["root"] == "frontend: GET /checkout" and found["traces"][0]["errors"] == 1
    assert summary["spans"] == 5 and summary["errors"] == 1 and summary["durationMs"] == 300
    assert summary["calls"] == [{"from": "frontend", "to": "checkout", "count": 1}]
    assert summary["services"]["checkout"] == {"spans": 3, "errors": 1}
    (failed,) = errors["errors"]
    assert failed["name"] == "POST /pay" and failed["message"] == "card declined"
    # the path runs root -> client call -> the failing server span -> its children, in time order
    assert [p["name"] for p in path["path"]] == [
        "GET /checkout",
        "HTTP POST",
        "POST /pay",
        "db.query",
        "cache.get",
    ]
    assert sum(p["selfMs"] for p in path["path"]) == pytest.approx(300, abs=0.01)
    assert details["span"]["name"] == "POST /pay"
    attrs = {a["key"]: a["value"] for a in details["span"]["attributes"]}
    assert attrs["http.status_code"] == {"intValue": "500"}
    assert details["resource"]["attributes"][0]["value"]["stringValue"] == "checkout"


def test_comparison_graph_and_metrics(served: ServerProcess) -> None:
    compared, graph, red, releases = call(
        served,
        [
            ("compare_traces", {"trace_a": A, "trace_b": C}),
            ("service_graph", {"minutes": 600}),
            ("red_metrics", {"service": "frontend", "minutes": 600}),
            (
                "compare_releases",
                {"service": "checkout", "attribute": "deployment.environment", "minutes": 600},
            ),
        ],
    )
    # checkout's one entry span with the attribute: C's POST /pay, in prod
    assert releases["values"] == [{"value": "prod", "spans": 1}] and releases["operations"] == []
    top = compared["operations"][0]
    assert (top["service"], top["operation"]) == ("frontend", "GET /checkout") and top["deltaMs"] == 900
    edges = {(e["parent"], e["child"]) for e in graph["edges"]}
    assert ("frontend", "checkout") in edges
    assert sum(p["calls"] for p in red["points"]) == 6  # frontend's spans in the window


def test_bad_arguments_are_tool_errors_and_tenants_stay_apart(served: ServerProcess) -> None:
    bad_query, bad_id, missing = call(
        served,
        [
            ("search", {"query": "{ status = }"}),
            ("trace_summary", {"trace_id": "not-hex"}),
            ("trace_summary", {"trace_id": "1" * 32}),
        ],
    )
    # the reason reaches the agent
    assert bad_query[0] == "error" and "search" in bad_query[1] and "expected" in bad_query[1].lower()
    assert bad_id[0] == "error" and bad_id[1].endswith("trace id 'not-hex' is not up to 32 hex characters")
    assert missing[0] == "error" and missing[1].endswith(f"trace {'1' * 32} not found")

    async def as_other_tenant() -> Any:
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        async with httpx2.AsyncClient(headers={"X-Scope-OrgID": "elsewhere"}) as http:
            async with Client(
                streamable_http_client(f"{served.http_url}/api/mcp", http_client=http)
            ) as client:
                result = await client.call_tool("search", {"query": "{ }", "minutes": 600})
                return result.structured_content

    assert asyncio.run(as_other_tenant()) == {"traces": []}
    assert B  # the default tenant holds B, the other tenant saw nothing


def test_the_sdk_is_loaded_by_the_first_call_not_by_start_up(tmp_path: Path, server: ServerProcess) -> None:
    """A server that never serves an agent does not hold the SDK (~40 MiB); the first calls, two at
    once, build it once and are answered, and the server still stops cleanly."""
    probe = (
        "import sys; from clew.assembly import open_embedded; from clew.server import assembly_http_app; "
        f"assembly_http_app(open_embedded({str(tmp_path / 'probe')!r})); "
        "print(sorted(m for m in sys.modules if m == 'mcp' or m.startswith('mcp.')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"

    async def both() -> list[Any]:
        async def listed() -> list[str]:
            async with Client(f"{server.http_url}/api/mcp") as client:
                return sorted(t.name for t in (await client.list_tools()).tools)

        return await asyncio.gather(listed(), listed())

    first, second = asyncio.run(both())
    assert first == second and "search" in first
    assert server.stop() == 0, "".join(server.output)
