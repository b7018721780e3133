"""Several `clew serve` processes on one ClickHouse store (issue 13): traces whose spans reached
different instances come back whole from either, and each gets one sampling decision, taken by the
oldest live instance; when it dies, another takes over."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from clew.store.server_connection import ServerConnection
from tests.conftest import CLICKHOUSE, ServerProcess
from tests.shop_data import resource, span

MS = 10**6


def config(path: Path, url: str) -> Path:
    path.write_text(
        f'[storage]\nurl = "{url}"\ninstance_lease_s = 2\n\n'
        '[sampling]\ndecision_wait = "1s"\n\n'
        '[[sampling.policy]]\nname = "errors"\ntype = "errors"\n'
    )
    return path


def split_trace(n: int, error: bool) -> tuple[str, dict, dict]:
    """A trace whose root reaches one instance and whose child reaches the other."""
    trace = f"{n:04x}".rjust(32, "a")
    start = time.time_ns() - 50 * MS
    who = {"user.email": "alice@example.com"}
    root = {"resourceSpans": [resource("frontend", [span(trace, "1", None, "GET /", 2, start, 40, who)])]}
    child = span(trace, "2", "1", "charge", 2, start + 5 * MS, 30, who, error="declined" if error else None)
    return trace, root, {"resourceSpans": [resource("payment", [child])]}


def health(server: ServerProcess) -> dict:
    return httpx.get(f"{server.http_url}/healthz", timeout=10).json()["instance"]


def wait_for(condition, what: str, timeout: float = 90) -> None:
    """Liveness, not speed: generous, as the suite runs on two busy cores (a 30 s wait for the
    decisions timed out in CI while other work ran beside it)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess, ServerConnection]]:
    url = CLICKHOUSE.url()
    toml = config(tmp_path / "clew.toml", url)
    first = ServerProcess(tmp_path / "a", extra_args=["--config", str(toml)]).start()
    second = ServerProcess(tmp_path / "b", extra_args=["--config", str(toml)]).start()
    conn = ServerConnection(url)
    try:
        yield first, second, conn
    finally:
        for server in (first, second):
            server.stop()
        conn.close()


def decisions(conn: ServerConnection) -> dict[str, list[bool]]:
    table = conn.query(f"SELECT hex(trace_id), kept FROM {conn.database}.sampling_decisions")
    out: dict[str, list[bool]] = {}
    for trace, kept in zip(*(c.to_pylist() for c in table.columns), strict=True):
        out.setdefault(str(trace).lower(), []).append(bool(kept))
    return out


def test_split_traces_come_back_whole_and_are_decided_once(pair) -> None:
    first, second, conn = pair
    wait_for(lambda: health(first)["leader"] and not health(second)["leader"], "the older instance to lead")
    assert health(first)["name"] != health(second)["name"]
    sent: dict[str, bool] = {}
    for n in range(12):
        trace, root, child = split_trace(n, error=n % 3 == 0)
        to_root, to_child = (first, second) if n % 2 else (second, first)
        assert httpx.post(f"{to_root.otlp_http_url}/v1/traces", json=root, timeout=30).status_code == 200
        assert httpx.post(f"{to_child.otlp_http_url}/v1/traces", json=child, timeout=30).status_code == 200
        sent[trace] = n % 3 == 0
    for server in (first, second):  # whole from either instance
        for trace in sent:
            doc = httpx.get(f"{server.http_url}/api/traces/{trace}", timeout=30).json()
            spans = doc["data"][0]["spans"]
            assert sorted(s["operationName"] for s in spans) == ["GET /", "charge"]
            # redacted on two instances with the store's one key: still equal, so still joinable
            emails = {t["value"] for s in spans for t in s["tags"] if t["key"] == "user.email"}
            assert len(emails) == 1 and emails.pop().startswith("[email:")
    wait_for(lambda: set(decisions(conn)) >= set(sent), "every trace to be decided")
    time.sleep(2)  # a second decision would come within a tick or two
    got = decisions(conn)
    assert {t: got[t] for t in sent} == {t: [kept] for t, kept in sent.items()}
    for trace, kept in sent.items():  # and either instance reports the one decision
        answer = httpx.get(f"{second.http_url}/api/v1/traces/{trace}/sampling", timeout=30).json()
        assert answer["kept"] is kept

    # the leader dies without a word: once its lease runs out, the other decides what comes next
    first.stop(signal.SIGKILL)
    wait_for(lambda: health(second)["leader"], "the other instance to take over", timeout=60)
    later = {}
    for n in range(100, 104):
        trace, root, child = split_trace(n, error=n % 2 == 0)
        for body in (root, child):
            assert httpx.post(f"{second.otlp_http_url}/v1/traces", json=body, timeout=30).status_code == 200
        later[trace] = n % 2 == 0
    wait_for(lambda: set(decisions(conn)) >= set(later), "the new leader's decisions")
    time.sleep(2)
    got = decisions(conn)
    assert {t: got[t] for t in [*sent, *later]} == {t: [k] for t, k in {**sent, **later}.items()}
