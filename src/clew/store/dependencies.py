"""Calls between services, from parent/child spans, computed per hour and kept while the hour is unchanged.

Joining every span of a day with its parent takes seconds at 10 M spans (a hash join over all of them),
so the answer is assembled from hourly buckets: a call belongs to the hour its child span starts in,
and its parent must start at most an hour before that hour. A full hour is computed once and reused
while the span counts of it and of the hour before stay the same (late or imported spans change them,
so the bucket is computed again). The partial hours at both ends of a window are always computed.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict

from clew.store.base import Connection

HOUR = 3600 * 10**9
MAX_CACHED_HOURS = 24 * 90  # per process; an evicted hour is simply computed again

Edges = dict[tuple[str, str], int]


def _edges_sql(db: str) -> str:
    """Edges per child segment. A segment starts at max(hour, window start) and ends at min(next hour,
    window end); `cityHash64` join keys keep the hash table small (two spans colliding: ~1e-19)."""
    return (
        "SELECT c.seg AS seg, p.service_name AS parent, c.service_name AS child, count() AS calls FROM "
        "(SELECT cityHash64(trace_id, span_id) AS k, service_name, toUnixTimestamp64Nano(start_time) AS ns "
        f"FROM {db}.spans WHERE tenant = {{tenant:String}} "
        "AND start_time >= fromUnixTimestamp64Nano({parents_from:Int64}, 'UTC') "
        "AND start_time <= fromUnixTimestamp64Nano({end:Int64}, 'UTC')) AS p "
        "INNER JOIN "
        "(SELECT cityHash64(trace_id, parent_span_id) AS k, service_name, "
        "greatest(intDiv(toUnixTimestamp64Nano(start_time), {hour:Int64}) * {hour:Int64}, {start:Int64}) AS seg, "
        "least(intDiv(toUnixTimestamp64Nano(start_time), {hour:Int64}) * {hour:Int64} + {hour:Int64}, "
        "{end:Int64} + 1) AS seg_end "
        f"FROM {db}.spans WHERE tenant = {{tenant:String}} AND parent_span_id != '' "
        "AND start_time >= fromUnixTimestamp64Nano({start:Int64}, 'UTC') "
        "AND start_time <= fromUnixTimestamp64Nano({end:Int64}, 'UTC') "
        "AND intDiv(toUnixTimestamp64Nano(start_time), {hour:Int64}) * {hour:Int64} IN {hours:Array(Int64)}) AS c "
        "ON c.k = p.k "
        "WHERE p.service_name != c.service_name AND p.ns >= c.seg - {hour:Int64} AND p.ns < c.seg_end "
        "GROUP BY seg, parent, child"
    )


class DependencyGraph:
    """Answers `dependencies(start, end)` for one store; the cache is per process and per tenant."""

    def __init__(self, conn: Connection, db: str) -> None:
        self.conn, self.db = conn, db
        self._sql = _edges_sql(db)
        self._cache: OrderedDict[tuple[str, int], tuple[tuple[int, int], Edges]] = OrderedDict()
        self._lock = threading.Lock()

    def dependencies(self, start: int, end: int, tenant: str) -> list[tuple[str, str, int]]:
        if end < start:
            return []
        counts = self._hour_counts(start, end, tenant)
        first_full = -(-start // HOUR) * HOUR
        total: Counter[tuple[str, str]] = Counter()
        to_compute: list[int] = []  # hour starts whose children must be joined now
        fingerprints: dict[int, tuple[int, int]] = {}
        for hour in sorted(h for h, n in counts.items() if n and start // HOUR * HOUR <= h <= end):
            if hour >= first_full and hour + HOUR - 1 <= end:
                fingerprint = (counts.get(hour - HOUR, 0), counts[hour])
                with self._lock:
                    cached = self._cache.get((tenant, hour))
                    if cached is not None:
                        self._cache.move_to_end((tenant, hour))
                if cached is not None and cached[0] == fingerprint:
                    total.update(cached[1])
                    continue
                fingerprints[hour] = fingerprint
            to_compute.append(hour)
        if to_compute:
            computed = self._compute(start, end, tenant, to_compute)
            for hour in to_compute:
                seg = max(hour, start)
                edges = computed.get(seg, {})
                total.update(edges)
                if hour in fingerprints:
                    self._remember((tenant, hour), (fingerprints[hour], edges))
        return sorted((p, c, n) for (p, c), n in total.items())

    def _hour_counts(self, start: int, end: int, tenant: str) -> dict[int, int]:
        table = self.conn.query(
            "SELECT intDiv(toUnixTimestamp64Nano(start_time), {hour:Int64}) * {hour:Int64} AS h, count() "
            f"FROM {self.db}.spans WHERE tenant = {{tenant:String}} "
            "AND start_time >= fromUnixTimestamp64Nano({lo:Int64}, 'UTC') "
            "AND start_time <= fromUnixTimestamp64Nano({end:Int64}, 'UTC') GROUP BY h",
            {"hour": HOUR, "tenant": tenant, "lo": start // HOUR * HOUR - HOUR, "end": end},
        )
        return dict(zip(*(c.to_pylist() for c in table.columns), strict=True))

    def _compute(self, start: int, end: int, tenant: str, hours: list[int]) -> dict[int, Edges]:
        table = self.conn.query(
            self._sql,
            {
                "tenant": tenant,
                "hour": HOUR,
                "start": start,
                "end": end,
                "parents_from": max(min(hours), start // HOUR * HOUR) - HOUR,
                "hours": "[" + ",".join(str(h) for h in hours) + "]",
            },
        )
        out: dict[int, Edges] = {}
        for seg, parent, child, calls in zip(*(c.to_pylist() for c in table.columns), strict=True):
            out.setdefault(int(seg), {})[(str(parent), str(child))] = int(calls)
        return out

    def _remember(self, key: tuple[str, int], value: tuple[tuple[int, int], Edges]) -> None:
        with self._lock:
            self._cache[key] = value
            self._cache.move_to_end(key)
            while len(self._cache) > MAX_CACHED_HOURS:
                self._cache.popitem(last=False)

    def forget(self) -> None:
        """After a purge: counts may come back to the same numbers with other spans."""
        with self._lock:
            self._cache.clear()
