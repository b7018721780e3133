"""The spans table's layout: trace-ordered with no second copy of the rows, a bounded number of
partitions per insert whatever the spans' dates, and data directories of the first layout rebuilt
into it once, with everything they held."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from clew.assembly import assemble, open_embedded
from clew.components.logs.table import MIGRATIONS as LOGS_MIGRATIONS
from clew.components.red import MIGRATIONS as RED_MIGRATIONS
from clew.components.retention import MIGRATIONS as RETENTION_MIGRATIONS
from clew.config import Settings
from clew.core.model import COLUMNS, OtlpBatch
from clew.ingest.logged import process_rss
from clew.receivers.otlp import accept_request, decode_json
from clew.store.chdb_connection import ChdbConnection
from clew.store.migrations import applied, migrate
from clew.store.schema import (
    HISTORIC_NAMES,
    MAX_PARTITIONS_PER_INSERT,
    MIGRATIONS,
    MIN_COMPRESS_BLOCK_BYTES,
    NAMES_PROJECTION,
    ORDER_KEY,
    PARTITION_KEY,
    RECODED_COLUMNS,
    VERTICAL_MERGE_MIN_ROWS,
)
from clew.store.spans import INSERT_SETTINGS, ClickHouseSpanWriter
from tests.shop_data import NOW, A, shop, span

DAY = 86400 * 10**9


def _files(directory: Path) -> int:
    return sum(1 for p in directory.rglob("*") if p.is_file())


def _partitions(store, table: str = "spans") -> dict[str, int]:
    rows = store.conn.query(
        "SELECT partition_id, sum(rows) FROM system.parts WHERE database = 'clew' AND table = {t:String} "
        "AND active GROUP BY partition_id",
        {"t": table},
    )
    return dict(zip(*(c.to_pylist() for c in rows.columns), strict=True))


def test_spans_from_two_thousand_days_make_a_bounded_number_of_parts(tmp_path):
    """The request that once wrote 72,053 files and held every other client for 9 s: each span on
    its own day, 2,000 days back. They are stored with their times, in at most ten partitions."""
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    now = time.time_ns()
    for i in range(2000):
        start = now - i * DAY
        spans.add(
            trace_id=(i + 1).to_bytes(16, "big"),
            span_id=(i + 1).to_bytes(8, "big"),
            name="old",
            start_time_unix_nano=start,
            end_time_unix_nano=start + 1000,
        )
    spans.add(  # and one from a clock a year ahead
        trace_id=(9999).to_bytes(16, "big"),
        span_id=(9999).to_bytes(8, "big"),
        name="future",
        start_time_unix_nano=now + 365 * DAY,
        end_time_unix_nano=now + 365 * DAY + 1000,
    )
    store = open_embedded(tmp_path / "data")
    try:
        before = _files(tmp_path / "data")
        store.writer.write(accept_request(request).batch)
        assert len(_partitions(store)) <= MAX_PARTITIONS_PER_INSERT
        assert _files(tmp_path / "data") - before < 1000  # one compact part per partition
        assert store.reader.span_count() == 2001
        for i in (0, 1, 17, 1999):
            [start] = (
                store.reader.get_trace((i + 1).to_bytes(16, "big")).table.column("start_time").to_pylist()
            )
            assert start.timestamp() * 10**9 // 10**6 == (now - i * DAY) // 10**6  # times kept as sent
        assert len(store.reader.get_trace((9999).to_bytes(16, "big"))) == 1
    finally:
        store.close()


def test_the_layout_keeps_one_copy_of_each_span_ordered_by_trace(tmp_path):
    store = open_embedded(tmp_path / "data")
    try:
        table = store.conn.query(
            "SELECT sorting_key, partition_key FROM system.tables WHERE database = 'clew' AND name = 'spans'"
        ).to_pylist()[0]
        assert (table["sorting_key"], table["partition_key"]) == (ORDER_KEY[1:-1], PARTITION_KEY)
        store.writer.write(decode_json(json.dumps(shop()).encode()).batch)
        # no second copy of the rows: the one projection holds a part's distinct service and span names
        projections = store.conn.query(
            "SELECT name, sum(rows) AS rows FROM system.projection_parts "
            "WHERE database = 'clew' AND table = 'spans' AND active GROUP BY name"
        ).to_pylist()
        names = store.conn.query(
            "SELECT count() AS n FROM (SELECT DISTINCT tenant, service_name, name, kind FROM clew.spans)"
        ).to_pylist()[0]["n"]
        spans = store.conn.query("SELECT count() AS n FROM clew.spans").to_pylist()[0]["n"]
        assert projections == [{"name": "names", "rows": names}] and names < spans
    finally:
        store.close()


def test_a_data_directory_of_the_first_layout_is_rebuilt_once_with_all_it_held(tmp_path):
    data = tmp_path / "data"
    conn = ChdbConnection(data)
    try:  # a directory as the first layout left it: service-ordered, with the trace projection
        migrate(conn, "clew", [*MIGRATIONS[:2], *RED_MIGRATIONS[:2], *RETENTION_MIGRATIONS[:1]])
        # its rows, with the columns of its time (written through today's insert elsewhere, copied over)
        migrate(conn, "then", MIGRATIONS)
        ClickHouseSpanWriter(conn, "then").write(decode_json(json.dumps(shop()).encode()).batch)
        conn.command(f"INSERT INTO clew.spans ({HISTORIC_NAMES}) SELECT {HISTORIC_NAMES} FROM then.spans")
        conn.command("DROP DATABASE then")
        conn.command(
            f"INSERT INTO clew.spans_sweep ({HISTORIC_NAMES}) SELECT {HISTORIC_NAMES} FROM clew.spans "
            "WHERE name = 'db.query'"
        )
        old = conn.query("SELECT sorting_key FROM system.tables WHERE database = 'clew' AND name = 'spans'")
        assert old.column(0)[0].as_py() == "tenant, service_name, start_time"
    finally:
        conn.close()

    store = open_embedded(data)
    try:
        assert applied(store.conn, "clew")["spans"] == len(MIGRATIONS)
        assert store.reader.span_count() == 10
        assert len(store.reader.get_trace(bytes.fromhex(A))) == 5
        layouts = store.conn.query(
            "SELECT name, sorting_key, partition_key FROM system.tables WHERE database = 'clew' "
            "AND name IN ('spans', 'spans_sweep') ORDER BY name"
        ).to_pylist()
        assert [(t["sorting_key"], t["partition_key"]) for t in layouts] == [
            (ORDER_KEY[1:-1], PARTITION_KEY)
        ] * 2
        # the RED view follows the rebuilt table: new spans are counted on top of the old ones
        calls = "SELECT sum(calls) FROM clew.red_minutes"
        assert store.conn.query(calls).column(0)[0].as_py() == 10
        store.writer.write(decode_json(json.dumps(shop()).encode(), tenant="t2").batch)
        assert store.conn.query(calls).column(0)[0].as_py() == 20
        # the row a cut-off sweep had left was still in the store, so the restart discarded its copy
        assert sum(_partitions(store, "spans_sweep").values()) == 0
    finally:
        store.close()
    store = open_embedded(data)  # and the next start changes nothing
    try:
        assert store.reader.span_count() == 20
    finally:
        store.close()


def _big_batch(requests: int, attributes: int = 10) -> OtlpBatch:
    """`requests` requests of 512 spans with `attributes` ~30-byte attributes each (ten: ~300 KB a
    request)."""
    now = time.time_ns()
    batches = []
    for r in range(requests):
        request = ExportTraceServiceRequest()
        rs = request.resource_spans.add()
        rs.resource.attributes.add(key="service.name").value.string_value = f"svc-{r % 3}"
        spans = rs.scope_spans.add().spans
        for i in range(512):
            span = spans.add(
                trace_id=(r * 512 + i + 1).to_bytes(16, "big"),
                span_id=(i + 1).to_bytes(8, "big"),
                name=f"op-{i % 7}",
                start_time_unix_nano=now - i * 1000,
                end_time_unix_nano=now,
            )
            for a in range(attributes):
                span.attributes.add(key=f"attribute.{a}").value.string_value = f"value {r} {i} {a} " * 3
        batches.append(accept_request(request).batch)
    return OtlpBatch.concat(batches)


def test_an_insert_parsed_in_several_blocks_still_writes_one_part(tmp_path):
    """The engine reads an insert's requests a few MiB at a time (less memory), yet the insert stays
    one part, all or nothing: here ~9 MB of requests, two to three blocks."""
    batch = _big_batch(30)
    assert sum(len(p) for p in batch.payloads) > 2 * INSERT_SETTINGS["input_format_max_block_size_bytes"]
    store = open_embedded(tmp_path / "data")
    try:
        store.writer.write(batch)
        parts = store.conn.query(
            "SELECT count(), sum(rows) FROM system.parts WHERE database = 'clew' AND table = 'spans' AND active"
        )
        assert [c[0].as_py() for c in parts.columns] == [1, 30 * 512]
        assert store.reader.span_count() == 30 * 512
    finally:
        store.close()


def rss_growth(data_dir: str, release: bool) -> int:
    """MiB of resident memory a 15,000-span insert leaves this process with (run alone, below)."""

    batch = _big_batch(30)
    store = assemble(
        replace(Settings(), data_dir=Path(data_dir)), ChdbConnection(data_dir, release_memory=release)
    )
    try:
        before = process_rss() >> 20
        store.writer.write(batch)
        return (process_rss() >> 20) - before
    finally:
        store.close()


def test_an_insert_gives_its_memory_back_at_once(tmp_path):
    """The engine's allocator would keep what an insert freed for seconds, and the next insert's
    peak would stack on it (issue 11's memory target); each insert hands it back. Each measure in a
    process of its own: with the release, the insert leaves less than half of what it does without
    (measured: ~23 against ~110 MiB)."""
    grown = {}
    for release in (True, False):
        probe = f"from tests.test_layout import rss_growth; print(rss_growth({str(tmp_path / str(release))!r}, {release}))"
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        grown[release] = int(out.stdout.split()[-1])
    assert grown[True] * 2 < grown[False], grown


def _decompressed_by_lookup(store, trace_id: bytes) -> int:
    """Bytes the engine decompressed to answer one trace lookup."""
    event = "SELECT value FROM system.events WHERE event = 'CompressedReadBufferBytes'"

    def read() -> int:
        column = store.conn.query(event).column(0)
        return int(column[0].as_py()) if len(column) else 0

    before = read()
    assert len(store.reader.get_trace(trace_id)) == 1
    return read() - before


def _since(migrations, text: str) -> int:
    """The version of the last step whose SQL mentions `text`: a directory from before it lacks
    that step and every later one."""
    return max(m.version for m in migrations if any(text in sql for sql in m.statements))


def _forget_steps(conn, first: dict[str, int]) -> None:
    """Unrecord each owner's migration steps from version `first[owner]` on: the directory reads as one
    made before them, and its next open applies them."""
    conn.command(
        "ALTER TABLE clew.schema_migrations DELETE WHERE "
        + " OR ".join(f"(owner = '{owner}' AND version >= {version})" for owner, version in first.items())
        + " SETTINGS mutations_sync = 1"
    )


def _reopened_from_before_the_step(data: Path, setting: str, value: object):
    """The store of a data directory made before the ingest-table step that set `setting`: its spans
    and logs tables without it, that step and the later ones not recorded; reopened (so migrated),
    with both tables checked to have `setting = value` now."""
    store = open_embedded(data)
    try:
        for table in ("spans", "logs"):
            store.conn.command(f"ALTER TABLE clew.{table} RESET SETTING {setting}")
        _forget_steps(
            store.conn, {"spans": _since(MIGRATIONS, setting), "logs": _since(LOGS_MIGRATIONS, setting)}
        )
    finally:
        store.close()
    store = open_embedded(data)
    ddl = "SELECT create_table_query FROM system.tables WHERE database = 'clew' AND name = {t:String}"
    for table in ("spans", "logs"):
        text = store.conn.query(ddl, {"t": table}).column(0)[0].as_py()
        if f"{setting} = {value}" not in text:
            store.close()
            raise AssertionError(f"{table} has no {setting} = {value} after the migration")
    return store


def test_a_trace_lookup_decompresses_little_more_than_its_granules(tmp_path):
    """Compression blocks end at the first granule past MIN_COMPRESS_BLOCK_BYTES: a lookup reads one
    granule of each column, and decompressed the engine's default 64 KiB blocks around it (~3.8x
    the bytes at 10M spans, bench/RESULTS.md). Data directories from before get the setting."""
    store = _reopened_from_before_the_step(
        tmp_path / "data", "min_compress_block_size", MIN_COMPRESS_BLOCK_BYTES
    )
    try:
        # small columns (granules of a few KiB) in a wide part, as inserts of 100,000 spans write
        store.conn.command("ALTER TABLE clew.spans MODIFY SETTING min_bytes_for_wide_part = 0")
        store.writer.write(_big_batch(16, attributes=0))
        trace = (5 * 512 + 7).to_bytes(16, "big")
        granule_blocks = _decompressed_by_lookup(store, trace)
        store.conn.command("ALTER TABLE clew.spans MODIFY SETTING min_compress_block_size = 65536")
        store.conn.command("OPTIMIZE TABLE clew.spans FINAL")  # the same rows in default-sized blocks
        default_blocks = _decompressed_by_lookup(store, trace)
        assert granule_blocks * 2 < default_blocks, (granule_blocks, default_blocks)
    finally:
        store.close()


def _gathered_columns(store) -> int:
    """Columns the engine has gathered in the vertical stage of merges, in this process so far."""
    table = store.conn.query(
        "SELECT value FROM system.events WHERE event = 'GatheredColumns' "
        "SETTINGS system_events_show_zero_values = 1"
    )
    return int(table.column(0)[0].as_py())


def test_small_parts_merge_vertically(tmp_path):
    """Parts of any size merge vertically (key columns first, then each column alone), which costs
    ~30% less CPU a row than the all-columns-at-once merge the engine uses below 131,072 rows
    (bench/RESULTS.md). Data directories from before get the setting on both ingest tables."""
    store = _reopened_from_before_the_step(
        tmp_path / "data", "vertical_merge_algorithm_min_rows_to_activate", VERTICAL_MERGE_MIN_ROWS
    )
    try:
        # wide parts, as inserts of thousands of spans write (compact ones merge into one file)
        store.conn.command("ALTER TABLE clew.spans MODIFY SETTING min_bytes_for_wide_part = 0")
        store.conn.command("SYSTEM STOP MERGES clew.spans")
        for _ in range(2):  # two parts of 512 spans
            store.writer.write(_big_batch(1, attributes=2))
        before = _gathered_columns(store)
        store.conn.command("SYSTEM START MERGES clew.spans")
        store.conn.command("OPTIMIZE TABLE clew.spans FINAL")
        parts = "SELECT count() FROM system.parts WHERE database = 'clew' AND table = 'spans' AND active"
        assert store.conn.query(parts).column(0)[0].as_py() == 1
        assert _gathered_columns(store) - before >= 40  # every column outside the sort key
        assert store.conn.query("SELECT count() FROM clew.spans").column(0)[0].as_py() == 1024
    finally:
        store.close()


def _codecs(store, table: str) -> dict[str, tuple[str, str]]:
    rows = store.conn.query(
        "SELECT name, type, compression_codec FROM system.columns WHERE database = 'clew' AND table = {t:String}",
        {"t": table},
    ).to_pylist()
    return {r["name"]: (r["type"], r["compression_codec"]) for r in rows}


def test_few_valued_boolean_and_order_columns_are_compressed_and_old_directories_follow(tmp_path):
    """Kind, status, service, the boolean maps and the attribute-order columns had the engine's
    default codec (the order columns a `LowCardinality` dictionary); measured, ZSTD takes ~4.7
    bytes a span less on the shop workload (bench/RESULTS.md). A data directory from before gets
    them on the spans and sweep tables alike (partitions move between the two, which needs the same
    types) and the logs table's boolean maps, keeping every span and its attribute order."""
    recoded = {name: ch_type.split(" CODEC")[0] for name, ch_type, _ in COLUMNS if name in RECODED_COLUMNS}
    wanted = {
        name: (t.split(" CODEC")[0], "CODEC" + t.split(" CODEC", 1)[1])
        for name, t, _ in COLUMNS
        if name in RECODED_COLUMNS
    }
    data = tmp_path / "data"
    store = open_embedded(data)
    try:
        for table in ("spans", "spans_sweep"):
            for name in recoded:
                old = "LowCardinality(String)" if name.endswith("_order") else recoded[name]
                store.conn.command(f"ALTER TABLE clew.{table} MODIFY COLUMN {name} {old}")
                store.conn.command(f"ALTER TABLE clew.{table} MODIFY COLUMN {name} REMOVE CODEC")
        for name in ("resource_bool", "attributes_bool"):
            store.conn.command(f"ALTER TABLE clew.logs MODIFY COLUMN {name} REMOVE CODEC")
        assert _codecs(store, "spans")["attributes_order"] == ("LowCardinality(String)", "")
        doc = shop()  # and a span whose attributes interleave types, so that their order is kept
        mixed = span(A, "e", None, "mixed", 1, NOW, 1.0, {"n": 1, "s": "x", "b": True, "t": "z"})
        doc["resourceSpans"][0]["scopeSpans"][0]["spans"].append(mixed)
        store.writer.write(decode_json(json.dumps(doc).encode()).batch)
        # as if the steps from the recoding on had not run yet
        recoding = {
            m.owner: m.version
            for m in (*MIGRATIONS, *LOGS_MIGRATIONS, *RETENTION_MIGRATIONS)
            if m.name.startswith("codecs of the few-valued") or m.name == "compressed boolean attributes"
        }
        assert set(recoding) == {"spans", "logs", "retention"}, recoding
        _forget_steps(store.conn, recoding)
        before = store.conn.query(
            "SELECT span_id, attributes_order FROM clew.spans ORDER BY span_id"
        ).to_pylist()
    finally:
        store.close()
    assert "isbs" in {row["attributes_order"] for row in before}
    store = open_embedded(data)
    try:
        for table in ("spans", "spans_sweep"):
            codecs = _codecs(store, table)
            assert {name: codecs[name] for name in wanted} == wanted, table
        logs = _codecs(store, "logs")
        assert logs["attributes_bool"] == logs["resource_bool"] == ("Map(String, Bool)", "CODEC(ZSTD(3))")
        after = store.conn.query(
            "SELECT span_id, attributes_order FROM clew.spans ORDER BY span_id"
        ).to_pylist()
        assert after == before
        # the sweep's move between the two tables still works: the types are the same
        store.conn.command("INSERT INTO clew.spans_sweep SELECT * FROM clew.spans")
        for partition in _partitions(store, "spans_sweep"):
            store.conn.command(
                f"ALTER TABLE clew.spans_sweep MOVE PARTITION ID '{partition}' TO TABLE clew.spans"
            )
        assert store.reader.span_count() == 2 * len(before) == 22
    finally:
        store.close()
    fresh = open_embedded(tmp_path / "fresh")  # and a new directory has them from the start
    try:
        codecs = _codecs(fresh, "spans")
        assert {name: codecs[name] for name in wanted} == wanted
    finally:
        fresh.close()


