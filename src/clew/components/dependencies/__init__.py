"""Calls between services, from parent/child spans, computed per 10-minute bucket and kept while the
bucket's inputs are unchanged.

Joining every span of a day with its parent takes seconds at 10 M spans (a hash join over all of them),
so the answer is assembled from buckets: a call belongs to the bucket its child span starts in, and its
parent must start at most an hour before that bucket. A full bucket is computed once and reused while
the span counts of it and of the hour before it stay the same (late or imported spans change them, so
the bucket is computed again). The partial buckets at both ends of a window are always computed.

Computed buckets are also written to a small table (`dependency_buckets`), so that a restart finds
them instead of joining the whole day again on its first call (2.6 s at 10 M spans, bench/RESULTS.md).
They also carry the calls of traces that sampling later removed: the retention computes the buckets of
spans it is about to delete first (`keep`), and a bucket whose counts only fell stays valid.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Sequence

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from clew.components.base import BaseComponent, Context
from clew.components.http import MAX_NS, epoch_param, int_param, jaeger_envelope, tenant
from clew.core.model import DEFAULT_TENANT
from clew.store.connection import Connection
from clew.store.migrations import Migration, steps

BUCKET = 600 * 10**9
LOOKBACK = 3600 * 10**9  # how long before its child's bucket a parent may start
MAX_CACHED_BUCKETS = 6 * 24 * 30  # per process; an evicted bucket is simply computed again

Edges = dict[tuple[str, str], int]

BUCKETS_DDL = """
CREATE TABLE IF NOT EXISTS {db}.dependency_buckets (
    tenant LowCardinality(String),
    bucket Int64,
    fingerprint Array(UInt64),
    edges String,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant, bucket)
