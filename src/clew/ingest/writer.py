"""The single writer: owns the store, commits queued batches together (group commit), bounds memory.

A request is answered only when the insert that carries its spans has returned, so an acknowledged span
is on disk. The queue is bounded by span count; when it is full, `write` refuses at once with
`Backpressure` and receivers answer 503 / UNAVAILABLE so that OTLP clients retry later.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from typing import Protocol

from clew.core.errors import Backpressure
from clew.core.model import OtlpBatch
from clew.core.telemetry import Metric, Sample
from clew.store.spans import SpanWriter

__all__ = ["Backpressure", "Writer"]

log = logging.getLogger(__name__)

_Item = tuple[OtlpBatch, asyncio.AbstractEventLoop, asyncio.Future[None]]


def full(pending: int, n: int, limit: int, closed: bool) -> bool:
    """Whether a sink holding `pending` uncommitted spans must refuse `n` more. An oversized batch is
    still let in when nothing waits, or it could never be written."""
    return closed or (pending > 0 and pending + n > limit)


def _settle(fut: asyncio.Future[None], error: BaseException | None) -> None:
    if fut.done():  # the caller went away; its spans were still written
        return
    if error is None:
        fut.set_result(None)
    else:
        fut.set_exception(error)


class Writer:
    def __init__(
        self,
        store: SpanWriter,
        max_queue_spans: int = 200_000,
        max_batch_spans: int = 100_000,
        linger_seconds: float = 0.02,
    ) -> None:
        self.store = store
        self.max_queue_spans = max_queue_spans
        self.max_batch_spans = max_batch_spans
        # Under load, how long the first request of a group waits for company: every insert is a
        # part that ClickHouse must later merge, so a few milliseconds buy larger, cheaper inserts.
        # An idle server commits at once.
        self.linger_seconds = linger_seconds
        self._last_commit = 0.0
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._pending = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="clew-writer", daemon=True)
        self._closed = False
        # counters for /metrics: spans committed and failed, inserts made, spans refused when full
        self.committed_spans = 0
        self.failed_spans = 0
        self.inserts = 0
        self.refused_spans = 0

    @property
    def pending_spans(self) -> int:
        return self._pending

    def start(self) -> None:
        self._thread.start()

    async def write(self, batch: OtlpBatch) -> None:
        """Return once `batch` is committed; raise `Backpressure` without queueing when full."""
        n = len(batch)
        if n == 0:
            return
        with self._lock:
            if full(self._pending, n, self.max_queue_spans, self._closed):
                self.refused_spans += n
                raise Backpressure()
            self._pending += n
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._queue.put((batch, loop, fut))
        await fut

    def close(self) -> None:
        """Commit everything queued, then stop the thread."""
        with self._lock:
            self._closed = True
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            items = [first]
            rows = len(first[0])
            now = time.monotonic()
            busy = now - self._last_commit < 5 * self.linger_seconds
            deadline = now + (self.linger_seconds if busy else 0.0)
            while rows < self.max_batch_spans:
                try:
                    nxt = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                items.append(nxt)
                rows += len(nxt[0])
            errors = self._commit(items)
            self._last_commit = time.monotonic()
            failed = sum(len(item[0]) for item, error in zip(items, errors, strict=True) if error is not None)
            with self._lock:
                self._pending -= rows
                self.committed_spans += rows - failed
                self.failed_spans += failed
            for (_, loop, fut), error in zip(items, errors, strict=True):
                try:
                    loop.call_soon_threadsafe(_settle, fut, error)
                except RuntimeError:  # loop already closed during shutdown
                    pass

    def _commit(self, items: list[_Item]) -> list[BaseException | None]:
        """One insert per signal and tenant in the group; if one fails, its requests go again one by
        one, so that a request the engine cannot take fails alone instead of failing everyone grouped
        with it."""
        errors: list[BaseException | None] = [None] * len(items)
        by_tenant: dict[tuple[str, str], list[int]] = {}
        for i, item in enumerate(items):
            by_tenant.setdefault(item[0].key, []).append(i)
        for indexes in by_tenant.values():
            try:
                self.inserts += 1
                self.store.write(OtlpBatch.concat([items[i][0] for i in indexes]))
                continue
            except Exception as exc:
                if len(indexes) == 1:
                    log.error("commit of %d spans failed: %s", len(items[indexes[0]][0]), exc)
                    errors[indexes[0]] = exc
                    continue
            for i in indexes:
                try:
                    self.inserts += 1
                    self.store.write(items[i][0])
                except Exception as exc:
                    log.error("commit of %d spans failed: %s", len(items[i][0]), exc)
                    errors[i] = exc
        return errors


COMMITTED = Metric(
    "clew_ingest_committed_spans", "counter", "Spans (and log records) committed to the store."
)
FAILED = Metric(
    "clew_ingest_failed_spans",
    "counter",
    "Spans (and log records) whose commit failed (their request got an error).",
)
REFUSED = Metric(
    "clew_ingest_refused_spans",
    "counter",
    "Spans (and log records) refused because the write queue was full.",
)
INSERTS = Metric("clew_ingest_inserts", "counter", "Inserts made (one part each).")
QUEUED = Metric(
    "clew_ingest_queued_spans",
    "gauge",
    "Spans and log records accepted and not yet committed (the write queue or the log).",
)
TELEMETRY = (COMMITTED, FAILED, REFUSED, INSERTS, QUEUED)


class IngestStats(Protocol):
    """What both ingest sinks count (this module's `Writer`, logged.py's `LoggedWriter`)."""

    committed_spans: int
    failed_spans: int
    refused_spans: int
    inserts: int

    @property
    def pending_spans(self) -> int: ...


def writer_metrics(writer: IngestStats) -> list[Sample]:
    return [
        Sample(COMMITTED, writer.committed_spans),
        Sample(FAILED, writer.failed_spans),
        Sample(REFUSED, writer.refused_spans),
        Sample(INSERTS, writer.inserts),
        Sample(QUEUED, writer.pending_spans),
    ]
