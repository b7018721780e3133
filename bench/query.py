"""Query latency over 10 million stored spans (1 million traces of 10 spans), through a real server.

    python bench/query.py [--spans 10000000] [--data-dir bench-data/query] [--runs 200] [--settle final]

The workload is generated inside the engine (INSERT ... SELECT over numbers(), seeded hashes), since
ingest has its own benchmark (bench/ingest.py) and pushing 10 M spans through OTLP would take minutes
before the first query. It has the shape of real traffic: traces of 10 spans in a binary call tree
over 20 services, 5 operations each, spread evenly over the last 24 hours, ~2% errors, typed
attributes (int status code, string method and customer tier) and resource attributes.

Then `clew serve` opens the data directory and the script times, over HTTP as a user sees them:
trace by id (Jaeger and native API, and native with a time hint of the hour around the trace, as
Grafana's Tempo data source sends its range), a search with service + attribute + duration filters over the
last hour (query language and Jaeger API), and /api/dependencies over 24 hours. Figures are printed;
record them in bench/RESULTS.md.

The spans are laid out as the default retention tiers leave them (store/clickhouse.py PARTITION_KEY):
the last two hours in partitions by received hour, older ones settled in one partition per day, as
if tail sampling had kept every trace. The server runs with tail sampling off, or the retention would
reduce those hours to their sampled traces: the figures are for 10 M stored spans.

`--settle final` (the default) merges each partition into one part before the queries, the best case;
`--settle background` only waits until the engine's own merges have stopped, which leaves several parts
a partition as a server's steady inserts do (a lookup reads each).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clew.store.schema import SETTLED  # noqa: E402
from tests.conftest import ServerProcess  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from merges import wait_for_merges  # noqa: E402

SERVICES = 20
TRACE_SPANS = 10
DAY_NS = 86_400 * 10**9

GENERATE = """
INSERT INTO clew.spans (tenant, trace_id, span_id, parent_span_id, name, kind, start_time, duration,
    status_code, status_message, service_name, resource_string, attributes_string, attributes_int, tier_hour)
SELECT
    'default',
    toFixedString(unhex(concat(leftPad(hex(cityHash64(t, {seed:UInt64})), 16, '0'),
                               leftPad(hex(t), 16, '0'))), 16) AS trace_id,
    toFixedString(unhex(leftPad(hex(cityHash64(t, k, {seed:UInt64})), 16, '0')), 8),
    if(k = 0, '', unhex(leftPad(hex(cityHash64(t, intDiv(k - 1, 2), {seed:UInt64})), 16, '0'))),
    concat(service, if(k = 0, ' GET /', ' op'), toString(cityHash64(n, 2) % 5)),
    if(k = 0, 2, if(k % 2 = 1, 3, 2)),
    fromUnixTimestamp64Nano(toInt64({end:Int64} - t * {spacing:Int64} + k * 1000000), 'UTC'),
    (cityHash64(n, 4) % 400 + 1) * 1000000 * if(k = 0, 3, 1),
    if(err, 2, 0),
    if(err, 'upstream failed', ''),
    service,
    map('service.name', service, 'host.name', concat('host-', toString(t % 50))),
    map('http.method', ['GET', 'POST', 'PUT'][cityHash64(n, 5) % 3 + 1],
        'customer.tier', ['free', 'pro', 'enterprise'][cityHash64(n, 6) % 3 + 1]),
    map('http.status_code', if(err, 500, 200)),
    -- the default retention tiers' steady state: the last two hours by received hour, the rest settled
    if(t * {spacing:Int64} > 7200000000000, SETTLED_TIER,
       toStartOfHour(fromUnixTimestamp64Nano(toInt64({end:Int64} - t * {spacing:Int64}), 'UTC')))