"""
DEFAULT_LOOKBACK_MS = 24 * 3600 * 1000
MIGRATIONS = steps("dependencies", ("dependency buckets", [BUCKETS_DDL]))
BUCKET_ROW = "tenant String, bucket Int64, fingerprint Array(UInt64), edges String, version UInt64"


def _edges_sql(db: str) -> str:
    """Edges per child segment. A segment starts at max(bucket, window start) and ends at min(next bucket,
    window end); `cityHash64` join keys keep the hash table small (two spans colliding: ~1e-19)."""
    return (
        "SELECT c.seg AS seg, p.service_name AS parent, c.service_name AS child, count() AS calls FROM "
        "(SELECT cityHash64(trace_id, span_id) AS k, service_name, toUnixTimestamp64Nano(start_time) AS ns "
        f"FROM {db}.spans WHERE tenant = {{tenant:String}} "
        "AND start_time >= fromUnixTimestamp64Nano({lo:Int64} - {lookback:Int64}, 'UTC') "
        "AND start_time <= fromUnixTimestamp64Nano({hi:Int64}, 'UTC')) AS p "
        "INNER JOIN "
        "(SELECT cityHash64(trace_id, parent_span_id) AS k, service_name, "
        "greatest(intDiv(toUnixTimestamp64Nano(start_time), {bucket:Int64}) * {bucket:Int64}, {start:Int64}) AS seg, "
        "least(intDiv(toUnixTimestamp64Nano(start_time), {bucket:Int64}) * {bucket:Int64} + {bucket:Int64}, "
        "{end:Int64} + 1) AS seg_end "
        f"FROM {db}.spans WHERE tenant = {{tenant:String}} AND parent_span_id != '' "
        "AND start_time >= fromUnixTimestamp64Nano({lo:Int64}, 'UTC') "
        "AND start_time <= fromUnixTimestamp64Nano({hi:Int64}, 'UTC') "
        "AND intDiv(toUnixTimestamp64Nano(start_time), {bucket:Int64}) * {bucket:Int64} IN {buckets:Array(Int64)}) AS c "
        "ON c.k = p.k "
        "WHERE p.service_name != c.service_name AND p.ns >= c.seg - {lookback:Int64} AND p.ns < c.seg_end "
        "GROUP BY seg, parent, child"
    )


def _still_valid(computed_from: tuple[int, ...], counts: tuple[int, ...]) -> bool:
    """A bucket holds while no span was added to it or to the hour before it. Spans that went since
    (unsampled traces past the full-fidelity window) leave it valid: it counts them from before."""
    return all(now <= then for now, then in zip(counts, computed_from, strict=True))


def _runs(buckets: list[int]) -> list[list[int]]:
    """Consecutive buckets together: each run joins only the parents an hour before it."""
    runs: list[list[int]] = []
    for bucket in buckets:
        if runs and bucket == runs[-1][-1] + BUCKET:
            runs[-1].append(bucket)
        else:
            runs.append([bucket])
    return runs


class DependencyGraph:
    """Answers `dependencies(start, end)` for one store; the cache is per process and per tenant."""

    def __init__(self, conn: Connection, db: str) -> None:
        self.conn, self.db = conn, db
        self._sql = _edges_sql(db)
        self._cache: OrderedDict[tuple[str, int], tuple[tuple[int, ...], Edges]] = OrderedDict()
        self._lock = threading.Lock()
        self.computed_buckets = 0  # joined in this process, as opposed to found in memory or the table

    def dependencies(self, start: int, end: int, tenant: str) -> list[tuple[str, str, int]]:
        if end < start:
            return []
        counts = self._bucket_counts(start, end, tenant)
        first_full = -(-start // BUCKET) * BUCKET
        per_lookback = LOOKBACK // BUCKET
        total: Counter[tuple[str, str]] = Counter()
        to_compute: list[int] = []  # bucket starts whose children must be joined now
        fingerprints: dict[int, tuple[int, ...]] = {}
        buckets = sorted(b for b, n in counts.items() if n and start // BUCKET * BUCKET <= b <= end)
        self._load(tenant, [b for b in buckets if b >= first_full and b + BUCKET - 1 <= end])
        for bucket in buckets:
            if bucket >= first_full and bucket + BUCKET - 1 <= end:
                fingerprint = tuple(counts.get(bucket - i * BUCKET, 0) for i in range(per_lookback + 1))
                with self._lock:
                    cached = self._cache.get((tenant, bucket))
                    if cached is not None:
                        self._cache.move_to_end((tenant, bucket))
                if cached is not None and _still_valid(cached[0], fingerprint):
                    total.update(cached[1])
                    continue
                fingerprints[bucket] = fingerprint
            to_compute.append(bucket)
        computed: dict[int, Edges] = {}
        self.computed_buckets += len(to_compute)
        for run in _runs(to_compute):
            computed.update(self._compute(start, end, tenant, run))
        for bucket in to_compute:
            edges = computed.get(max(bucket, start), {})
            total.update(edges)
            if bucket in fingerprints:
                self._remember((tenant, bucket), (fingerprints[bucket], edges))
        self._persist(tenant, {b: (f, computed.get(b, {})) for b, f in fingerprints.items()})
        return sorted((p, c, n) for (p, c), n in total.items())

    def keep(self, start: int, end: int, now: int, tenant: str) -> None:
        """Compute the full buckets of children of spans that started in [start, end], before those
        spans are deleted; buckets still filling (after `now`) are left to later calls."""
        first = start // BUCKET * BUCKET
        last = min(-(-(end + LOOKBACK) // BUCKET) * BUCKET, now // BUCKET * BUCKET) - 1
        if last > first:
            self.dependencies(first, last, tenant)

    def drop_before(self, before: int) -> None:
        """Buckets of spans past the long retention."""
        with self._lock:
            for key in [k for k in self._cache if k[1] + BUCKET <= before]:
                del self._cache[key]
        self.conn.command(
            f"DELETE FROM {self.db}.dependency_buckets WHERE bucket + {{b:Int64}} <= {{before:Int64}}",
            {"b": BUCKET, "before": before},
        )

    def _load(self, tenant: str, buckets: list[int]) -> None:
        """Bring persisted buckets that this process does not hold into the in-memory cache."""
        with self._lock:
            missing = [b for b in buckets if (tenant, b) not in self._cache]
        if not missing:
            return
        table = self.conn.query(
            "SELECT bucket, argMax(fingerprint, version), argMax(edges, version) "
            f"FROM {self.db}.dependency_buckets WHERE tenant = {{tenant:String}} "
            "AND bucket >= {lo:Int64} AND bucket <= {hi:Int64} GROUP BY bucket",
            {"tenant": tenant, "lo": missing[0], "hi": missing[-1]},
        )
        for bucket, fingerprint, edges in zip(*(c.to_pylist() for c in table.columns), strict=True):
            value = (tuple(fingerprint), {(p, c): n for p, c, n in json.loads(edges)})
            with self._lock:
                if (tenant, bucket) not in self._cache:
                    self._cache[(tenant, bucket)] = value
            self._trim()

    def _persist(self, tenant: str, buckets: dict[int, tuple[tuple[int, ...], Edges]]) -> None:
        if not buckets:
            return
        version = time.time_ns()
        rows = "".join(
            json.dumps(
                {
                    "tenant": tenant,
                    "bucket": bucket,
                    "fingerprint": list(fingerprint),
                    "edges": json.dumps(sorted([p, c, n] for (p, c), n in edges.items())),
                    "version": version,
                }
            )
            + "\n"
            for bucket, (fingerprint, edges) in buckets.items()
        )
        self.conn.insert_formatted(
            f"INSERT INTO {self.db}.dependency_buckets SELECT * FROM {{source}}",
            "JSONEachRow",
            BUCKET_ROW,
            rows.encode(),
            {},
            {},
        )

    def _bucket_counts(self, start: int, end: int, tenant: str) -> dict[int, int]:
        table = self.conn.query(
            "SELECT intDiv(toUnixTimestamp64Nano(start_time), {bucket:Int64}) * {bucket:Int64} AS b, count() "
            f"FROM {self.db}.spans WHERE tenant = {{tenant:String}} "
            "AND start_time >= fromUnixTimestamp64Nano({lo:Int64}, 'UTC') "
            "AND start_time <= fromUnixTimestamp64Nano({end:Int64}, 'UTC') GROUP BY b",
            {"bucket": BUCKET, "tenant": tenant, "lo": start // BUCKET * BUCKET - LOOKBACK, "end": end},
        )
        return dict(zip(*(c.to_pylist() for c in table.columns), strict=True))

    def _compute(self, start: int, end: int, tenant: str, buckets: list[int]) -> dict[int, Edges]:
        table = self.conn.query(
            self._sql,
            {
                "tenant": tenant,
                "bucket": BUCKET,
                "lookback": LOOKBACK,
                "start": start,
                "end": end,
                "lo": max(buckets[0], start),
                "hi": min(buckets[-1] + BUCKET - 1, end),
                "buckets": list(buckets),
            },
        )
        out: dict[int, Edges] = {}
        for seg, parent, child, calls in zip(*(c.to_pylist() for c in table.columns), strict=True):
            out.setdefault(int(seg), {})[(str(parent), str(child))] = int(calls)
        return out

    def _remember(self, key: tuple[str, int], value: tuple[tuple[int, ...], Edges]) -> None:
        with self._lock:
            self._cache[key] = value
            self._cache.move_to_end(key)
        self._trim()

    def _trim(self) -> None:
        with self._lock:
            while len(self._cache) > MAX_CACHED_BUCKETS:
                self._cache.popitem(last=False)


class Dependencies(BaseComponent):
    """Jaeger's `/api/dependencies` (parent/child call counts), from the cached buckets; the
    retention asks it to `keep` the calls of spans it is about to delete."""

    name = "dependencies"

    def __init__(self, ctx: Context) -> None:
        self.graph = DependencyGraph(ctx.conn, ctx.db)

    def migrations(self) -> Sequence[Migration]:
        return MIGRATIONS

    def dependencies(self, start: int, end: int, tenant: str = DEFAULT_TENANT) -> list[tuple[str, str, int]]:
        """(parent service, child service, calls) for child spans started in [start, end] nanoseconds
        whose parent, in another service, started at most an hour before the child's bucket."""
        return self.graph.dependencies(start, end, tenant)

    def keep(self, start: int, end: int, now: int, tenant: str) -> None:
        self.graph.keep(start, end, now, tenant)

    def drop_before(self, before: int) -> None:
        self.graph.drop_before(before)

    def routes(self) -> Sequence[BaseRoute]:
        async def dependencies(request: Request) -> JSONResponse:
            end = epoch_param(request, "endTs", 10**6) or time.time_ns()
            lookback = (int_param(request, "lookback", 0, MAX_NS // 10**6) or DEFAULT_LOOKBACK_MS) * 10**6
            rows = await asyncio.to_thread(self.dependencies, max(0, end - lookback), end, tenant(request))
            return jaeger_envelope([{"parent": p, "child": c, "callCount": n} for p, c, n in rows])

        return [Route("/api/dependencies", dependencies)]