def test_service_and_operation_lists_read_each_parts_names_and_old_directories_gain_them(tmp_path):
    """The spans and sweep tables get the `names` projection (partitions move only between tables
    with the same projections); parts written before it are still listed, from their rows."""
    data = tmp_path / "data"
    store = open_embedded(data)
    try:
        for table in ("spans", "spans_sweep"):
            store.conn.command(f"ALTER TABLE clew.{table} DROP PROJECTION names")
        store.writer.write(decode_json(json.dumps(shop()).encode()).batch)  # a part without names
        _forget_steps(
            store.conn,
            {
                "spans": _since(MIGRATIONS, NAMES_PROJECTION),
                "retention": _since(RETENTION_MIGRATIONS, NAMES_PROJECTION),
            },
        )
        old_services = store.reader.services()
    finally:
        store.close()
    sent = {
        a["value"]["stringValue"]
        for rs in shop()["resourceSpans"]
        for a in rs["resource"]["attributes"]
        if a["key"] == "service.name"
    }
    assert old_services == sorted(sent)
    store = open_embedded(data)
    try:
        for table in ("spans", "spans_sweep"):
            ddl = store.conn.query(f"SHOW CREATE TABLE clew.{table}").column(0)[0].as_py()
            assert "PROJECTION names" in ddl, table
        doc = shop()
        doc["resourceSpans"][0]["resource"]["attributes"] = [
            {"key": "service.name", "value": {"stringValue": "a-new-service"}}
        ]
        store.writer.write(decode_json(json.dumps(doc).encode()).batch)  # a part with names
        assert store.reader.services() == ["a-new-service", *old_services]
        explained = (
            store.conn.query(
                "EXPLAIN projections = 1 SELECT DISTINCT service_name FROM clew.spans WHERE tenant = 'default'"
            )
            .column(0)
            .to_pylist()
        )
        assert any("names" in line for line in explained)
        scanned = store.conn.query(
            "SELECT DISTINCT name, kind FROM clew.spans WHERE service_name = 'a-new-service' "
            "ORDER BY name, kind SETTINGS optimize_use_projections = 0"
        ).to_pylist()
        assert store.reader.operations("a-new-service") == [(r["name"], r["kind"]) for r in scanned] != []
    finally:
        store.close()