FROM (
    SELECT number AS n, intDiv(number, {trace_spans:UInt64}) + {first:UInt64} AS t,
           number % {trace_spans:UInt64} AS k,
           concat('svc-', toString(if(k = 0, 0, cityHash64(t, k, 1) % {services:UInt64}))) AS service,
           cityHash64(n, 3) % 50 = 0 AS err
    FROM numbers({count:UInt64})
)
""".replace(  # spans received when they started, settled as the store settles them
    "SETTLED_TIER",
    SETTLED.replace(
        "received_at", "fromUnixTimestamp64Nano(toInt64({end:Int64} - t * {spacing:Int64}), 'UTC')"
    ),
)


def generate(
    data_dir: Path, spans: int, seed: int, samples: int, settle: str = "final"
) -> tuple[int, float, list[tuple[str, int]]]:
    """Fill `data_dir` unless it already holds this workload.

    Returns the workload's end (ns), the seconds generation took, and `samples` trace ids to look up
    with their root span's start (ns).
    """
    from clew.assembly import open_embedded

    marker = data_dir / "bench-workload.json"
    if marker.exists():
        meta = json.loads(marker.read_text())
        if meta["spans"] == spans and meta["seed"] == seed and len(meta.get("roots", [])) >= samples:
            return int(meta["end"]), 0.0, [(t, int(start)) for t, start in meta["roots"][:samples]]
        sys.exit(f"{data_dir} holds another workload; remove it first")
    store = open_embedded(data_dir)
    end = time.time_ns()
    traces = spans // TRACE_SPANS
    spacing = DAY_NS // traces
    began = time.perf_counter()
    chunk = 1_000_000
    for first in range(0, spans, chunk):
        count = min(chunk, spans - first)
        store.conn.command(
            GENERATE,
            {
                "seed": seed,
                "end": end,
                "spacing": spacing,
                "trace_spans": TRACE_SPANS,
                "first": first // TRACE_SPANS,
                "services": SERVICES,
                "count": count,
            },
        )
        print(f"  generated {first + count:,} spans", file=sys.stderr)
    took = time.perf_counter() - began
    # no query is timed against a merge in flight
    if settle == "final":
        store.conn.command("OPTIMIZE TABLE clew.spans FINAL")
    else:
        wait_for_merges(store.conn)
    parts = store.conn.query(
        "SELECT count() FROM system.parts WHERE database = 'clew' AND table = 'spans' AND active"
    )
    print(f"  {parts.column(0)[0].as_py()} parts after settling ({settle})", file=sys.stderr)
    assert store.reader.span_count() == spans
    roots = store.conn.query(
        "SELECT lower(hex(trace_id)), toUnixTimestamp64Nano(start_time) FROM clew.spans "
        "WHERE parent_span_id = '' ORDER BY cityHash64(trace_id, {seed:UInt64}) LIMIT {n:UInt32}",
        {"seed": seed, "n": samples},
    )
    ids = list(zip(roots.column(0).to_pylist(), roots.column(1).to_pylist(), strict=True))
    store.close()
    marker.write_text(json.dumps({"spans": spans, "seed": seed, "end": end, "roots": ids}))
    return end, took, ids


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def timed(
    client: httpx.Client, url: str, params: dict[str, str] | None = None
) -> tuple[float, httpx.Response]:
    began = time.perf_counter()
    response = client.get(url, params=params)
    took = (time.perf_counter() - began) * 1000
    response.raise_for_status()
    return took, response


def report(name: str, times: list[float], note: str = "") -> None:
    print(
        f"{name:<46} n={len(times):<4} p50={percentile(times, 50):7.1f} ms  "
        f"p95={percentile(times, 95):7.1f} ms  p99={percentile(times, 99):7.1f} ms  {note}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--spans", type=int, default=10_000_000)
    parser.add_argument("--data-dir", type=Path, default=Path("bench-data/query"))
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--settle", choices=("final", "background"), default="final")
    args = parser.parse_args()

    # three ids a run: each lookup reads traces of its own, so none reads what another just cached
    end, took, sample_ids = generate(args.data_dir, args.spans, args.seed, 3 * args.runs, args.settle)
    if took:
        print(f"workload: {args.spans:,} spans generated in {took:.1f} s ({args.spans / took:,.0f} spans/s)")
    traces = args.spans // TRACE_SPANS
    toml = args.data_dir.parent / f"{args.data_dir.name}-clew.toml"
    toml.write_text("[sampling]\nenabled = false\n")
    config = ["--config", str(toml)]
    server = ServerProcess(args.data_dir, extra_args=config).start(timeout=300)
    try:
        with httpx.Client(base_url=server.http_url, timeout=120) as client:
            # warm-up: the first query loads marks and the primary index
            timed(client, "/api/services")
            trace_ids = sample_ids
            print(
                f"data: {args.spans:,} spans, {traces:,} traces over 24 h; {len(trace_ids)} trace ids sampled"
            )

            by_id_jaeger, by_id_native, by_id_hinted = [], [], []
            for (jaeger_id, _), (native_id, _), (hinted_id, start) in zip(
                trace_ids[0::3], trace_ids[1::3], trace_ids[2::3], strict=True
            ):
                ms, response = timed(client, f"/api/traces/{jaeger_id}")
                assert len(response.json()["data"][0]["spans"]) == TRACE_SPANS
                by_id_jaeger.append(ms)
                ms, _ = timed(client, f"/api/v1/traces/{native_id}")
                by_id_native.append(ms)
                hint = {"start": f"{start / 1e9 - 1800:.3f}", "end": f"{start / 1e9 + 1800:.3f}"}
                ms, response = timed(client, f"/api/v1/traces/{hinted_id}", hint)
                spans = [
                    s
                    for rs in response.json()["resourceSpans"]
                    for ss in rs["scopeSpans"]
                    for s in ss["spans"]
                ]
                assert len(spans) == TRACE_SPANS
                by_id_hinted.append(ms)
            report("trace by id, Jaeger /api/traces/{id}", by_id_jaeger, "(target p50 < 20, p99 < 100)")
            report("trace by id, native /api/v1/traces/{id}", by_id_native)
            report("trace by id, native, the hour around it", by_id_hinted, "(?start=&end=: a time hint)")

            search_native, search_jaeger, hits = [], [], 0
            now_s = end / 1e9
            fewer = max(args.runs // 4, 10)  # the searches and lists: a quarter of the lookups' runs
            for i in range(fewer):
                service = f"svc-{1 + i % (SERVICES - 1)}"
                q = f'{{ service = "{service}" && span.customer.tier = "pro" && duration > 300ms }}'
                ms, response = timed(
                    client,
                    "/api/v1/search",
                    {"q": q, "start": str(now_s - 3600), "end": str(now_s), "limit": "20"},
                )
                hits += len(response.json()["traces"])
                search_native.append(ms)
                ms, _ = timed(
                    client,
                    "/api/traces",
                    {
                        "service": service,
                        "tags": json.dumps({"customer.tier": "pro"}),
                        "minDuration": "300ms",
                        "start": str(int((now_s - 3600) * 1e6)),
                        "end": str(int(now_s * 1e6)),
                        "limit": "20",
                    },
                )
                search_jaeger.append(ms)
            report(
                "search service+attribute+duration, last hour",
                search_native,
                f"(query language; {hits / len(search_native):.0f} traces/answer; target p95 < 500)",
            )
            report("same search, Jaeger /api/traces", search_jaeger)

            services = [timed(client, "/api/services")[0] for _ in range(fewer)]
            report("/api/services", services, "(Jaeger's; what Grafana and the UI ask first)")
            operations = [
                timed(client, f"/api/services/svc-{1 + i % (SERVICES - 1)}/operations")[0]
                for i in range(fewer)
            ]
            report("/api/services/{service}/operations", operations)

            deps = [dependencies(client, end) for _ in range(11)]
            edges = len(deps[-1][1]["data"])
            print(
                f"/api/dependencies over 24 h, first call (joins 144 ten-minute buckets): {deps[0][0]:.1f} ms"
            )
            report(
                "/api/dependencies over 24 h, later calls",
                [ms for ms, _ in deps[1:]],
                f"({edges} edges; target < 1000)",
            )
    finally:
        server.stop()
    # the buckets computed above are persisted: a restarted server must not join the day again
    server = ServerProcess(args.data_dir, extra_args=config).start(timeout=300)
    try:
        with httpx.Client(base_url=server.http_url, timeout=120) as client:
            ms, answer = dependencies(client, end)
            assert answer == deps[-1][1], "the restarted server answered other dependencies"
            print(f"/api/dependencies over 24 h, first call after a restart: {ms:.1f} ms (target < 1000)")
    finally:
        server.stop()


def dependencies(client: httpx.Client, end: int) -> tuple[float, dict]:
    ms, response = timed(
        client, "/api/dependencies", {"endTs": str(end // 10**6 + 1), "lookback": str(DAY_NS // 10**6)}
    )
    return ms, response.json()


if __name__ == "__main__":
    main()
