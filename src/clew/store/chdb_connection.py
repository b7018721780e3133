"""The ClickHouse engine running in this process through chdb, with its data in a directory."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from clew.core.budget import QUERY_SECONDS
from clew.core.errors import ClewError, StoreError
from clew.store.arrays import with_functions
from clew.store.connection import READ_SETTINGS, Data, engine_error, over_budget, pieces, write_data
from clew.store.sql import quote, utf8_params


def _settings_clause(settings: dict[str, object]) -> str:
    if not settings:
        return ""
    return " SETTINGS " + ", ".join(
        f"{k} = {quote(v) if isinstance(v, str) else v}" for k, v in settings.items()
    )


# The engine reads a query parameter's text with escape sequences (as in TSV) before parsing it as
# its type, so `\` alone was an error and `\x61` read as `a`: escaped here, every value arrives as sent.
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0"})


def _escaped(params: dict[str, object] | None) -> dict[str, object] | None:
    params = utf8_params(params)
    if not params:
        return None
    return {k: _text(v).translate(_ESCAPES) if isinstance(v, str | list) else v for k, v in params.items()}


def _text(value: object) -> str:
    """A parameter's value as the engine parses it: an array (a list of strings or numbers) as its
    literal, as a server's client sends it."""
    if isinstance(value, list):
        return "[" + ",".join(quote(v) if isinstance(v, str) else str(v) for v in value) + "]"
    return str(value)


