"""Ingest into a ClickHouse server: where the CPU of a span goes when clew and the engine are separate
processes (the figures docs/deployment.md sizes a cluster with).

Starts the test suite's ClickHouse server (`tests/chserver.py`: ClickHouse's HTTP interface answered
by the ClickHouse engine, chdb, in its own process), a `clew serve --storage clickhouse://...` on it,
sends OTLP/HTTP protobuf requests over K connections (as `bench/ingest.py`) and reports spans/s to
committed with the CPU seconds of each process per span. Then the same payloads to a `clew serve`
on the embedded engine, for the ratio. Usage: python bench/server_store.py [--spans N] [--connections K]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import LISTENING, PORT, send_all, server_cpu, wait_committed  # noqa: E402
from workload import requests  # noqa: E402


def clew(data_dir: str, storage: str) -> tuple[subprocess.Popen[str], dict[str, int]]:
    cmd = [sys.executable, "-m", "clew.cli", "serve", "--data-dir", data_dir, "--storage", storage]
    cmd += ["--otlp-grpc-port", "0", "--otlp-http-port", "0", "--zipkin-port", "0"]
    cmd += ["--http-port", "0", "--tempo-port", "0"]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if LISTENING.search(line):
            return proc, {name: int(port) for name, port in PORT.findall(line)}
    raise SystemExit("clew serve did not start")


def run(
    payloads: list[bytes], data_dir: str, storage: str, k: int, engine_pid: int | None
) -> dict[str, float]:
    proc, ports = clew(data_dir, storage)
    try:
        before = server_cpu(proc.pid), server_cpu(engine_pid) if engine_pid else 0.0
        started = time.perf_counter()
        _, retries = send_all(f"http://127.0.0.1:{ports['otlp-http']}/v1/traces", payloads, k)
        wait_committed(ports["http"])
        elapsed = time.perf_counter() - started
        after = server_cpu(proc.pid), server_cpu(engine_pid) if engine_pid else 0.0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    return {
        "seconds": elapsed,
        "clew_cpu": after[0] - before[0],
        "engine_cpu": after[1] - before[1],
        "retries": retries,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spans", type=int, default=300_000)
    parser.add_argument("--spans-per-request", type=int, default=512)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    payloads = list(requests(42, args.spans, args.spans_per_request, time.time_ns()))
    spans = args.spans
    with tempfile.TemporaryDirectory() as tmp:
        engine = subprocess.Popen(
            [sys.executable, "-m", "tests.chserver", os.path.join(tmp, "engine")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=tmp,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        assert engine.stdout is not None and engine.stdin is not None
        port = int(engine.stdout.readline().split()[1])
        try:
            server = run(
                payloads,
                os.path.join(tmp, "a"),
                f"clickhouse://127.0.0.1:{port}/bench",
                args.connections,
                engine.pid,
            )
        finally:
            engine.stdin.close()
            engine.wait(60)
        embedded = run(payloads, os.path.join(tmp, "b"), "embedded", args.connections, None)
    for name, r in (("server", server), ("embedded", embedded)):
        print(
            f"{name:9} {spans / r['seconds']:9,.0f} spans/s to committed; clew {r['clew_cpu'] / spans * 1e6:5.1f} us "
            f"a span, engine process {r['engine_cpu'] / spans * 1e6:5.1f} us a span; {r['retries']:.0f} 503s"
        )


if __name__ == "__main__":
    main()
