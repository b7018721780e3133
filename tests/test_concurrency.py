"""Reads and writes at the same time on one server: every write is acknowledged, every read is right."""

from __future__ import annotations

import os
import threading

import httpx

from tests.conftest import canonical_spans
from tests.test_durability import SPANS_PER_REQUEST, _request


def test_reads_during_writes(server):
    first = os.urandom(16)
    url = f"{server.otlp_http_url}/v1/traces"
    headers = {"Content-Type": "application/x-protobuf"}
    assert httpx.post(url, content=_request(first), headers=headers).status_code == 200

    statuses: list[int] = []
    reads: list[int] = []
    written: list[bytes] = []

    def write() -> None:
        with httpx.Client(timeout=60) as client:
            for _ in range(40):
                trace_id = os.urandom(16)
                statuses.append(client.post(url, content=_request(trace_id), headers=headers).status_code)
                written.append(trace_id)

    def read() -> None:
        for _ in range(40):
            reads.append(len(canonical_spans(server.trace(first.hex()))))

    threads = [threading.Thread(target=write) for _ in range(3)] + [
        threading.Thread(target=read) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 120
    assert reads == [SPANS_PER_REQUEST] * 80
    for trace_id in written[::10]:
        assert len(canonical_spans(server.trace(trace_id.hex()))) == SPANS_PER_REQUEST
