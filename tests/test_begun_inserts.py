"""Inserts begun before their data (`StreamedInsert`, `LoggedWriter._begin_next`): on a busy log the
committer starts the next segment's insert while the current one writes, so the engine's analysis of
the insert's SQL is not paid between a segment's seal and its rows being queryable. Real engine,
real pipes; the one fault injected (an insert that fails) goes through a wrapper of the real store."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from clew.assembly import open_embedded
from clew.core.errors import StoreError
from clew.core.model import OtlpBatch
from clew.ingest.logged import LoggedWriter
from clew.ingest.wal import Wal
from clew.store.otlp_wire import framed
from clew.store.spans import PreparedWrite
from tests.conftest import ServerProcess
from tests.test_durability import SPANS_PER_REQUEST as SPANS
from tests.test_durability import _request, push
from tests.test_wal import _settled, _stored

pytestmark = pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="the log needs memory-backed storage")


def _batch(tenant: str = "default", trace_id: bytes | None = None) -> OtlpBatch:
    return OtlpBatch(tenant, (_request(trace_id or os.urandom(16)),), SPANS)


def _running_inserts(store) -> int:  # noqa: ANN001
    rows = store.conn.query("SELECT count() AS n FROM system.processes WHERE query_kind = 'Insert'")
    return int(rows.column("n")[0].as_py())


def _spool_fifos(store) -> list[Path]:  # noqa: ANN001
    return list(store.conn._spool.glob("*.fifo"))


def test_a_begun_insert_runs_before_its_rows_and_stores_them_under_its_receive_time(tmp_path: Path):
    store = open_embedded(tmp_path / "data")
    try:
        before = store.writer.received_until()
        begun = store.writer.begin("default", "token-1")
        assert begun is not None
        deadline = time.monotonic() + 30
        while _running_inserts(store) == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _running_inserts(store) == 1  # the statement is in the engine, waiting for rows
        assert len(_spool_fifos(store)) == 1
        # its receive time is taken: nothing at or after it counts as received until it ends
        held = store.writer.received_until()
        time.sleep(0.05)
        assert store.writer.received_until() == held
        assert store.reader.span_count() == 0
        begun.finish(_batch())
        assert store.reader.span_count() == SPANS
        assert _running_inserts(store) == 0 and _spool_fifos(store) == []
        received = store.conn.query("SELECT DISTINCT toUnixTimestamp64Nano(received_at) AS r FROM clew.spans")
        stamp = received.column("r").to_pylist()
        assert len(stamp) == 1 and before < stamp[0] <= held + 1
        assert store.writer.received_until() >= stamp[0]  # released once it ended
        # the token it was begun with is the insert's: the same rows under it again are dropped
        store.writer.write(_batch(), "token-1")
        assert store.reader.span_count() == SPANS
    finally:
        store.close()


def test_a_cancelled_insert_writes_nothing_and_gives_its_session_back(tmp_path: Path):
    store = open_embedded(tmp_path / "data")
    try:
        for i in range(5):  # more than the connection's sessions: each cancel returned its own
            begun = store.writer.begin("default", f"cancelled-{i}")
            assert begun is not None
            begun.cancel()
        assert store.reader.span_count() == 0
        parts = store.conn.query("SELECT count() AS n FROM system.parts WHERE table = 'spans' AND active")
        assert parts.column("n")[0].as_py() == 0
        store.writer.write(_batch(), None)
        assert store.reader.span_count() == SPANS and _spool_fifos(store) == []
    finally:
        store.close()


def test_an_insert_that_fails_on_its_rows_raises_on_finish_and_the_store_goes_on(tmp_path: Path):
    """Rows the engine refuses (not the wire format): `finish` raises the engine's error instead of
    blocking on a pipe nobody reads any more, however much was still to send."""
    store = open_embedded(tmp_path / "data")
    try:
        begun = store.writer.begin("default", "broken")
        assert begun is not None
        garbage = OtlpBatch("default", (b"\xff" * 3_000_000,), 1)
        outcome: list[BaseException | None] = []

        def finish() -> None:
            try:
                begun.finish(garbage)
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=finish, daemon=True)
        thread.start()
        thread.join(60)
        assert not thread.is_alive(), "finish blocked on the pipe"
        assert isinstance(outcome[0], StoreError)
        assert store.reader.span_count() == 0
        store.writer.write(_batch(), None)
        assert store.reader.span_count() == SPANS
    finally:
        store.close()


def test_closing_the_store_ends_an_insert_still_waiting_for_rows(tmp_path: Path):
    store = open_embedded(tmp_path / "data")
    begun = store.writer.begin("default", "never-fed")
    assert begun is not None
    closer = threading.Thread(target=store.close, daemon=True)
    closer.start()
    closer.join(60)
    assert not closer.is_alive(), "close waited for an insert nobody fed"


def test_a_busy_log_begins_each_next_insert_and_stores_every_span_once(tmp_path: Path):
    store = open_embedded(tmp_path / "data")
    writer = LoggedWriter(store.sink, Wal(tmp_path / "wal"), commit_interval=0.05, busy_spans=SPANS)
    writer.start()
    try:
        traces = [os.urandom(16) for _ in range(6)]
        for trace_id in traces:  # one segment each: each read commits what was acknowledged
            asyncio.run(writer.write(_batch(trace_id=trace_id)))
            assert asyncio.run(writer.flushed(30))
        assert store.reader.span_count() == len(traces) * SPANS
        for trace_id in traces:
            assert len(store.reader.get_trace(trace_id)) == SPANS
        assert writer.begun_inserts >= len(traces) - 1
        assert writer.inserts == len(traces)
        # the log went quiet: the last begun insert is ended, and no insert is left in the engine
        deadline = time.monotonic() + 30
        while writer.cancelled_inserts == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert writer.cancelled_inserts == 1 and _running_inserts(store) == 0
        assert store.reader.span_count() == len(traces) * SPANS
    finally:
        writer.close()
        store.close()


def test_a_log_behind_begins_no_insert(tmp_path: Path):
    """Full segments waiting one behind the other: the inserts run back to back, an insert begun
    early would hide nothing and only hold another statement's memory."""
    store = open_embedded(tmp_path / "data")
    wal = Wal(tmp_path / "wal", roll_spans=SPANS)
    writer = LoggedWriter(store.sink, wal, commit_interval=0.05, commit_spans=SPANS, busy_spans=SPANS)
    try:
        for _ in range(4):  # logged before the committer starts: four full segments
            asyncio.run(writer.write(_batch()))
        assert wal.sealed() >= 3
        writer.start()
        assert asyncio.run(writer.flushed(30))
        assert store.reader.span_count() == 4 * SPANS
        assert writer.inserts == 4 and writer.begun_inserts == 0
    finally:
        writer.close()
        store.close()


