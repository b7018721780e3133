"""Acknowledge from the write-ahead log, commit in large inserts.

`write` appends the request to the log (ingest/wal.py) and returns: the client is answered as soon
as its spans would survive `kill -9`. A committer thread seals the open segment every
`commit_interval` seconds, or as soon as it holds `commit_spans`, and inserts it, one insert per
signal (spans, logs) and tenant, named by a token from the segment's name; then it removes the
segment. `committers` threads insert segments at once (one insert runs on one core; the engine
takes two side by side at close to twice the rate), and a read waits for every segment acknowledged
before it, whichever thread finishes first. At start-up, segments left by a previous run are committed first, with the same tokens, so what was inserted before a
crash is not inserted again. One insert every half second instead of one per group of requests is
what the engine is fast at: the SQL of the insert (parse, processors) is analysed once per insert.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from clew.core.errors import Backpressure
from clew.core.model import SPANS, OtlpBatch
from clew.ingest.priority import lower_engine_threads, lower_this_thread, name_this_thread
from clew.ingest.wal import Segment, Wal
from clew.ingest.writer import full
from clew.store.spans import PreparedWrite, Preparing, SpanWriter

log = logging.getLogger(__name__)

# What an insert adds to the server's resident memory, per span (measured: ~270 MiB for 100,000
# shop-workload spans, the engine's ~175 MiB of tracked memory and its allocator's slack).
INSERT_BYTES_PER_SPAN = 2_800


def process_rss() -> int:
    """This process's resident memory in bytes (0 where /proc is not there: no limit applies)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class LoggedWriter:
    """The ingest sink: same interface and counters as `Writer`, acknowledging from the log."""

    def __init__(
        self,
        store: SpanWriter,
        wal: Wal,
        max_queue_spans: int = 300_000,
        commit_interval: float = 0.5,
        commit_spans: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        idle_interval: float | None = None,
        busy_spans: int = 5_000,
        committers: int = 2,
        memory_limit: int = 0,
        rss: Callable[[], int] = process_rss,
        nice: int = 0,
    ) -> None:
        self.store, self.wal = store, wal
        self.max_queue_spans = max_queue_spans
        self.commit_interval, self.commit_spans = commit_interval, commit_spans
        # A log holding fewer than `busy_spans` waits `idle_interval` (reads commit it at once, see
        # `flushed`): every insert costs the engine ~0.1 s of analysis whatever its size, which is
        # what a quiet server spends its CPU on.
        self.idle_interval = max(
            commit_interval, idle_interval if idle_interval is not None else commit_interval
        )
        self.busy_spans = busy_spans
        self.clock = clock
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._through = 0  # of the spans this run appended to the log, how many are committed, in order
        self._handed: deque[Segment] = deque()  # segments being committed, in the log's order
        # flushes awaited on an event loop: (target, loop, future), resolved by the committer
        self._waiters: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        # Inserts run side by side only while the server's memory leaves room for another under
        # `memory_limit` (bytes; 0: always): one insert at a time always goes on, and the log then
        # fills and answers 503 sooner. The collector's memory_limiter, applied where memory goes.
        self.memory_limit, self._rss = memory_limit, rss
        # the committers and the engine's threads below the receivers (ingest/priority.py; 0: equal)
        self.nice = nice
        self._committing = 0
        self.held_commits = 0  # times a committer waited for memory
        self._urgent = False  # a reader is waiting: commit what is open now
        self._closed = False
        self._uncommitted = 0  # acknowledged spans not yet in the store (open and sealed segments)
        self._oldest: float | None = None  # when the oldest of them was acknowledged
        # The next insert, begun before its segment is sealed (`_begin_next`): its analysis runs
        # while the insert before it writes. One at a time, whichever committer seals next takes it.
        self._prepared: _Begun | None = None
        self._beginning = False  # a committer is beginning one (the slot is taken)
        self._committed_at = 0.0  # when the last insert ended (the committer's clock)
        self._begun_names = itertools.count(1)
        self.begun_inserts = 0
        self.cancelled_inserts = 0
        self._threads = [
            threading.Thread(target=self._run, name=f"clew-commit-{i}", daemon=True)
            for i in range(max(1, committers))
        ]
        self.committed_spans = 0
        self.failed_spans = 0
        self.inserts = 0
        self.refused_spans = 0
        self.replayed_spans = 0

    @property
    def pending_spans(self) -> int:
        return self._uncommitted

    def lag(self) -> tuple[int, float]:
        """Acknowledged spans not yet committed, and for how long the oldest has waited (s)."""
        with self._lock:
            oldest = self._oldest
            return self._uncommitted, (self.clock() - oldest) if oldest is not None else 0.0

    def replay(self) -> int:
        """Commit what a previous run left in the log; before the receivers open."""
        spans = 0
        for segment in self.wal.leftovers():
            with self._lock:
                self._uncommitted += segment.spans
            self._commit(segment, replayed=True)
            spans += segment.spans
        self.replayed_spans += spans
        if spans:
            log.warning("ingest: committed %d spans a previous run had acknowledged", spans)
        return spans

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    async def write(self, batch: OtlpBatch) -> None:
        """Return once `batch` is in the log; raise `Backpressure` when the log holds too much."""
        n = len(batch)
        if n == 0:
            return
        with self._lock:
            if full(self._uncommitted, n, self.max_queue_spans, self._closed):
                self.refused_spans += n
                raise Backpressure()
            now = self.clock()
            self.wal.append(batch, now)
            self._uncommitted += n
            if self._oldest is None:
                self._oldest = now
        if self.wal.pending()[0] >= self.commit_spans:
            self._wake.set()

    async def flushed(self, timeout: float) -> bool:
        """Return once every span acknowledged before the call is committed (True), or after
        `timeout` seconds (False). Reads await it first, so an answered span is always found by the
        next query, however long the commit interval: the interval then only decides how often an
        unread log is committed, which is what idle CPU costs. The wait holds no thread: a read
        waiting in a thread held one of the loop's few workers (6 on 2 cores), which the queries
        need too, and under frequent reads every worker could wait while ready queries queued."""
        target = self._flush_target()
        if target is None:
            return True
        loop = asyncio.get_running_loop()
        waiter: tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]] = (
            target,
            loop,
            loop.create_future(),
        )
        with self._lock:
            if self._through >= target:
                return True
            self._waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter[2], timeout)
            return True
        except TimeoutError:
            return False
        finally:
            with self._lock:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def _flush_target(self) -> int | None:
        """What a flush waits for (None: committed already); the open segment goes at once."""
        with self._lock:
            target = self.wal.appended  # written under this lock (`write`)
            if self._through >= target:
                return None
            self._urgent = True
        self._wake.set()
        return target

    def close(self) -> None:
        """Commit everything acknowledged, then stop."""
        with self._lock:
            self._closed = True
        self._wake.set()
        if self._threads[0].is_alive():
            for thread in self._threads:
                thread.join()
        else:  # never started: commit here
            self._drain()
        self.wal.close()

    def _run(self) -> None:
        name_this_thread(threading.current_thread().name)
        lower_this_thread(self.nice)
        while True:
            closed = self._closed
            spans, opened = self.wal.pending()
            interval = self.commit_interval if spans >= self.busy_spans else self.idle_interval
            due = opened is not None and (
                self._urgent or spans >= self.commit_spans or self.clock() - opened >= interval
            )
            if due or closed:
                self._drain()
            if closed:
                self._cancel_prepared(0.0)
                return
            self._cancel_prepared(max(2 * self.commit_interval, 1.0))
            # woken at least every commit_interval: the log may have become busy meanwhile
            wait = (
                self.commit_interval
                if opened is None or due
                else max(0.0, min(opened + interval - self.clock(), self.commit_interval))
            )
            self._wake.wait(timeout=wait)
            self._wake.clear()

    def _drain(self) -> None:
        """Commit the full segments and the open one, each its own inserts (what arrives meanwhile
        waits for the next round)."""
        for _ in range(self.wal.sealed() + 1):
            with self._lock:  # taken and queued at once: `_handed` keeps the log's order
                if self._committing:
                    # Beside an insert in flight only a full segment goes: a partial one (a reader
                    # asked, the interval passed) waits for it, or frequent reads would keep both
                    # cores on small inserts, which cost the same analysis as large ones.
                    if not self.wal.sealed():
                        return
                    if not self._room_for_another():
                        self.held_commits += 1
                        return
                if not self.wal.sealed():
                    self._urgent = False  # the open segment goes now: what readers wait for
                segment = self.wal.seal()
                if segment is None:
                    return
                self._handed.append(segment)
                self._committing += 1
                prepared, self._prepared = self._prepared, None
            try:
                self._commit(segment, prepared=prepared)
                lower_engine_threads(self.nice)
            finally:
                with self._lock:
                    self._committing -= 1
                self._wake.set()  # a committer held for memory looks again

    def _room_for_another(self) -> bool:
        if not self.memory_limit:
            return True
        spans = min(self.wal.pending()[0], self.commit_spans)
        return self._rss() + spans * INSERT_BYTES_PER_SPAN <= self.memory_limit

    def _commit(self, segment: Segment, replayed: bool = False, prepared: _Begun | None = None) -> None:
        """Insert a segment, one insert per signal and tenant; retried until the store takes it (acknowledged
        spans wait in the log meanwhile, and backpressure holds new ones off when it is full)."""
        if prepared is not None:
            # The begun insert's token names this segment from now on, so that a replay after a
            # crash repeats the token of whatever this segment's inserts committed.
            path = segment.path.with_name(f"{prepared.name}{segment.path.suffix}")
            segment.path.rename(path)
            segment.path = path
        by_key: dict[tuple[str, str], list[OtlpBatch]] = {}
        for batch in segment.read():
            by_key.setdefault(batch.key, []).append(batch)
        # Only a log that keeps up begins its next insert: there the next seal waits for this insert,
        # and the analysis hides behind it. A log behind (full segments, inserts back to back) gains
        # nothing, and a third statement's buffers would add to its peak memory (bench/RESULTS.md).
        if not replayed and self.busy_spans <= segment.spans < self.commit_spans and not self.wal.sealed():
            self._begin_next(max(by_key, key=lambda k: sum(b.spans for b in by_key[k])))
        for (signal, tenant), batches in by_key.items():
            # spans keep the token they had before logs shared the log (a replayed old segment)
            token = f"{segment.name}:{tenant}" if signal == SPANS else f"{segment.name}:{signal}:{tenant}"
            if prepared is not None and (signal, tenant) == (SPANS, prepared.tenant):
                begun, prepared = prepared.write, None
                try:
                    self.inserts += 1
                    begun.finish(OtlpBatch.concat(batches))
                    continue
                except Exception as exc:  # retried below as any insert is, under the same token
                    log.error(
                        "begun insert of %d spans failed, retrying: %s", sum(len(b) for b in batches), exc
                    )
            delay = 0.1
            while True:
                try:
                    self.inserts += 1
                    self.store.write(OtlpBatch.concat(batches), token)
                    break
                except Exception as exc:
                    if len(batches) > 1 and self._one_by_one(batches, token):
                        break
                    log.error("commit of %d spans failed, retrying: %s", sum(len(b) for b in batches), exc)
                    time.sleep(delay)
                    delay = min(delay * 2, 5.0)
        if prepared is not None:  # begun for a tenant this segment has no spans of
            prepared.write.cancel()
            self.cancelled_inserts += 1  # counted once ended: the engine holds no statement of it
        self.wal.trim(segment)
        with self._lock:
            self._committed_at = self.clock()
            self._uncommitted -= segment.spans
            self.committed_spans += segment.spans
            if not replayed:
                segment.done = True
                while self._handed and self._handed[0].done:
                    self._through = self._handed.popleft().end
                self._wake_waiters()
            waiting = [s.opened for s in self._handed if not s.done]
            opened = self.wal.pending()[1]
            if opened is not None:
                waiting.append(opened)
            self._oldest = min(waiting) if self._uncommitted and waiting else None

    def _begin_next(self, key: tuple[str, str]) -> None:
        """Begin the insert of the next segment for `key`'s tenant (a busy log: its segments are
        committed one after the other), unless one is begun already."""
        signal, tenant = key
        if signal != SPANS or not isinstance(self.store, Preparing):
            return
        with self._lock:
            if self._prepared is not None or self._beginning or self._closed:
                return
            self._beginning = True
        name = f"{self.wal.run}-b{next(self._begun_names):012d}"
        begun = None
        try:
            write = self.store.begin(tenant, f"{name}:{tenant}", self._stream_thread)
            if write is not None:
                begun = _Begun(write, tenant, name, self.clock())
                self.begun_inserts += 1
        except Exception as exc:  # the next segment is inserted as any other
            log.error("could not begin the next insert: %s", exc)
        finally:
            with self._lock:
                self._beginning = False
                self._prepared = begun

    def _stream_thread(self) -> None:
        """Where a begun insert's analysis runs: named and lowered as the committers are."""
        name_this_thread("clew-commit-b")
        lower_this_thread(self.nice)

    def _cancel_prepared(self, older_than: float) -> None:
        """End a begun insert no segment came for in `older_than` seconds while no insert ran (a log
        that went quiet): it holds back `received_until` (its receive time is taken) and an engine
        session. Behind an insert in flight it waits, however long that insert takes."""
        with self._lock:
            begun = self._prepared
            idle = self.clock() - max(begun.at, self._committed_at) if begun is not None else 0.0
            if begun is None or (older_than and (self._committing or idle < older_than)):
                return
            self._prepared = None
        begun.write.cancel()
        self.cancelled_inserts += 1  # counted once ended (a reader of the count sees it gone)

    def _wake_waiters(self) -> None:
        """The event-loop flushes whose spans are all committed now (the lock held)."""
        for waiter in [w for w in self._waiters if w[0] <= self._through]:
            self._waiters.remove(waiter)
            with contextlib.suppress(RuntimeError):  # its loop closed meanwhile: nobody waits
                waiter[1].call_soon_threadsafe(_resolve, waiter[2])

    def _one_by_one(self, batches: list[OtlpBatch], token: str) -> bool:
        """After a failed group insert: each request alone (each with its own token, so a retry
        repeats none). If some are stored and others fail, the store works and those requests are
        what it cannot take: they are dropped, counted and logged, instead of holding up every
        request after them. If every one fails, the store is down: False, and the group waits."""
        failed: list[tuple[OtlpBatch, Exception]] = []
        for i, batch in enumerate(batches):
            try:
                self.inserts += 1
                self.store.write(batch, f"{token}:{i}")
            except Exception as exc:
                failed.append((batch, exc))
        if len(failed) == len(batches):
            return False
        for batch, error in failed:
            log.error("a request of %d spans could not be stored and was dropped: %s", len(batch), error)
            with self._lock:
                self.failed_spans += len(batch)
                self.committed_spans -= len(batch)
        return True


@dataclass
class _Begun:
    """An insert begun for the next segment: it names that segment (`name`, its token's prefix)."""

    write: PreparedWrite
    tenant: str
    name: str
    at: float  # when it was begun (the committer's clock)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():  # a flush that timed out has cancelled it
        future.set_result(None)
