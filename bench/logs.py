"""Logs benchmark: OTLP/HTTP protobuf log requests over K keep-alive connections to a real `clew serve`
(default configuration: write-ahead log, redaction, attribute limits), then bytes a record on disk and
the read paths (a trace's logs, searches) over what was stored.

The workload is shop-like: 10 services, severities mostly INFO, bodies from message templates with
ids, amounts and durations in them, 3-6 attributes (code location, order ids, routes), 85% of records
inside a trace (about five records a trace), times increasing over the last half hour.
Usage: python bench/logs.py [--records N] [--records-per-request 512] [--connections 4,8]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median, quantiles

import httpx
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import launch, send_all, server_cpu, wait_committed  # noqa: E402

SERVICES = [
    "frontend",
    "auth",
    "catalog",
    "cart",
    "checkout",
    "payment",
    "inventory",
    "notify",
    "search",
    "ads",
]
TEMPLATES = [
    (9, "placing order {order}: {n} item(s), total {amount} EUR"),
    (9, "charging card ending {card}: {amount} EUR"),
    (9, "reserved stock for SKU-{sku} x{n}"),
    (9, "GET /products/{sku} served from cache in {ms} ms"),
    (5, "cache miss for product {sku}, loading from the catalog"),
    (9, "signed in u-{user} from the web app"),
    (13, "slow answer from acme-pay: {ms} ms"),
    (13, "retrying order {order} after {ms} ms (attempt {n})"),
    (17, "payment declined: acme-pay answered 503 for order {order}"),
    (17, "inventory reservation failed for SKU-{sku}: RuntimeError('stock service unavailable')"),
]
WEIGHTS = [20, 12, 12, 18, 10, 8, 6, 5, 5, 4]
ROUTES = ["/checkout", "/cart", "/products/{id}", "/signin", "/charge", "/reserve"]


def workload(seed: int, total: int, per_request: int, now: int) -> list[bytes]:
    rng = random.Random(seed)
    start = now - 1800 * 10**9
    step = 1800 * 10**9 // max(total, 1)
    out = []
    trace, span, left = b"", b"", 0
    t = start
    for first in range(0, total, per_request):
        request = ExportLogsServiceRequest()
        by_service: dict[str, object] = {}
        for _ in range(min(per_request, total - first)):
            service = rng.choice(SERVICES)
            if service not in by_service:
                rl = request.resource_logs.add()
                for key, value in (
                    ("service.name", service),
                    ("service.version", "1.4.2"),
                    ("host.name", f"{service}-7d9f"),
                ):
                    rl.resource.attributes.add(key=key).value.string_value = value
                sl = rl.scope_logs.add()
                sl.scope.name = f"shop.{service}"
                by_service[service] = sl
            sl = by_service[service]
            severity, template = rng.choices(TEMPLATES, WEIGHTS)[0]
            t += step
            record = sl.log_records.add(
                time_unix_nano=t, observed_time_unix_nano=t + rng.randrange(10**6), severity_number=severity
            )  # type: ignore[attr-defined]
            record.severity_text = {5: "DEBUG", 9: "INFO", 13: "WARN", 17: "ERROR"}[severity]
            record.body.string_value = template.format(
                order=rng.randrange(10**6), n=rng.randrange(1, 5), amount=f"{rng.uniform(5, 500):.2f}",
                card=rng.randrange(1000, 9999), sku=rng.randrange(10**4), ms=rng.randrange(1, 3000),
                user=rng.randrange(10**5),
            )  # fmt: skip
            if rng.random() < 0.85:
                if left == 0:
                    trace, left = rng.randbytes(16), rng.randrange(2, 9)
                if rng.random() < 0.5 or not span:
                    span = rng.randbytes(8)
                record.trace_id, record.span_id, record.flags = trace, span, 1
                left -= 1
            attrs = [
                ("code.file.path", f"/app/{service}/handlers.py"),
                ("code.function.name", rng.choice(["place", "charge", "reserve", "serve", "retry"])),
            ]
            for key, value in attrs:
                record.attributes.add(key=key).value.string_value = value
            record.attributes.add(key="code.line.number").value.int_value = rng.randrange(20, 400)
            if rng.random() < 0.5:
                record.attributes.add(key="http.route").value.string_value = rng.choice(ROUTES)
            if rng.random() < 0.4:
                record.attributes.add(key="order.id").value.int_value = rng.randrange(10**6)
        out.append(request.SerializeToString())
    return out


def timed(fn: Callable[[], None], n: int) -> tuple[float, float]:
    """p50 and p99 in ms of `n` calls."""
    times = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return median(times), quantiles(times, n=100)[98] if len(times) > 1 else times[0]


def reads(base: str, trace_ids: list[str], now: int) -> dict[str, tuple[float, float]]:
    """p50 and p99 of a trace's logs and of a few searches over the last hour."""
    rng = random.Random(1)
    window = {"start": (now - 3600 * 10**9) / 1e9, "end": now / 1e9 + 60}
    with httpx.Client(timeout=60) as client:

        def trace_logs() -> None:
            r = client.get(f"{base}/api/v1/traces/{rng.choice(trace_ids)}/logs")
            assert r.status_code == 200 and r.json()["logs"], r.text[:200]

        def search(q: str) -> Callable[[], None]:
            def run() -> None:
                r = client.get(f"{base}/api/v1/logs", params={"q": q, "limit": 100, **window})
                assert r.status_code == 200, r.text[:200]

            return run

        results = {"a trace's logs": timed(trace_logs, 100)}
        for q in ("severity:error service:payment", "declined", "order.id>990000", "http.route=/charge 4242"):
            results[f"search `{q}`"] = timed(search(q), 20)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--records-per-request", type=int, default=512)
    parser.add_argument("--connections", default="4,8")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    now = time.time_ns()
    payloads = workload(args.seed, args.records, args.records_per_request, now)
    sizes = sum(len(p) for p in payloads)
    print(
        f"workload: {args.records} log records in {len(payloads)} requests, {sizes / args.records:.0f} bytes a record as OTLP protobuf"
    )
    trace_ids = sorted(
        {
            r.trace_id.hex()
            for p in payloads[:50]
            for rl in ExportLogsServiceRequest.FromString(p).resource_logs
            for sl in rl.scope_logs
            for r in sl.log_records
            if r.trace_id
        }  # fmt: skip
    )
    with tempfile.TemporaryDirectory() as tmp:
        for k in [int(x) for x in args.connections.split(",")]:
            data_dir = os.path.join(tmp, f"served-{k}")
            proc, ports = launch(data_dir)
            try:
                cpu = server_cpu(proc.pid)
                started = time.perf_counter()
                _, retries = send_all(f"http://127.0.0.1:{ports['otlp-http']}/v1/logs", payloads, k)
                wait_committed(ports["http"])
                elapsed = time.perf_counter() - started
                cpu = server_cpu(proc.pid) - cpu
                print(
                    f"K={k}: {args.records / elapsed:,.0f} log records/s accepted and committed ({elapsed:.2f}s, "
                    f"{retries} 503 retries); server CPU {cpu / args.records * 1e6:.1f} us a record"
                )
                results = reads(f"http://127.0.0.1:{ports['http']}", trace_ids, now)
                for name, (p50, p99) in results.items():
                    print(f"  {name}: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=120)
            from clew.assembly import open_embedded

            store = open_embedded(data_dir)
            try:
                store.conn.command("OPTIMIZE TABLE clew.logs FINAL")
                row = store.conn.query(
                    "SELECT sum(rows), sum(bytes_on_disk) FROM system.parts "
                    "WHERE database = 'clew' AND table = 'logs' AND active"
                )
                rows, size = (int(c[0].as_py()) for c in row.columns)
            finally:
                store.close()
            check = "all stored" if rows == args.records else f"MISSING {args.records - rows}"
            print(f"  on disk: {size / rows:.1f} bytes a record ({rows} records, {check})")


if __name__ == "__main__":
    main()