class _Session:
    """One chdb session and the lock that keeps it to one statement at a time: a session keeps query
    parameters as session state, so concurrent statements on it would see each other's."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.session = _open(self.path)
        self.lock = threading.Lock()

    def run(self, sql: str, fmt: str, params: dict[str, object] | None) -> Any:
        with self.lock:
            return self.execute(sql, fmt, params)

    def execute(self, sql: str, fmt: str, params: dict[str, object] | None) -> Any:
        """`run` with the lock already held."""
        try:
            return self.session.query(sql, fmt, params=_escaped(params))
        except Exception as exc:  # chdb raises RuntimeError with ClickHouse's text
            self._recover(fmt)
            raise engine_error(str(exc)) from exc

    def _recover(self, fmt: str) -> None:
        """After a failed statement, chdb hands the next result of the session back malformed
        (measured with chdb 4.4 and 26.9: the next Arrow result fails with "Invalid flatbuffers
        message", or carries the header in its rows), so one failing query would break whoever ran
        the next one. A probe takes that result; the session is replaced if probes keep failing."""
        for _ in range(_PROBES):
            try:
                if _probe_ok(self.session.query("SELECT 1 AS ok", fmt), fmt):
                    return
            except Exception:  # the broken result is what the probe is there to take
                continue
        self.session = _open(self.path)


def _open(path: str) -> Any:
    """A chdb session on `path` with those of `READ_SETTINGS` its engine knows (an older one refuses a
    setting it has never heard of) set for its every statement."""
    from chdb import session  # imported lazily: loading the engine takes a moment

    opened = session.Session(path)
    names = ", ".join(quote(name) for name in READ_SETTINGS)
    known = str(opened.query(f"SELECT name FROM system.settings WHERE name IN ({names})", "TSV")).split()
    if settings := [f"{k} = {v}" for k, v in READ_SETTINGS.items() if k in known]:
        opened.query("SET " + ", ".join(settings), "CSV")
    return opened


_PROBES = 3


def _probe_ok(result: Any, fmt: str) -> bool:
    if fmt == "ArrowTable":
        return bool(result.column("ok").to_pylist() == [1])
    return str(result).strip() == "1"


# an insert of this much request data or more hands the engine's freed memory back (`_release_memory`)
RELEASE_AFTER_BYTES = 4 << 20


class ChdbConnection:
    """The engine in this process, with its data in a directory that this process owns until
    `close()`.

    Writes (inserts, DDL, the retention's partition moves) go through one session; reads take one of
    `readers` more sessions on the same directory, so a slow query never waits behind an insert nor
    holds one up, and reads run in parallel (chdb runs statements of different sessions at once, and
    each sees the others' writes as soon as they return)."""

    database = "clew"

    def __init__(
        self, data_dir: str | Path, readers: int = 2, inserters: int = 2, release_memory: bool = True
    ) -> None:
        self.path = Path(data_dir).resolve()
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            self._writer = _Session(self.path)
            self._writer.run("SELECT 1", "CSV", None)
            sessions = [_Session(self.path) for _ in range(readers)]
            inserting = [_Session(self.path) for _ in range(inserters)]
        except Exception as exc:
            raise StoreError(
                f"cannot open data directory {self.path}: {exc}. "
                "Is a clew server running on it? Stop it, or talk to it with --url."
            ) from exc
        self._readers: queue.SimpleQueue[_Session] = queue.SimpleQueue()
        for reader in sessions:
            self._readers.put(reader)
        # Inserts take sessions of their own, each with its spool file: two inserts run on both
        # cores at once (the committer's threads), and neither waits behind DDL or housekeeping.
        self._inserters: queue.SimpleQueue[tuple[_Session, str]] = queue.SimpleQueue()
        for i, session in enumerate(inserting):
            self._inserters.put((session, f"batch-{i}.bin"))
        self._all = [self._writer, *sessions, *inserting]
        # Batches reach the engine as files it reads with file(); memory-backed where there is one.
        shm = Path("/dev/shm")
        spools = shm if shm.is_dir() else Path(tempfile.gettempdir())
        _remove_stale_spools(spools)
        self._spool = Path(tempfile.mkdtemp(prefix=f"clew-ingest-{os.getpid()}-", dir=spools))
        self._streams = itertools.count()
        self._streaming: set[StreamedInsert] = set()  # begun and not yet finished
        self._closed = False
        self._purge = release_memory  # after each insert (see `_release_memory`)

    def query(self, sql: str, params: dict[str, object] | None = None) -> pa.Table:
        sql = with_functions(sql)
        self._check()
        reader = self._readers.get()
        budget = QUERY_SECONDS.get()
        try:
            if budget is None:
                table: pa.Table = reader.run(sql, "ArrowTable", params)
                return table
            with reader.lock:  # the session's limit is set for this statement only
                reader.execute(f"SET max_execution_time = {budget:g}", "CSV", None)
                try:
                    table = reader.execute(sql, "ArrowTable", params)
                    return table
                except StoreError as exc:
                    raise over_budget(exc, budget) from exc
                finally:
                    reader.execute("SET max_execution_time = 0", "CSV", None)
        finally:
            self._readers.put(reader)

    def command(self, sql: str, params: dict[str, object] | None = None) -> None:
        sql = with_functions(sql)
        self._check()
        self._writer.run(sql, "CSV", params)

    def insert_formatted(
        self,
        sql: str,
        fmt: str,
        structure: str,
        data: Data,
        settings: dict[str, object],
        params: dict[str, object],
    ) -> None:
        self._check()
        session, name = self._inserters.get()
        try:
            with session.lock:  # its spool file, and the insert that reads it
                spool = self._spool / name
                fd = os.open(spool, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    write_data(fd, data)
                finally:
                    os.close(fd)
                try:
                    session.execute(self._statement(sql, spool, fmt, structure, settings), "CSV", params)
                finally:
                    spool.unlink(missing_ok=True)
                self._after_insert(session, sum(map(len, pieces(data))))
        finally:
            self._inserters.put((session, name))

    def begin_insert(
        self,
        sql: str,
        fmt: str,
        structure: str,
        settings: dict[str, object],
        params: dict[str, object],
        on_thread: Callable[[], None] | None = None,
    ) -> StreamedInsert:
        """Start an insert whose data is not there yet (see `StreamedInsert`); `on_thread` runs first
        on the thread the engine analyses it on (the committer's priority and name)."""
        self._check()
        session, name = self._inserters.get()
        fifo = self._spool / f"stream-{next(self._streams)}.fifo"
        stream = StreamedInsert(
            session,
            fifo,
            self._statement(sql, fifo, fmt, structure, {**settings, "storage_file_read_method": "read"}),
            params,
            lambda sent: self._end_stream(stream, session, name, sent),
            on_thread,
        )
        self._streaming.add(stream)
        return stream

    def _end_stream(self, stream: StreamedInsert, session: _Session, name: str, sent: int) -> None:
        self._after_insert(session, sent)
        self._streaming.discard(stream)
        self._inserters.put((session, name))

    def _statement(self, sql: str, path: Path, fmt: str, structure: str, settings: dict[str, object]) -> str:
        """An insert's SQL reading its rows from `path` (the spool file, or a begun insert's pipe)."""
        source = f"file({quote(str(path))}, {quote(fmt)}, {quote(structure)})"
        return sql.replace("{source}", source) + _settings_clause(self._schema_file(settings))

    def _after_insert(self, session: _Session, sent: int) -> None:
        """An insert of `sent` bytes returned on `session`: a large one's freed memory goes back now."""
        if sent >= RELEASE_AFTER_BYTES:
            self._release_memory(session)

    def _release_memory(self, session: _Session) -> None:
        """Hand the memory an insert freed back to the system now. The engine's allocator keeps
        freed pages for seconds; a 100,000-span insert leaves ~230 MiB of them, which the next
        insert's peak stacked on (server RSS 1,138 -> 1,062 MiB under 32 clients of 2 MB requests,
        ~20 ms a purge; bench/RESULTS.md). Only after inserts of `RELEASE_AFTER_BYTES` or more: a
        small one frees little, and a quiet server's few-span inserts would pay the purge and then
        fault the pages in again. Where the engine has no such command, never again."""
        if not self._purge:
            return
        try:
            session.execute("SYSTEM JEMALLOC PURGE", "CSV", None)
        except ClewError:
            self._purge = False

    def _schema_file(self, settings: dict[str, object]) -> dict[str, object]:
        """A schema sent as a string (`format_schema_source = 'string'`) made a file in the data
        directory: given the text, the embedded engine caches it under `__cache__/` in the process's
        working directory, wherever `clew` was started."""
        if settings.get("format_schema_source") != "string":
            return settings
        text = str(settings["format_schema"])
        directory = self.path / "format_schemas"
        directory.mkdir(exist_ok=True)
        path = directory / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.proto"
        if not path.exists():  # whole or not at all: two inserts may get here at once
            part = path.with_suffix(f".{threading.get_ident()}.tmp")
            part.write_text(text)
            os.replace(part, path)
        rest = {
            k: v
            for k, v in settings.items()
            if k not in ("format_schema_source", "format_schema", "format_schema_message_name")
        }
        return {**rest, "format_schema": f"{path}:{settings['format_schema_message_name']}"}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for stream in list(self._streaming):  # an insert waiting for rows holds its session
            stream.cancel()
        for s in self._all:
            with s.lock:  # after the statement it runs, if any
                s.session.close()
        shutil.rmtree(self._spool, ignore_errors=True)

    def _check(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")


def _remove_stale_spools(directory: Path) -> None:
    """Spool directories of processes that are gone: a process killed during an insert leaves its
    last batch there, unredacted; the next process to open a store removes it."""
    for spool in directory.glob("clew-ingest-*"):
        pid = spool.name.removeprefix("clew-ingest-").split("-", 1)[0]
        if not pid.isdigit():  # from before spools carried their process id
            shutil.rmtree(spool, ignore_errors=True)
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(spool, ignore_errors=True)
        except PermissionError:  # alive, another user's
            pass


# the pipe a streamed insert's data goes through (the kernel's default is 64 KiB; 1 MiB is the most an
# unprivileged process may ask for): fewer wake-ups of the engine's reader and of the sender
PIPE_BYTES = 1 << 20


class StreamedInsert:
    """An insert started before its data exists. The engine parses, analyses and plans an insert's SQL
    (~0.12 s of CPU for the spans' insert, whatever it holds) before it reads a row; started on a
    named pipe, it does that while the committer's previous insert still runs, then waits for the
    rows. `finish(data)` sends them and returns when the insert has, so an insert's wall time is
    its rows' alone (bench/begun_insert.py). The rows pass through the kernel's pipe buffer,
    never a file. `cancel()` ends it with no rows: no part is written.

    The write end is opened only once the engine holds the read end: a pipe's contents die with its
    last descriptor, and an engine that opens it after every writer closed waits for a writer
    forever (tests/test_begun_inserts.py: rows sent while the SQL is still being analysed)."""

    def __init__(
        self,
        session: _Session,
        fifo: Path,
        sql: str,
        params: dict[str, object],
        release: Callable[[int], None],  # given the bytes sent
        on_thread: Callable[[], None] | None,
    ) -> None:
        self._session, self._fifo, self._release = session, fifo, release
        os.mkfifo(fifo, 0o600)
        self._error: BaseException | None = None
        self._done = threading.Event()  # the engine's statement returned
        self._ended = False
        self._sent = 0
        self._thread = threading.Thread(
            target=self._run, args=(sql, params, on_thread), name="clew-stream", daemon=True
        )
        self._thread.start()

    def _run(self, sql: str, params: dict[str, object], on_thread: Callable[[], None] | None) -> None:
        if on_thread is not None:
            on_thread()
        try:
            self._session.run(sql, "CSV", params)
        except BaseException as exc:  # handed to whoever finishes the insert
            self._error = exc
        finally:
            self._done.set()

    def _writer(self) -> int | None:
        """The pipe's write end once the engine reads it; None if the statement ended first (it
        failed before it opened its input)."""
        pause = 0.001
        while True:
            try:
                fd = os.open(self._fifo, os.O_WRONLY | os.O_NONBLOCK)  # fails while nobody reads
            except OSError:
                if self._done.wait(pause):
                    return None
                pause = min(pause * 2, 0.02)
                continue
            os.set_blocking(fd, True)
            with contextlib.suppress(OSError):  # a smaller pipe works, only slower
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
            return fd

    def finish(self, data: Data) -> None:
        """Send the rows and wait for the insert to commit them; raises what the insert raised."""
        self._end(data)

    def cancel(self) -> None:
        """End the insert with no rows."""
        with contextlib.suppress(ClewError):
            self._end(None)

    def _end(self, data: Data | None) -> None:
        if self._ended:
            return
        self._ended = True
        broken = False
        try:
            fd = self._writer()
            if fd is not None:
                try:
                    if data is not None:
                        write_data(fd, data)  # the engine reads as it comes
                        self._sent = sum(map(len, pieces(data)))
                except BrokenPipeError:  # the engine closed its input: its error says why
                    broken = True
                finally:
                    os.close(fd)  # the engine reads the end of its input
            self._thread.join()
        finally:
            self._fifo.unlink(missing_ok=True)
            self._release(self._sent)
        if self._error is not None:
            raise self._error
        if broken:
            raise StoreError("the engine stopped reading a begun insert's rows")
