"""The storage conformance suite: what every `Connection` must do for clew's storage roles, written once
and run on each backend in `STORAGE_BACKENDS` (the embedded engine now; a ClickHouse server joins the
table with the scale-out issue). Like Jaeger's storage integration tests: a span writer and a trace
reader over the same fixtures, plus the schema's migrations.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clew.core.errors import BadRequest, StoreError
from clew.core.language import parse
from clew.core.otlp import to_otlp_json, to_traces_data
from clew.receivers.otlp import decode_json
from clew.store.connection import Connection
from clew.store.migrations import Migration, applied, migrate, steps
from clew.store.schema import MIGRATIONS
from clew.store.spans import ClickHouseSpanWriter
from clew.store.traces import ClickHouseTraceReader, SearchRequest, TraceQuery
from tests.conftest import STORAGE_BACKENDS, canonical_spans
from tests.shop_data import NOW, A, B, C, D, shop

HOUR = 3600 * 10**9


class Store:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        migrate(conn, conn.database, MIGRATIONS)
        self.writer = ClickHouseSpanWriter(conn, conn.database)
        self.reader = ClickHouseTraceReader(conn, conn.database)


@pytest.fixture(params=sorted(STORAGE_BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Connection]:
    conn = STORAGE_BACKENDS[request.param](tmp_path)
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture
def store(backend: Connection) -> Store:
    s = Store(backend)
    s.writer.write(decode_json(json.dumps(shop()).encode()).batch)
    s.writer.write(decode_json(json.dumps(shop()).encode(), tenant="other").batch)
    return s


def _statistics_loaded(conn: Connection) -> int:
    table = conn.query(
        "SELECT value FROM system.events WHERE event = 'LoadedStatisticsMicroseconds' "
        "SETTINGS system_events_show_zero_values = 1"
    )
    return int(table.column(0)[0].as_py()) if table.num_rows else 0


def test_reads_load_no_column_statistics(store: Store):
    """The engine keeps statistics of every column of every part and, by default, loads them for each
    query (~3 ms a part: a trace lookup over a busy hour's parts took 2-3x as long). Reads run
    without them (`READ_SETTINGS`)."""
    assert store.conn.query("SELECT getSetting('use_statistics') AS v").column(0)[0].as_py() in (0, False)
    before = _statistics_loaded(store.conn)
    for trace_id in (A, B, C, D):
        assert len(store.reader.get_trace(bytes.fromhex(trace_id)))
    assert _statistics_loaded(store.conn) == before


def test_a_trace_reads_back_as_it_was_written(store: Store):
    sent = canonical_spans(shop())
    for trace_id in (A, B, C, D):
        got = canonical_spans(to_otlp_json(to_traces_data(store.reader.get_trace(bytes.fromhex(trace_id)))))
        assert got == {k: v for k, v in sent.items() if v["span"]["traceId"] == trace_id}
    assert len(store.reader.get_traces([bytes.fromhex(t) for t in (A, C)])) == 7
    assert len(store.reader.get_trace(bytes(15) + b"\1")) == 0


def test_a_time_hint_reads_only_the_spans_starting_in_it(store: Store):
    """Trace A's spans start at a, a+10, a+20, a+30 and a+90 ms (a: ten minutes ago)."""
    a, ms = NOW - 10 * 60 * 10**9, 10**6
    trace = bytes.fromhex(A)

    def names(window: tuple[int, int]) -> list[str]:
        return store.reader.get_trace(trace, window=window).table.column("name").to_pylist()

    assert names((a + 25 * ms, a + 100 * ms)) == ["db.query", "cache.get"]
    assert names((a, a)) == ["GET /checkout"]  # both bounds included
    assert names((a + 31 * ms, a + 89 * ms)) == []
    assert len(names((0, 2**63 - 1))) == 5 == len(store.reader.get_trace(trace))
    assert store.reader.get_trace(trace, "other", (a, a + 100 * ms)).table.num_rows == 5
    assert store.reader.get_trace(trace, "nobody", (a, a + 100 * ms)).table.num_rows == 0


def test_tenants_do_not_see_each_other(store: Store, backend: Connection):
    assert store.reader.span_count() == 20
    assert store.reader.span_count("other") == 10
    assert len(store.reader.get_trace(bytes.fromhex(A), "nobody")) == 0
    assert store.reader.services("nobody") == []
    query = TraceQuery(service="frontend", start_min=NOW - 4 * HOUR, start_max=NOW, tenant="nobody")
    assert store.reader.find_traces(query) == []


def test_services_and_operations(store: Store):
    assert store.reader.services() == ["checkout", "frontend"]
    assert store.reader.operations("checkout") == [("POST /pay", 2), ("cache.get", 3), ("db.query", 3)]
    assert store.reader.operations("checkout", kind=3) == [("cache.get", 3), ("db.query", 3)]


def test_find_traces_by_jaeger_search(store: Store):
    def find(**kw: object) -> list[str]:
        query = TraceQuery(service="checkout", start_min=NOW - 4 * HOUR, start_max=NOW, **kw)  # type: ignore[arg-type]
        return [t.hex() for t in store.reader.find_traces(query)]

    assert find() == [C, A]  # most recent first
    assert find(tags={"http.status_code": "500"}) == [A]
    assert find(tags={"resource.deployment.environment": "prod"}) == [C]
    assert find(operation="db.query") == [A]
    assert find(duration_min=1000 * 10**6) == [C]
    assert find(limit=1) == [C]


def test_query_language_search(store: Store):
    result = store.reader.search(SearchRequest(parse("{ status = error }"), NOW - 4 * HOUR, NOW))
    assert [t.trace_id.hex() for t in result.traces] == [A]
    [a] = result.traces
    assert (a.root_service, a.root_name, a.span_count, a.error_count) == ("frontend", "GET /checkout", 5, 1)
    assert a.services == {"frontend": (2, 0), "checkout": (3, 1)}
    slow = store.reader.search(SearchRequest(parse("{ duration > 1s }"), NOW - 4 * HOUR, NOW))
    assert [t.trace_id.hex() for t in slow.traces] == [C]


def test_received_until_covers_every_committed_write(backend: Connection):
    clock = iter(range(1000, 10**6, 1000))
    s = Store(backend)
    writer = ClickHouseSpanWriter(backend, backend.database, clock=lambda: next(clock))
    marks = []
    for _ in range(3):
        writer.write(decode_json(json.dumps(shop()).encode()).batch)
        marks.append(writer.received_until())
    assert marks == sorted(marks) and len(set(marks)) == 3
    received = backend.query(f"SELECT max(toUnixTimestamp64Nano(received_at)) FROM {backend.database}.spans")
    assert int(received.column(0)[0].as_py()) <= marks[-1]
    assert s.reader.span_count() == 30


def test_concurrent_writes_are_all_stored(backend: Connection):
    s = Store(backend)
    batch = decode_json(json.dumps(shop()).encode()).batch
    threads = [threading.Thread(target=s.writer.write, args=(batch,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert s.reader.span_count() == 40


def test_migrations_apply_once_in_order_and_are_recorded(backend: Connection):
    assert len(migrate(backend, backend.database, MIGRATIONS)) == len(MIGRATIONS)
    assert applied(backend, backend.database) == {"spans": len(MIGRATIONS)}
    assert migrate(backend, backend.database, MIGRATIONS) == []  # a restart applies nothing
    extra = steps(
        "probe",
        ("a table", ["CREATE TABLE {db}.probe (x UInt8) ENGINE = MergeTree ORDER BY x"]),
        ("a column", ["ALTER TABLE {db}.probe ADD COLUMN y UInt8"]),
    )
    assert [m.version for m in migrate(backend, backend.database, [*MIGRATIONS, extra[0]])] == [1]
    assert [m.name for m in migrate(backend, backend.database, [*MIGRATIONS, *extra])] == ["a column"]
    columns = backend.query(
        "SELECT name FROM system.columns WHERE database = {db:String} AND table = 'probe'",
        {"db": backend.database},
    )
    assert columns.column(0).to_pylist() == ["x", "y"]
    # a data directory written by a newer clew is refused, not run on an unknown schema
    with pytest.raises(StoreError, match="newer than this clew knows"):
        migrate(backend, backend.database, [*MIGRATIONS, extra[0]])
    with pytest.raises(ValueError, match="numbered 1..n"):
        migrate(backend, backend.database, [Migration("gap", 2, "two", ())])


def test_a_slow_read_holds_up_neither_writes_nor_other_reads(backend: Connection):
    """Ordering of completions, not times: a 2-second read is still running when a write and another
    read, issued after it started, have both returned."""
    s = Store(backend)
    batch = decode_json(json.dumps(shop()).encode()).batch
    done: list[str] = []
    slow = threading.Thread(target=lambda: (backend.query("SELECT sleep(2)"), done.append("slow read")))
    slow.start()
    time.sleep(0.3)  # the slow read is in the engine by now
    s.writer.write(batch)
    done.append("write")
    assert s.reader.span_count() == 10
    done.append("read")
    slow.join()
    assert done == ["write", "read", "slow read"]


def test_a_slow_write_does_not_hold_up_reads(backend: Connection):
    s = Store(backend)
    s.writer.write(decode_json(json.dumps(shop()).encode()).batch)
    backend.command(f"CREATE TABLE {backend.database}.slow (x UInt8) ENGINE = MergeTree ORDER BY x")
    done: list[str] = []
    slow = threading.Thread(
        target=lambda: (
            backend.command(f"INSERT INTO {backend.database}.slow SELECT sleep(2)"),
            done.append("slow write"),
        )
    )
    slow.start()
    time.sleep(0.3)
    assert len(s.reader.get_trace(bytes.fromhex(A))) == 5
    done.append("read")
    slow.join()
    assert done == ["read", "slow write"]


@pytest.mark.parametrize("tenant", ["\\", "a\\", "\\x61", "tab\there", "quote'\"", "new\nline", "nul\0"])
def test_parameter_values_reach_the_engine_as_sent(backend: Connection, tenant: str):
    """A tenant (or any value) with backslashes or control characters is stored and found as sent,
    never read as an escape sequence (`\\x61` is not `a`) nor refused."""
    s = Store(backend)
    s.writer.write(decode_json(json.dumps(shop()).encode(), tenant=tenant).batch)
    assert s.reader.span_count(tenant) == 10
    assert s.reader.services(tenant) == ["checkout", "frontend"]
    assert len(s.reader.get_trace(bytes.fromhex(A), tenant)) == 5
    assert s.reader.span_count("a") == 0


def test_a_failed_statement_never_changes_the_next_answer(store: Store, backend: Connection):
    """A statement the engine refuses (RE2 rejects the lookahead Python's `re` accepts) fails alone:
    every statement after it, on any session, reads what it would have read (issue 12, finding 1)."""
    backend.command(
        f"CREATE TABLE {backend.database}.words (a UInt64, s String) ENGINE = MergeTree ORDER BY a"
    )
    backend.command(f"INSERT INTO {backend.database}.words SELECT number, toString(number) FROM numbers(100)")
    expected = store.reader.services()
    trace = canonical_spans(to_otlp_json(to_traces_data(store.reader.get_trace(bytes.fromhex(A)))))
    for _ in range(3):
        # a regex the engine cannot compile is the request's fault: a 400 without the engine's text
        with pytest.raises(BadRequest, match="CANNOT_COMPILE_REGEXP"):
            backend.query(f"SELECT count() FROM {backend.database}.words WHERE match(s, '(?=a)a')")
        with pytest.raises(StoreError):
            backend.query("SELECT count() FROM clew.no_such_table")
        with pytest.raises(BadRequest):
            backend.command(f"SELECT count() FROM {backend.database}.words WHERE match(s, '(?<=a)')")
        for _ in range(3):  # every reader session of a pool, whichever the failure landed on
            assert store.reader.services() == expected
            got = store.reader.get_trace(bytes.fromhex(A))
            assert canonical_spans(to_otlp_json(to_traces_data(got))) == trace
    store.writer.write(decode_json(json.dumps(shop()).encode(), tenant="after").batch)
    assert store.reader.span_count("after") == 10


def test_a_stored_time_past_2262_does_not_make_its_trace_unreadable(store: Store):
    """Receivers now drop such spans; data stored before that still reads (OTLP and Jaeger shapes)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from clew.api.jaeger_model import to_jaeger_traces
    from clew.core.model import OtlpBatch

    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "late"
    span = rs.scope_spans.add().spans.add(
        trace_id=b"\x22" * 16,
        span_id=b"\x01" * 8,
        name="late",
        start_time_unix_nano=NOW,
        end_time_unix_nano=NOW + 5,
    )
    span.events.add(time_unix_nano=2**64 - 1, name="far")
    store.writer.write(OtlpBatch("default", (request.SerializeToString(),), 1))
    batch = store.reader.get_trace(b"\x22" * 16)
    doc = to_otlp_json(to_traces_data(batch))
    assert canonical_spans(doc)  # readable
    assert to_jaeger_traces(batch)[0]["spans"][0]["operationName"] == "late"


def test_spans_linking_to_a_trace_are_found(store: Store):
    """Back-references: the spans of other traces whose links point into a trace, in the tenant."""
    doc = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "worker"}}]},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "ab" * 16,
                                "spanId": "cd" * 8,
                                "name": "consume",
                                "startTimeUnixNano": str(NOW),
                                "endTimeUnixNano": str(NOW + 10**6),
                                "links": [
                                    {"traceId": A, "spanId": "7" * 16},
                                    {"traceId": "9" * 32, "spanId": "9" * 16},
                                ],
                            }
                        ]
                    }
                ],
            }
        ]
    }
    store.writer.write(decode_json(json.dumps(doc).encode()).batch)
    store.writer.write(decode_json(json.dumps(doc).encode(), tenant="other").batch)
    refs = store.reader.linked_from(bytes.fromhex(A), NOW - HOUR, NOW + HOUR)
    assert [(r.trace_id.hex(), r.span_id.hex(), r.service, r.name, r.linked_span_id.hex()) for r in refs] == [
        ("ab" * 16, "cd" * 8, "worker", "consume", "7" * 16)
    ]
    assert store.reader.linked_from(bytes.fromhex(A), NOW + HOUR, NOW + 2 * HOUR) == []
    assert store.reader.linked_from(bytes.fromhex("ab" * 16), NOW - HOUR, NOW + HOUR) == []


def test_statements_calling_clews_array_functions_get_their_definitions(backend: Connection) -> None:
    """The array decoders (store/arrays.py) travel in each statement's WITH clause, merged with a
    WITH the statement has and seen by its subqueries, on every backend."""
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue

    raw = ArrayValue(
        values=[AnyValue(string_value="é" * 100), AnyValue(int_value=-3), AnyValue(double_value=0.5),
                AnyValue(int_value=2**62), AnyValue(bool_value=True), AnyValue(string_value="")]
    ).SerializeToString()  # fmt: skip
    table = backend.query(
        "WITH unhex({raw:String}) AS r SELECT clewArrayStrings(r) AS s, clewArrayInts(r) AS i, "
        "(SELECT clewArrayFloats(unhex({raw:String}))) AS f, clewArrayBools(r) AS b",
        {"raw": raw.hex()},
    )
    (row,) = table.to_pylist()
    assert row["s"] == ["é" * 100, ""] and row["i"] == [-3, 2**62]
    assert row["f"] == [0.5] and row["b"] == [True]
