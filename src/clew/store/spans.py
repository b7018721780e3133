"""The span writer role: one `INSERT ... SELECT` per batch, with the processors' SQL inside it, and
the store's clock for when spans were received."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Protocol, runtime_checkable

from clew.core.model import LOGS, OtlpBatch
from clew.store.connection import Connection, InsertStream, StreamingConnection
from clew.store.otlp_wire import STRUCTURE, WIRE_MESSAGE, WIRE_PROTO, framed, insert_select
from clew.store.transforms import Transforms

# A request may carry spans from many days (imports, clock skew); never refuse it for that.
# The engine parses and flattens the requests ~4 MiB at a time (~12,000 spans) instead of all of an
# insert's at once: the same speed, and a 100,000-span insert peaks at ~400 MiB of the engine's
# memory instead of ~700 (bench/RESULTS.md). The insert still writes one part.
# The views over the table (the RED metrics) run beside the table's own write, not after it: with
# them in series an insert ran on one core; side by side it takes ~30% less time for the same CPU.
INSERT_SETTINGS: dict[str, object] = {
    "max_partitions_per_insert_block": 0,
    "input_format_protobuf_oneof_presence": 1,
    "input_format_max_block_size_bytes": 4 << 20,
    "parallel_view_processing": 1,
    # The plan's expression steps are left unmerged: merging them cost ~20 ms of an insert's ~140 ms
    # of fixed CPU, and the rows were not processed faster for it (bench/RESULTS.md, session 21).
    "query_plan_merge_expressions": 0,
}
# the receive time of a batch, as the insert's SQL reads it (a parameter per insert)
RECEIVED_SQL = "fromUnixTimestamp64Nano({received:Int64}, 'UTC')"


def wire_settings(proto: str, message: str) -> dict[str, object]:
    """Insert settings for requests in wire form read with `proto`'s `message`: the schema travels
    with the insert (a server has no file of ours)."""
    return {
        **INSERT_SETTINGS,
        "format_schema_source": "string",
        "format_schema": proto,
        "format_schema_message_name": message,
    }


def insert_requests(
    conn: Connection,
    sql: str,
    structure: str,
    settings: dict[str, object],
    batch: OtlpBatch,
    token: str | None,
    params: dict[str, object],
) -> None:
    """One insert of a batch's requests, length-delimited for the engine's `Protobuf` format, under
    `token` (see `dedup_settings`), with the batch's tenant among the parameters."""
    conn.insert_formatted(
        sql,
        "Protobuf",
        structure,
        framed(batch.payloads),
        *insert_options(settings, token, params, batch.tenant),
    )


def insert_options(
    settings: dict[str, object], token: str | None, params: dict[str, object], tenant: str
) -> tuple[dict[str, object], dict[str, object]]:
    """An insert's settings under `token` and its parameters with the tenant's, for a plain insert
    and a begun one alike."""
    return {**settings, **dedup_settings(token)}, {**params, "tenant": tenant}


class BatchWriter(Protocol):
    def write(self, batch: OtlpBatch, token: str | None = None) -> None:
        """Commit the batch; returns only once it is in a written part. An insert with a `token`
        the engine has seen recently is dropped: replaying a log writes each record once."""
        ...


class SpanWriter(BatchWriter, Protocol):
    def received_until(self) -> int:
        """Every span received at or before this time (ns, the store's clock) is committed or refused."""
        ...


class PreparedWrite(Protocol):
    def finish(self, batch: OtlpBatch) -> None:
        """Commit the batch (of the tenant it was begun for) under the token it was begun with."""
        ...

    def cancel(self) -> None: ...


@runtime_checkable
class Preparing(Protocol):
    def begin(
        self, tenant: str, token: str, on_thread: Callable[[], None] | None = None
    ) -> PreparedWrite | None:
        """Start the insert of a batch of `tenant`'s spans that is not there yet, so that its fixed
        cost is paid before its rows arrive; None where the store cannot (a server)."""
        ...


class BySignal:
    """One writer for the ingest path: spans to `spans`, log records to `logs` (both writers:
    `write(batch, token)`), so both signals share the log, its committer and its guarantees."""

    def __init__(self, spans: SpanWriter, logs: BatchWriter) -> None:
        self.spans, self.logs = spans, logs

    def write(self, batch: OtlpBatch, token: str | None = None) -> None:
        (self.logs if batch.signal == LOGS else self.spans).write(batch, token)

    def received_until(self) -> int:
        return self.spans.received_until()

    def begin(
        self, tenant: str, token: str, on_thread: Callable[[], None] | None = None
    ) -> PreparedWrite | None:
        return self.spans.begin(tenant, token, on_thread) if isinstance(self.spans, Preparing) else None


