"""`clew demo` against a real server: realistic multi-service traces with every fault visible in the
stored data, and no demo process left behind however it is stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess


def demo_processes(endpoint_port: int) -> list[int]:
    """Demo service processes sending to this server (found by the endpoint in their environment)."""
    marker = f"127.0.0.1:{endpoint_port}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            if b"clew.demo.service" in cmdline and marker in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def wait_until(predicate, timeout: float = 30, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def search(server: ServerProcess, q: str, limit: int = 100) -> list[dict]:
    response = httpx.get(
        f"{server.http_url}/api/v1/search", params={"q": q, "limit": limit, "spss": 20}, timeout=60
    )
    assert response.status_code == 200, response.text
    return response.json()["traces"]


def spans(server: ServerProcess, trace_id: str) -> list[dict]:
    doc = httpx.get(f"{server.http_url}/api/v1/traces/{trace_id}", timeout=60).json()
    out = []
    for rs in doc["resourceSpans"]:
        resource = {a["key"]: a["value"].get("stringValue") for a in rs["resource"]["attributes"]}
        for ss in rs["scopeSpans"]:
            for s in ss["spans"]:
                out.append({**s, "service": resource["service.name"], "resource": resource})
    return out


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("demo") / "data").start()
    try:
        result = subprocess.run(
            [
                sys.executable, "-m", "clew.cli", "demo",
                "--endpoint", server.otlp_http_url,
                "--rps", "20", "--duration", "12", "--seed", "3",
                # faults frequent enough that a short run shows each of them, and enough checkouts (12 s)
                # that the canary stands out of the faults' latency on a busy machine
                "--payment-failure", "0.4", "--inventory-error", "0.25", "--canary-share", "0.4",
                "--dropped-propagation", "0.5", "--slow-payment", "0.2",
            ],
            capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "clew demo stopped: all services ended" in result.stdout
        # each service flushed its last spans and logs and exited 0 (uvicorn used to end them by
        # re-raising the SIGTERM, before the flush)
        assert "ended before flushing" not in result.stderr, result.stderr
        assert not demo_processes(server.otlp_http_port)
        # the services flushed on exit; give the writer a moment to commit the last batches
        wait_until(lambda: len(search(server, '{ name = "send confirmation email" }')) > 0, 20)
        yield server
    finally:
        server.stop()


def test_a_checkout_trace_crosses_five_services_with_correct_parents(demo_server: ServerProcess) -> None:
    checkouts = search(demo_server, '{ service = "frontend" && name = "POST /checkout" && status != error }')
    assert checkouts, "no successful checkout stored"
    trace = max(checkouts, key=lambda t: len(t["serviceStats"]))
    assert {"frontend", "checkout", "cart", "payment", "inventory"} <= set(trace["serviceStats"])
    by_id = {s["spanId"]: s for s in spans(demo_server, trace["traceID"])}
    roots = [s for s in by_id.values() if not s.get("parentSpanId")]
    assert [r["name"] for r in roots] == ["POST /checkout"] and roots[0]["service"] == "frontend"
    for s in by_id.values():
        if s.get("parentSpanId"):
            assert s["parentSpanId"] in by_id, f"{s['service']} {s['name']} lost its parent"
    # across process boundaries, every server span's parent is a client span of the calling service
    calls = {
        (by_id[s["parentSpanId"]]["service"], s["service"])
        for s in by_id.values()
        if s.get("kind") == 2 and s.get("parentSpanId")
    }
    assert {
        ("frontend", "checkout"),
        ("checkout", "cart"),
        ("checkout", "payment"),
        ("checkout", "inventory"),
    } <= calls
    for s in by_id.values():
        if s.get("kind") == 2 and s.get("parentSpanId"):
            assert by_id[s["parentSpanId"]]["kind"] == 3
    # enrichment travels with baggage
    assert any(
        a["key"] == "user.id"
        for s in by_id.values()
        if s["service"] == "payment"
        for a in s.get("attributes", [])
    )


def test_retries_errors_canary_cache_and_async_steps_are_stored(demo_server: ServerProcess) -> None:
    retried = search(demo_server, "{ span.http.request.resend_count >= 1 }")
    assert retried
    payment_calls = [
        s for s in spans(demo_server, retried[0]["traceID"]) if s["service"] == "payment" and s["kind"] == 2
    ]
    assert len(payment_calls) >= 2  # the first attempt and the retry, both under checkout
    assert search(demo_server, '{ service = "inventory" && status = error }')
    assert search(demo_server, '{ service = "payment" && span.payment.provider.slow = true }')
    canary = search(demo_server, '{ service = "checkout" && resource.service.version = "1.5.0" }')
    stable = search(demo_server, '{ service = "checkout" && resource.service.version = "1.4.2" }')
    assert canary and stable
    assert search(demo_server, '{ span.cache.hit = false } > { .db.system = "sqlite" }')
    (email,) = search(demo_server, '{ name = "send confirmation email" }', limit=1)
    (consumer,) = [s for s in spans(demo_server, email["traceID"]) if s["name"] == "send confirmation email"]
    assert not consumer.get("parentSpanId")
    (link,) = consumer["links"]
    producer = {s["spanId"]: s for s in spans(demo_server, link["traceId"])}[link["spanId"]]
    assert producer["service"] == "notifications" and producer["name"] == "POST /notify"


def test_the_canary_release_is_found_as_a_regression_with_examples(demo_server: ServerProcess) -> None:
    """checkout 1.5.0 sleeps 150-300 ms more per checkout: the release comparison flags POST
    /checkout as slower, with the canary's slow traces and typical 1.4.2 ones to compare."""
    end = time.time()
    params = {
        "service": "checkout",
        "baseline": "1.4.2",
        "candidate": "1.5.0",
        "start": end - 3600,
        "end": end,
    }
    answer = httpx.get(f"{demo_server.http_url}/api/v1/compare/releases", params=params, timeout=60).json()
    checkout = next(o for o in answer["operations"] if o["operation"] == "POST /checkout")
    assert checkout["regression"] and checkout["latency"]["verdict"] == "slower", checkout
    assert checkout["latency"]["deltaP50Ms"] > 100
    examples = checkout["examples"]
    assert examples["candidate"] and examples["baseline"]
    for example in examples["candidate"]:
        doc = httpx.get(f"{demo_server.http_url}/api/v1/traces/{example['traceID']}", timeout=30).json()
        versions = {
            a["value"]["stringValue"]
            for rs in doc["resourceSpans"]
            for a in rs["resource"]["attributes"]
            if a["key"] == "service.version"
        }
        assert "1.5.0" in versions