def test_a_segment_committed_by_a_begun_insert_is_not_inserted_again_on_replay(tmp_path: Path):
    """The kill between a begun insert's commit and the removal of its segment: the segment was
    renamed after the begun insert's token before its rows were sent, so the replay repeats that
    token and the engine drops the repeat."""
    store = open_embedded(tmp_path / "data")
    wal_dir = tmp_path / "wal"
    try:
        writer = LoggedWriter(store.sink, Wal(wal_dir), commit_interval=60, busy_spans=SPANS)
        writer.wal.trim = lambda segment: None  # type: ignore[method-assign]  # the crash: never removed
        for _ in range(2):
            asyncio.run(writer.write(_batch()))
            writer._drain()
        assert writer.begun_inserts == 2 and store.reader.span_count() == 2 * SPANS
        names = sorted(p.stem for p in wal_dir.glob("*.wal"))
        assert len(names) == 2 and sum("-b" in n for n in names) == 1  # the second one renamed
        writer._cancel_prepared(0.0)  # the third, begun for a segment that never came
        restarted = LoggedWriter(store.sink, Wal(wal_dir))
        assert restarted.replay() == 2 * SPANS
        assert store.reader.span_count() == 2 * SPANS  # not 4
        assert list(wal_dir.glob("*.wal")) == []
    finally:
        store.close()


def test_a_begun_insert_for_another_tenant_is_cancelled_and_the_segment_inserted(tmp_path: Path):
    store = open_embedded(tmp_path / "data")
    try:
        writer = LoggedWriter(store.sink, Wal(tmp_path / "wal"), commit_interval=60, busy_spans=SPANS)
        asyncio.run(writer.write(_batch("acme")))
        writer._drain()  # begins the next insert for acme
        asyncio.run(writer.write(_batch("globex")))
        writer._drain()
        assert writer.cancelled_inserts == 1
        assert store.reader.span_count("acme") == SPANS and store.reader.span_count("globex") == SPANS
        writer.close()
    finally:
        store.close()


def test_a_failed_begun_insert_is_retried_as_any_insert_under_the_segments_token(tmp_path: Path):
    store = open_embedded(tmp_path / "data")

    class Failing:
        """The real store, whose begun inserts fail when finished."""

        def __init__(self) -> None:
            self.tokens: list[str | None] = []

        def write(self, batch: OtlpBatch, token: str | None = None) -> None:
            self.tokens.append(token)
            store.sink.write(batch, token)

        def received_until(self) -> int:
            return store.sink.received_until()

        def begin(self, tenant: str, token: str, on_thread=None) -> PreparedWrite | None:  # noqa: ANN001
            real = store.sink.begin(tenant, token, on_thread)
            assert real is not None
            self.begun = token

            class Broken:
                def finish(self, batch: OtlpBatch) -> None:
                    real.cancel()
                    raise StoreError("the engine refused it")

                def cancel(self) -> None:
                    real.cancel()

            return Broken()

    failing = Failing()
    try:
        writer = LoggedWriter(failing, Wal(tmp_path / "wal"), commit_interval=60, busy_spans=SPANS)
        for _ in range(2):
            asyncio.run(writer.write(_batch()))
            writer._drain()
        assert store.reader.span_count() == 2 * SPANS
        # the second segment's retry went under the begun insert's token
        assert failing.tokens[-1] is not None and failing.tokens[-1].startswith(writer.wal.run + "-b")
        writer.close()
    finally:
        store.close()


