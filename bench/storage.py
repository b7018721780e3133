"""Bytes on disk per span, for two workloads, through the real insert (pipeline on, default settings).

    python bench/storage.py [--spans 1000000] [--workload shop|tracegen|both] [--columns]

- `shop`: bench/workload.py, the ingest benchmark's traffic: 8 services, traces of 5-30 spans,
  6-12 typed attributes a span (user and session ids, routes, statements, ...), ~2% errors.
- `tracegen`: shaped like Jaeger's `tracegen`, the data of Jaeger's published ClickHouse figures: a
  trace is 1 server span and 9 client children, each span with 11 string attributes whose keys and
  values are drawn in turn from 97 keys and 1,000 values.

Spans go through `clew.assembly.open_embedded` (the server's insert, with its processors) in requests
of 1,000 spans grouped 50 to an insert; then parts are merged (`OPTIMIZE ... FINAL`, as a quiet table
ends up) and the bytes of the spans table's active parts, projections included, are divided by the
spans. `--columns` lists the largest columns.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from workload import requests as shop_requests  # noqa: E402

from clew.assembly import open_embedded  # noqa: E402
from clew.core.model import OtlpBatch  # noqa: E402
from clew.receivers.otlp import decode_protobuf  # noqa: E402

KEYS = [f"attr_{i:02d}" for i in range(97)]
VALUES = [f"value_{i:03d}" for i in range(1000)]


def tracegen_requests(seed: int, total: int, per_request: int, start_ns: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    made = turn = 0
    now = start_ns
    while made < total:
        request = ExportTraceServiceRequest()
        rs = request.resource_spans.add()
        rs.resource.attributes.add(key="service.name").value.string_value = "tracegen"
        spans = rs.scope_spans.add().spans
        while len(spans) < per_request and made + len(spans) < total:
            trace_id = rng.getrandbits(128).to_bytes(16, "big")
            root = rng.getrandbits(64).to_bytes(8, "big")
            for i in range(10):
                span = spans.add(
                    trace_id=trace_id,
                    span_id=root if i == 0 else rng.getrandbits(64).to_bytes(8, "big"),
                    parent_span_id=b"" if i == 0 else root,
                    name="lets-go" if i == 0 else "okey-dokey-0",
                    kind=2 if i == 0 else 3,
                    start_time_unix_nano=now + i * 1000,
                    end_time_unix_nano=now + i * 1000 + 123_000,
                )
                for _ in range(11):
                    kv = span.attributes.add(key=KEYS[turn % 97])
                    kv.value.string_value = VALUES[turn % 1000]
                    turn += 1
            now += 1_000_000
        made += len(spans)
        yield request.SerializeToString()


def measure(workload: str, spans: int, columns: bool) -> float:
    generate = shop_requests if workload == "shop" else tracegen_requests
    payloads = list(generate(11, spans, 1000, time.time_ns() - 3600 * 10**9))
    with tempfile.TemporaryDirectory() as tmp:
        store = open_embedded(Path(tmp) / "data")
        try:
            began = time.perf_counter()
            for i in range(0, len(payloads), 50):
                store.writer.write(OtlpBatch.concat([decode_protobuf(p).batch for p in payloads[i : i + 50]]))
            took = time.perf_counter() - began
            store.conn.command("OPTIMIZE TABLE clew.spans FINAL")
            stored = store.reader.span_count()
            table = store.conn.query(
                "SELECT sum(bytes_on_disk), count() FROM system.parts "
                "WHERE database = 'clew' AND table = 'spans' AND active"
            )
            on_disk, parts = (int(c[0].as_py()) for c in table.columns)
            projections = store.conn.query(
                "SELECT name, sum(bytes_on_disk) FROM system.projection_parts "
                "WHERE database = 'clew' AND table = 'spans' AND active GROUP BY name"
            ).to_pylist()
            print(
                f"{workload}: {stored:,} spans, {on_disk:,} bytes in {parts} parts: "
                f"{on_disk / stored:.1f} bytes a span (inserted at {stored / took:,.0f} spans/s in-process)"
            )
            for p in projections:
                bytes_ = int(p["sum(bytes_on_disk)"])
                print(f"  of which projection {p['name']}: {bytes_:,} bytes ({bytes_ / stored:.1f} a span)")
            if columns:
                rows = store.conn.query(
                    "SELECT column AS name, sum(column_data_compressed_bytes) AS c, sum(column_data_uncompressed_bytes) AS u "
                    "FROM system.parts_columns WHERE database = 'clew' AND table = 'spans' AND active "
                    "GROUP BY column ORDER BY c DESC LIMIT 25"
                ).to_pylist()
                for r in rows:
                    c, u = int(r["c"]), int(r["u"])
                    print(f"  {r['name']:<24} {c / stored:7.1f} B/span  (x{u / max(c, 1):.1f})")
            return on_disk / stored
        finally:
            store.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--workload", choices=["shop", "tracegen", "both"], default="both")
    parser.add_argument("--columns", action="store_true")
    args = parser.parse_args()
    for workload in ("shop", "tracegen") if args.workload == "both" else (args.workload,):
        measure(workload, args.spans, args.columns)


if __name__ == "__main__":
    main()