def test_the_dropped_propagation_breaks_a_trace_in_two(demo_server: ServerProcess) -> None:
    # the caller's side: a client span in the checkout trace with no server child
    (caller_trace,) = search(demo_server, '{ span.demo.propagation = "dropped" }', limit=1)
    caller_spans = spans(demo_server, caller_trace["traceID"])
    (client,) = [s for s in caller_spans if s["name"] == "POST /audit"]
    assert not any(s.get("parentSpanId") == client["spanId"] for s in caller_spans)
    # the callee's side: a server span that starts a trace of its own
    audits = search(demo_server, '{ service = "inventory" && name = "POST /audit" }')
    assert audits
    for t in audits:
        assert t["rootServiceName"] == "inventory" and set(t["serviceStats"]) == {"inventory"}


def test_completeness_finds_and_names_the_dropped_propagation(demo_server: ServerProcess) -> None:
    report = httpx.get(f"{demo_server.http_url}/api/v1/completeness", timeout=60).json()
    gaps = {(g["caller"], g["callee"]): g for g in report["propagationGaps"]}
    assert ("checkout", "inventory") in gaps
    assert gaps[("checkout", "inventory")]["count"] >= 1
    example = gaps[("checkout", "inventory")]["examples"][0]
    callee = spans(demo_server, example["calleeTrace"])
    assert [s["name"] for s in callee] == ["POST /audit"]
    inventory = next(s for s in report["services"] if s["service"] == "inventory")
    assert 0 < inventory["brokenShare"] < 1