def test_the_pipe_carries_a_segments_slices_as_written(tmp_path: Path):
    """The rows of a begun insert come from the log's file through the pipe, in order: what the
    engine stored is what was sent."""
    store = open_embedded(tmp_path / "data")
    try:
        trace_ids = [os.urandom(16) for _ in range(40)]
        batch = OtlpBatch("default", tuple(_request(t) for t in trace_ids), 40 * SPANS)
        assert sum(len(p) for p in framed(batch.payloads)) > 0
        begun = store.writer.begin("default", "slices")
        assert begun is not None
        begun.finish(batch)
        found = store.conn.query("SELECT DISTINCT lower(hex(trace_id)) AS t FROM clew.spans")
        assert sorted(found.column("t").to_pylist()) == sorted(t.hex() for t in trace_ids)
    finally:
        store.close()


def test_rows_sent_before_the_engine_opens_its_input_are_stored(tmp_path: Path):
    """`finish` right after `begin`: the engine is still analysing the SQL and has not opened the
    pipe. Rows written to a pipe nobody reads die with its last descriptor, and the engine's later
    open would wait for a writer forever; the write end waits for the reader instead."""
    store = open_embedded(tmp_path / "data")
    try:
        for i in range(3):
            begun = store.writer.begin("default", f"early-{i}")
            assert begun is not None
            finished = threading.Thread(target=begun.finish, args=(_batch(),), daemon=True)
            finished.start()
            finished.join(60)
            assert not finished.is_alive(), "the insert never saw its rows end"
            assert store.reader.span_count() == (i + 1) * SPANS
        assert _spool_fifos(store) == []
    finally:
        store.close()


def _busy_server(data_dir: Path) -> ServerProcess:
    """A served log that counts as busy at two requests, so nearly every commit begins the next."""
    extra = {"CLEW_COMMIT_BUSY_SPANS": str(2 * SPANS), "CLEW_COMMIT_INTERVAL_MS": "100"}
    os.environ.update(extra)
    try:
        return ServerProcess(data_dir, wal=True).start()
    finally:
        for key in extra:
            del os.environ[key]


def _ingest(server: ServerProcess) -> dict:
    return httpx.get(f"{server.http_url}/healthz", timeout=10).json()["ingest"]


def test_served_begun_inserts_survive_kill_minus_nine_exactly_once(data_dir: Path):
    """Over HTTP: clients push until the server has begun inserts ahead of their segments, then it is
    killed. The restart replays the log (renamed segments carry their begun insert's token), every
    acknowledged span is stored once, and a quiet log ends the insert it had begun."""
    acked: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    server = _busy_server(data_dir)

    clients = [threading.Thread(target=push, args=(server, acked, lock, stop, 2000)) for _ in range(3)]
    for c in clients:
        c.start()
    try:
        deadline = time.monotonic() + 60
        while _ingest(server)["begunInserts"] < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _ingest(server)["begunInserts"] >= 3
    finally:
        server.stop(signal.SIGKILL)
        stop.set()
        for c in clients:
            c.join(timeout=30)
    server = _busy_server(data_dir)
    try:
        _settled(server)
        for _ in range(50):  # busy again (a segment of two requests or more), then quiet
            for _ in range(4):
                trace_id = os.urandom(16)
                assert server.post_otlp(_request(trace_id)).status_code == 200
                acked.append(trace_id.hex())
            time.sleep(0.3)
            if _ingest(server)["begunInserts"]:
                break
        deadline = time.monotonic() + 30  # the insert begun last, that no segment came for, ends
        while _ingest(server)["cancelledInserts"] == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        ingest = _ingest(server)
        assert ingest["begunInserts"] >= 1 and ingest["cancelledInserts"] >= 1
        # a read commits the log after the cancelled insert
        trace = httpx.get(f"{server.http_url}/api/traces/{acked[-1]}", timeout=30)
        assert trace.status_code == 200 and len(trace.json()["data"][0]["spans"]) == SPANS
    finally:
        assert server.stop() == 0
    stored = _stored(server)
    assert len(acked) > 20
    assert [t for t in acked if t not in stored] == []
    assert {n for t, n in stored.items() if t in set(acked)} == {SPANS}  # each span once
