"""`clew search` and `clew trace` run as commands against a real server holding the shop traces."""

from __future__ import annotations

import subprocess
import sys
import time

from clew.terminal import waterfall
from tests.conftest import ServerProcess
from tests.shop_data import MS, NOW, A, C, shop, span


def clew(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clew.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_search_prints_a_table_of_matching_traces(shop_server: ServerProcess) -> None:
    result = clew("search", '{ name =~ "GET /check.*" }', "--url", shop_server.http_url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["TRACE", "ID", "START", "(UTC)", "DURATION", "SPANS", "ERR", "ROOT"]
    assert [line.split()[0] for line in lines[1:3]] == [C, A]
    assert lines[2].split()[3:] == ["300.0ms", "5", "1", "frontend:", "GET", "/checkout"]
    assert lines[-1] == "2 traces"
    assert all(len(line) <= 100 for line in lines)


def test_search_since_widens_the_window(shop_server: ServerProcess) -> None:
    # 15 minutes before the shop data's "now" (the suite may have run for a while since it was made)
    window = 15 * 60 + (time.time_ns() - NOW) // 10**9
    narrow = clew("search", "{ }", "--since", f"{window}s", "--url", shop_server.http_url)
    wide = clew("search", "{ }", "--since", "1d", "--url", shop_server.http_url)
    assert narrow.stdout.splitlines()[-1] == "2 traces"
    assert wide.stdout.splitlines()[-1] == "4 traces"


def test_search_points_at_a_syntax_error(shop_server: ServerProcess) -> None:
    result = clew("search", "{ name = }", "--url", shop_server.http_url)
    assert result.returncode != 0
    assert "unexpected '}' at column 10" in result.stderr
    query_line, caret_line = result.stderr.splitlines()[-2:]
    assert caret_line.index("^") == query_line.index("}")


def test_search_and_trace_say_when_the_server_is_unreachable() -> None:
    result = clew("search", "{ }", "--url", "http://127.0.0.1:9")
    assert result.returncode != 0 and "cannot reach http://127.0.0.1:9" in result.stderr


def test_trace_prints_a_waterfall(shop_server: ServerProcess) -> None:
    result = clew("trace", A, "--url", shop_server.http_url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"trace {A}"
    assert "duration 300.0ms  spans 5  errors 1" in lines[1]
    rows = lines[lines.index(next(line for line in lines if line.startswith("SPAN"))) + 1 :]
    names = [row[:38].rstrip() for row in rows]
    assert names == [
        " GET /checkout",
        "   HTTP POST",
        "!    POST /pay",
        "       db.query",
        "       cache.get",
    ]
    pay = rows[2]
    assert pay.split()[4:7] == ["+20.0ms", "240.0ms", "#" * pay.count("#")]
    assert "#" not in "".join(rows[:2] + rows[3:])  # only the failed span is drawn as an error
    assert all(len(line) <= 100 for line in lines)


def test_trace_not_found_exits_nonzero(shop_server: ServerProcess) -> None:
    result = clew("trace", "f" * 32, "--url", shop_server.http_url)
    assert result.returncode == 1
    assert "not found" in result.stderr


def test_waterfall_bars_share_one_time_axis_and_orphans_are_flagged() -> None:
    doc = shop()
    trace_a = {
        "resourceSpans": [
            {**rs, "scopeSpans": [{"spans": [s for s in rs["scopeSpans"][0]["spans"] if s["traceId"] == A]}]}
            for rs in doc["resourceSpans"][:2]
        ]
    }
    # drop the client span: POST /pay loses its parent
    trace_a["resourceSpans"][0]["scopeSpans"][0]["spans"].pop(1)
    text = waterfall(trace_a)
    assert f"(parent {'2' * 16} missing: orphan spans below)" in text
    lines = text.splitlines()
    root = next(line for line in lines if "GET /checkout" in line and "=" in line)
    cache = next(line for line in lines if "cache.get" in line)
    bar_start = 38 + 1 + 14 + 1 + 9 + 1 + 9 + 1
    assert root[bar_start:].startswith("=" * 20)  # the root spans the whole axis
    assert cache[bar_start:].index("=") > 5  # 90 ms into a 300 ms trace
    one = waterfall(
        {"resourceSpans": [{"scopeSpans": [{"spans": [span(C, "5", None, "x", 2, 0, 0.001 / MS)]}]}]}
    )
    assert "x" in one