class ClickHouseSpanWriter:
    """Spans in one MergeTree table; every insert is one part, so a committed batch is all or nothing.

    `stage` is what the components compiled into the insert (enrichment, redaction, the retention
    tier), composed in order; its parameters travel with every insert."""

    def __init__(
        self,
        conn: Connection,
        db: str = "clew",
        stage: Transforms | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.conn, self.db = conn, db
        stage = stage or Transforms({})
        self._insert_settings = wire_settings(WIRE_PROTO, WIRE_MESSAGE)
        self._insert_sql = insert_select(f"{db}.spans", stage, {"received_at": RECEIVED_SQL})
        self._params = dict(stage.params)
        self._clock = clock
        self._received_lock = threading.Lock()
        self._last_received = 0
        self._until = 0
        self._inflight: set[int] = set()

    def write(self, batch: OtlpBatch, token: str | None = None) -> None:
        """One insert, so one part per partition: the engine parses the requests and flattens them."""
        if not batch.spans:
            return
        received = self._stamp()
        try:
            insert_requests(
                self.conn,
                self._insert_sql,
                STRUCTURE,
                self._insert_settings,
                batch,
                token,
                {**self._params, "received": received},
            )
        finally:
            self._done(received)

    def begin(
        self, tenant: str, token: str, on_thread: Callable[[], None] | None = None
    ) -> PreparedWrite | None:
        """The insert begun on the engine in this process, its receive time taken now."""
        if not isinstance(self.conn, StreamingConnection):
            return None
        received = self._stamp()
        try:
            stream = self.conn.begin_insert(
                self._insert_sql,
                "Protobuf",
                STRUCTURE,
                *insert_options(self._insert_settings, token, {**self._params, "received": received}, tenant),
                on_thread,
            )
        except BaseException:
            self._done(received)
            raise
        return _Prepared(stream, tenant, lambda: self._done(received))

    def _stamp(self) -> int:
        """A receive time for an insert starting now, counted in flight until `_done`."""
        with self._received_lock:  # strictly increasing and after any `received_until` handed out
            received = self._last_received = max(self._clock(), self._last_received + 1, self._until + 1)
            self._inflight.add(received)
            return received

    def _done(self, received: int) -> None:
        with self._received_lock:
            self._inflight.discard(received)

    def wrote_until(self) -> int:
        """The receive time of the newest span this writer stored or is storing (ns; 0: none yet)."""
        with self._received_lock:
            return max([self._last_received, *self._inflight])

    def wrote_after(self, t: int) -> bool:
        """Whether this writer may have stored spans received after `t` (ns)."""
        with self._received_lock:
            return self._last_received > t or bool(self._inflight)

    def received_until(self) -> int:
        with self._received_lock:
            now = max(self._clock(), self._last_received)
            self._until = max(self._until, min([now, *(r - 1 for r in self._inflight)]))
            return self._until

    def purge(self, before: datetime) -> None:
        """Drop spans that started before `before` (a maintenance step; retention drops partitions)."""
        self.conn.command(
            f"ALTER TABLE {self.db}.spans DELETE WHERE start_time < fromUnixTimestamp64Nano({{ns:Int64}}) "
            "SETTINGS mutations_sync = 1",
            {"ns": int(before.timestamp() * 1_000_000_000)},
        )


class _Prepared:
    def __init__(self, stream: InsertStream, tenant: str, done: Callable[[], None]) -> None:
        self.stream, self.tenant, self._done = stream, tenant, done

    def finish(self, batch: OtlpBatch) -> None:
        if batch.tenant != self.tenant:  # the tenant is a parameter of the begun insert
            self.cancel()
            raise ValueError(f"an insert begun for tenant {self.tenant!r} got {batch.tenant!r}'s spans")
        try:
            self.stream.finish(framed(batch.payloads))
        finally:
            self._done()

    def cancel(self) -> None:
        try:
            self.stream.cancel()
        finally:
            self._done()


def dedup_settings(token: str | None) -> dict[str, object]:
    """Insert settings: with a token, the engine drops a repeat of the insert (and of what its views
    derived from it) within the table's deduplication window; without one, never (two requests may
    carry the same spans)."""
    if token is None:
        return {"insert_deduplicate": 0}
    return {"insert_deduplication_token": token, "deduplicate_blocks_in_dependent_materialized_views": 1}