def logs_of(server: ServerProcess, trace_id: str) -> list[dict]:
    response = httpx.get(f"{server.http_url}/api/v1/traces/{trace_id}/logs", timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["logs"]


def test_the_services_logs_are_joined_to_their_traces_and_a_fault_logs_in_its_span(
    demo_server: ServerProcess,
) -> None:
    """The services log through Python logging; the records arrive with the trace and the span they
    were written in, and an injected fault's ERROR sits in the span that failed."""
    failed = search(demo_server, '{ service = "inventory" && status = error }')
    assert failed
    trace_id = failed[0]["traceID"]
    assert wait_until(lambda: any(r["service"] == "inventory" for r in logs_of(demo_server, trace_id)), 30)
    by_id = {s["spanId"]: s for s in spans(demo_server, trace_id)}
    logs = logs_of(demo_server, trace_id)
    for record in logs:
        assert record["traceId"] == trace_id
        assert by_id[record["spanId"]]["service"] == record["service"]  # a span of this trace, its service

    def logged(service: str, level: str, start: str) -> bool:
        return any(
            (r["service"], r["severityText"]) == (service, level) and r["body"].startswith(start)
            for r in logs
        )

    # a few lines a request, the failure's error at each hop it went through
    assert logged("checkout", "INFO", "placing order")
    assert logged("payment", "INFO", "charging card ending 4242")
    assert logged("inventory", "ERROR", "reserving")
    assert logged("checkout", "ERROR", "order not placed: inventory reservation failed")
    assert logged("frontend", "ERROR", "checkout failed for u-")
    assert len(logs) < 20
    for record in logs:
        if record["severityText"] == "ERROR":  # each error is logged in a span that failed
            assert by_id[record["spanId"]]["status"].get("code") == 2, record
    (stock,) = [r for r in logs if r["service"] == "inventory" and r["severityText"] == "ERROR"]
    assert stock["attributes"]["exception.type"] == "RuntimeError"
    assert "stock service timeout" in stock["attributes"]["exception.stacktrace"]
    # searched across traces, a payment error is found with its trace and span
    declined = httpx.get(
        f"{demo_server.http_url}/api/v1/logs",
        params={"q": "service:payment severity>=error declined"},
        timeout=60,
    ).json()["logs"]
    assert declined
    payment_span = {s["spanId"]: s for s in spans(demo_server, declined[0]["traceId"])}[declined[0]["spanId"]]
    assert payment_span["service"] == "payment" and payment_span["status"].get("code") == 2
    # the asynchronous step logs in its own trace
    (email,) = search(demo_server, '{ name = "send confirmation email" }', limit=1)
    (consumer,) = [s for s in spans(demo_server, email["traceID"]) if s["name"] == "send confirmation email"]
    assert any(
        r["spanId"] == consumer["spanId"] and r["body"].startswith("sent the confirmation email")
        for r in logs_of(demo_server, email["traceID"])
    )


def _start_demo(endpoint: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "clew.cli", "demo", "--endpoint", endpoint, "--rps", "5"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("clew demo running"), line
    return proc


@pytest.mark.parametrize("signals", [[signal.SIGTERM], [signal.SIGKILL], [signal.SIGTERM] * 5])
def test_stopping_the_demo_stops_every_service(server: ServerProcess, signals: list[int]) -> None:
    proc = _start_demo(server.otlp_http_url)
    try:
        assert len(demo_processes(server.otlp_http_port)) == 9
        for sig in signals:  # repeated signals once deadlocked the runner's handler
            os.kill(proc.pid, sig)
        proc.wait(timeout=60)
        assert wait_until(lambda: not demo_processes(server.otlp_http_port), 30), (
            "demo services outlived the runner"
        )
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_serve_demo_runs_the_shop_with_the_server(data_dir: Path, sig: int) -> None:
    server = ServerProcess(data_dir, extra_args=["--demo"]).start()
    try:
        assert wait_until(
            lambda: "checkout" in httpx.get(f"{server.http_url}/api/services").json()["data"], 60
        )
        assert len(demo_processes(server.otlp_http_port)) == 9
    finally:
        server.stop(sig)
    assert wait_until(lambda: not demo_processes(server.otlp_http_port), 30)


def _demo_command(server: ServerProcess, seconds: int) -> list[str]:
    return [sys.executable, "-m", "clew.cli", "demo", "--endpoint", server.otlp_http_url,
            "--rps", "10", "--duration", str(seconds), "--seed", "5"]  # fmt: skip


def test_a_silent_demo_service_fires_an_alert_and_recovers(tmp_path: Path) -> None:
    """The shop stops: every service it ran goes silent and each fires an alert; the shop runs
    again: each alert resolves (seen while it runs: stopped, it would fall silent again)."""
    config = tmp_path / "clew.toml"
    config.write_text('[alerting]\nsilent_after = "6s"\nevaluate_every = "1s"\nresolve_after = "2s"\n')
    server = ServerProcess(tmp_path / "data", extra_args=["--config", str(config)]).start()
    shop = {"frontend", "checkout", "cart", "payment"}

    def in_state(state: str) -> bool:
        listed = httpx.get(f"{server.http_url}/api/v1/alerts", timeout=30).json()["alerts"]
        return shop <= {
            a["labels"]["service"] for a in listed if a["name"].startswith("silent:") and a["state"] == state
        }

    try:
        first = subprocess.run(_demo_command(server, 4), capture_output=True, text=True, timeout=120)
        assert first.returncode == 0, first.stderr
        assert wait_until(lambda: in_state("firing"), 60)
        again = subprocess.Popen(
            _demo_command(server, 30), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            assert wait_until(lambda: in_state("resolved"), 60)
        finally:
            again.send_signal(signal.SIGTERM)
            again.wait(timeout=60)
    finally:
        server.stop()


def test_every_span_a_service_logged_in_is_stored(demo_server: ServerProcess) -> None:
    """Nothing of the run is lost at its end: each record's span arrived, the last flows' included
    (the services flush on SIGTERM before they exit)."""
    records = httpx.get(
        f"{demo_server.http_url}/api/v1/logs", params={"q": "", "limit": 1000}, timeout=60
    ).json()["logs"]
    assert len(records) > 100
    stored: dict[str, set[str]] = {}
    for record in records:
        if record["traceId"] not in stored:
            stored[record["traceId"]] = {s["spanId"] for s in spans(demo_server, record["traceId"])}
    lost = [r for r in records if r["spanId"] not in stored[r["traceId"]]]
    assert not lost, [(r["service"], r["body"]) for r in lost]
