"""Acknowledged spans survive SIGKILL; SIGTERM commits everything; `clew export` reads a stopped store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.conftest import ServerProcess, canonical_spans

SPANS_PER_REQUEST = 25


def _request(trace_id: bytes) -> bytes:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "durable"
    spans = rs.scope_spans.add().spans
    start = time.time_ns()
    for i in range(SPANS_PER_REQUEST):
        span = spans.add(
            trace_id=trace_id,
            span_id=(i + 1).to_bytes(8, "big"),
            name=f"step-{i}",
            start_time_unix_nano=start + i,
            end_time_unix_nano=start + i + 1000,
        )
        span.attributes.add(key="i").value.int_value = i
    return request.SerializeToString()


def push(
    server: ServerProcess, acked: list[str], lock: threading.Lock, stop: threading.Event, requests: int
) -> None:
    """One client: `_request`s over a keep-alive OTLP/HTTP connection, each trace id noted in `acked`
    once answered 200, until `stop`, a failed connection (the server was killed), or `requests` sent."""
    with httpx.Client(timeout=10) as client:
        for _ in range(requests):
            if stop.is_set():
                return
            trace_id = os.urandom(16)
            try:
                response = client.post(
                    f"{server.otlp_http_url}/v1/traces",
                    content=_request(trace_id),
                    headers={"Content-Type": "application/x-protobuf"},
                )
            except httpx.HTTPError:
                return
            if response.status_code == 200:
                with lock:
                    acked.append(trace_id.hex())


@pytest.mark.parametrize("wal", [True, False], ids=["logged", "committed"])
def test_sigkill_loses_no_acknowledged_span(data_dir, wal):
    """Both ways of acknowledging: from the write-ahead log (the default) and after the insert."""
    server = ServerProcess(data_dir, wal=wal).start()
    acked: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    # bounded; the kill normally ends it much sooner
    threads = [threading.Thread(target=push, args=(server, acked, lock, stop, 400)) for _ in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(acked) < 60 and time.monotonic() < deadline:
        time.sleep(0.01)
    server.proc.send_signal(signal.SIGKILL)  # in the middle of the stream
    server.proc.wait(timeout=30)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert len(acked) >= 60, "the stream did not get going"

    restarted = ServerProcess(data_dir, wal=wal).start()
    try:
        for trace_id in acked:
            doc = restarted.trace(trace_id)
            assert doc is not None, f"acknowledged trace {trace_id} lost"
            assert len(canonical_spans(doc)) == SPANS_PER_REQUEST
        # and the store still takes writes
        response = httpx.post(
            f"{restarted.otlp_http_url}/v1/traces",
            content=_request(b"\x42" * 16),
            headers={"Content-Type": "application/x-protobuf"},
        )
        assert response.status_code == 200
    finally:
        restarted.stop()


def _clew(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clew.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_sigterm_commits_and_export_reads_the_stopped_store(data_dir):
    server = ServerProcess(data_dir).start()
    trace_id = b"\x17" * 16
    response = httpx.post(
        f"{server.otlp_http_url}/v1/traces",
        content=_request(trace_id),
        headers={"Content-Type": "application/x-protobuf"},
    )
    assert response.status_code == 200

    busy = _clew("export", trace_id.hex(), "--data-dir", str(data_dir))
    assert busy.returncode != 0
    assert "Is a clew server running on it?" in busy.stderr

    assert server.stop(signal.SIGTERM) == 0
    assert "all accepted spans committed" in "".join(server.output)

    result = _clew("export", trace_id.hex(), "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert list(doc) == ["resourceSpans"]
    spans = canonical_spans(doc)
    assert len(spans) == SPANS_PER_REQUEST
    assert {s["span"]["traceId"] for s in spans.values()} == {trace_id.hex()}
    assert spans["0000000000000005"]["span"]["attributes"] == [{"key": "i", "value": {"intValue": "4"}}]

    missing = _clew("export", "ab" * 16, "--data-dir", str(data_dir))
    assert missing.returncode == 1 and "not found" in missing.stderr
    bad = _clew("export", "xyz", "--data-dir", str(data_dir))
    assert bad.returncode == 1 and "not up to 32 hex characters" in bad.stderr
    nodir = _clew("export", "ab" * 16, "--data-dir", str(data_dir / "nope"))
    assert nodir.returncode != 0 and "does not exist" in nodir.stderr


def test_sigint_stops_cleanly_too(data_dir):
    server = ServerProcess(data_dir).start()
    assert server.stop(signal.SIGINT) == 0
