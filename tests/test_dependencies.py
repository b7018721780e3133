"""The service graph from cached buckets equals a direct join of every span with its parent, and a
bucket that gains spans after it was computed is computed again."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from clew.assembly import open_embedded
from clew.components.dependencies import BUCKET, LOOKBACK, Dependencies
from clew.receivers.otlp import accept_request

HOUR = 3600 * 10**9
BASE = 1_780_000_000 * 10**9 // HOUR * HOUR  # an hour boundary
SERVICES = ["web", "api", "db", "cache", "queue"]


def traces(rng: random.Random, count: int, first: int, span_hours: float) -> ExportTraceServiceRequest:
    """Random call trees; each span in a random service, children starting after their parent."""
    request = ExportTraceServiceRequest()
    by_service = {s: request.resource_spans.add() for s in SERVICES}
    for s, rs in by_service.items():
        rs.resource.attributes.add(key="service.name").value.string_value = s
        rs.scope_spans.add()
    for _ in range(count):
        trace_id = rng.randbytes(16)
        start = first + rng.randrange(int(span_hours * HOUR))
        spans: list[tuple[bytes, int]] = []
        for _ in range(rng.randint(1, 8)):
            parent = rng.choice(spans) if spans else None
            span_id = rng.randbytes(8)
            begin = (parent[1] + rng.randrange(10**9, 40 * 60 * 10**9)) if parent else start
            span = (
                by_service[rng.choice(SERVICES)]
                .scope_spans[0]
                .spans.add(
                    trace_id=trace_id,
                    span_id=span_id,
                    name="op",
                    start_time_unix_nano=begin,
                    end_time_unix_nano=begin + 1000,
                )
            )
            if parent:
                span.parent_span_id = parent[0]
            spans.append((span_id, begin))
    return request


def deps(store) -> Dependencies:
    return store.component(Dependencies)


def direct(store, start: int, end: int) -> list[tuple[str, str, int]]:
    """The definition, as one plain join: child in [start, end], parent from an hour before its bucket."""
    table = store.conn.query(
        "SELECT p.service_name, c.service_name, count() FROM clew.spans AS c INNER JOIN clew.spans AS p "
        "ON c.trace_id = p.trace_id AND toFixedString(c.parent_span_id, 8) = p.span_id "
        "WHERE c.parent_span_id != '' AND c.start_time BETWEEN fromUnixTimestamp64Nano({s:Int64}) AND fromUnixTimestamp64Nano({e:Int64}) "
        "AND p.service_name != c.service_name "
        "AND toUnixTimestamp64Nano(p.start_time) >= "
        "greatest(intDiv(toUnixTimestamp64Nano(c.start_time), {b:Int64}) * {b:Int64}, {s:Int64}) - {lb:Int64} "
        "AND toUnixTimestamp64Nano(p.start_time) < "
        "least(intDiv(toUnixTimestamp64Nano(c.start_time), {b:Int64}) * {b:Int64} + {b:Int64}, {e:Int64} + 1) "
        "GROUP BY 1, 2 ORDER BY 1, 2",
        {"s": start, "e": end, "b": BUCKET, "lb": LOOKBACK},
    )
    return [tuple(r.values()) for r in table.to_pylist()]


def test_hourly_buckets_match_the_direct_join_and_follow_late_spans(tmp_path):
    rng = random.Random(5)
    store = open_embedded(tmp_path / "data")
    try:
        store.writer.write(accept_request(traces(rng, 400, BASE, 6)).batch)
        windows = [
            (BASE, BASE + 6 * HOUR),
            (BASE + HOUR // 3, BASE + 5 * HOUR + HOUR // 2),
            (BASE + 2 * HOUR + 5, BASE + 2 * HOUR + HOUR // 2),
        ]
        for start, end in windows:
            first = deps(store).dependencies(start, end)
            assert first == direct(store, start, end)
            assert sum(n for _, _, n in first) > 50
            assert deps(store).graph._cache  # full buckets were kept
            assert deps(store).dependencies(start, end) == first  # from the cached buckets now
        # late spans land in an hour that is cached: its bucket is computed again
        store.writer.write(accept_request(traces(rng, 50, BASE + 2 * HOUR, 1)).batch)
        for start, end in windows:
            assert deps(store).dependencies(start, end) == direct(store, start, end)
    finally:
        store.close()


def test_computed_buckets_survive_a_restart_until_their_spans_change(tmp_path):
    """A reopened store answers from the persisted buckets: only partial end buckets are joined."""
    rng = random.Random(8)
    store = open_embedded(tmp_path / "data")
    try:
        store.writer.write(accept_request(traces(rng, 300, BASE, 4)).batch)
        expected = deps(store).dependencies(BASE, BASE + 4 * HOUR - 1)
        assert deps(store).graph.computed_buckets == 4 * HOUR // BUCKET
    finally:
        store.close()
    store = open_embedded(tmp_path / "data")
    try:
        assert not deps(store).graph._cache
        assert deps(store).dependencies(BASE, BASE + 4 * HOUR - 1) == expected
        assert deps(store).graph.computed_buckets == 0  # every bucket came from the table
        # a window with partial ends joins just those two buckets
        end = BASE + 2 * HOUR + BUCKET // 2
        assert deps(store).dependencies(BASE + 5, end) == direct(store, BASE + 5, end)
        assert deps(store).graph.computed_buckets == 2
    finally:
        store.close()
    store = open_embedded(tmp_path / "data")
    try:  # late spans change the counts the persisted buckets were computed from
        store.writer.write(accept_request(traces(rng, 60, BASE + HOUR, 1)).batch)
        assert deps(store).dependencies(BASE, BASE + 4 * HOUR - 1) == direct(store, BASE, BASE + 4 * HOUR - 1)
        assert 0 < deps(store).graph.computed_buckets < 4 * HOUR // BUCKET
        store.writer.purge(datetime.fromtimestamp((BASE + 10 * HOUR) / 1e9, UTC))
        assert deps(store).dependencies(BASE, BASE + 4 * HOUR - 1) == []
    finally:
        store.close()
