"""The storage seam: a ClickHouse connection, the engine in-process (chdb) or a server. Everything
above it speaks SQL through these four methods."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import pyarrow as pa

from clew.core.errors import BadRequest, ClewError, QueryTooCostly, StoreError
from clew.core.model import FileSlice, Payload

# an insert's source: its bytes, or its pieces in order (written one after the other, not joined)
Data = bytes | Sequence[Payload]


def pieces(data: Data) -> Sequence[Payload]:
    return [data] if isinstance(data, bytes) else data


class _Sources:
    """The files an insert's slices lie in, each opened once for all its slices (a 100,000-span
    insert is ~200 slices of one segment), closed on exit."""

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}

    def fd(self, path: str) -> int:
        if path not in self._fds:
            self._fds[path] = os.open(path, os.O_RDONLY)
        return self._fds[path]

    def __enter__(self) -> _Sources:
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in self._fds.values():
            os.close(fd)


def joined(data: Data) -> bytes:
    """The data as one `bytes` (what a server's client sends)."""
    if isinstance(data, bytes):
        return data
    with _Sources() as sources:
        return b"".join(p.read(sources.fd(p.path)) if isinstance(p, FileSlice) else p for p in data)


def write_data(fd: int, data: Data) -> None:
    """The data written to the file `fd` in order; slices of other files are copied by the kernel."""
    with _Sources() as sources:
        for piece in pieces(data):
            if isinstance(piece, FileSlice):
                at, end = piece.offset, piece.offset + piece.length
                while at < end:
                    sent = os.sendfile(fd, sources.fd(piece.path), at, end - at)
                    if sent == 0:
                        raise piece.cut_short()
                    at += sent
            else:
                view = memoryview(piece)
                while view:
                    view = view[os.write(fd, view) :]


# Settings of the reads (every statement of an embedded session). The engine (26.x) keeps statistics of every column
# of every part and, by default, loads them at each query to estimate selectivity: ~3 ms a part,
# which made a trace lookup over a busy hour's parts 2-3x slower (41-49 ms against 17-24 with 5
# parts; bench/RESULTS.md, session 25). clew's reads are narrowed by the sort key and the min/max
# indexes, which need no statistics.
READ_SETTINGS: dict[str, int] = {"use_statistics": 0}


class Connection(Protocol):
    database: str  # where clew's tables are

    def query(self, sql: str, params: dict[str, object] | None = None) -> pa.Table: ...

    def command(self, sql: str, params: dict[str, object] | None = None) -> None: ...

    def insert_formatted(
        self,
        sql: str,
        fmt: str,
        structure: str,
        data: Data,
        settings: dict[str, object],
        params: dict[str, object],
    ) -> None:
        """Run `sql` (an INSERT ... SELECT over `{source}`) with `data` in format `fmt` as the source."""
        ...

    def close(self) -> None: ...


class InsertStream(Protocol):
    """An insert begun before its data (`StreamingConnection.begin_insert`)."""

    def finish(self, data: Data) -> None:
        """Send the data and return once it is committed; raises what the insert raised."""
        ...

    def cancel(self) -> None:
        """End it with no data: nothing is written."""
        ...


@runtime_checkable
class StreamingConnection(Connection, Protocol):
    """A connection that can start an insert before its data exists (the embedded engine): the
    insert's fixed cost, its SQL's analysis, is then paid while the previous insert runs."""

    def begin_insert(
        self,
        sql: str,
        fmt: str,
        structure: str,
        settings: dict[str, object],
        params: dict[str, object],
        on_thread: Callable[[], None] | None = None,
    ) -> InsertStream: ...


# Engine errors that come from what a request asked, not from the store: a backstop behind the
# parsers' own checks (regexes, nesting), answered 400 with the error's name and no engine text.
_QUERY_FAULTS = re.compile(
    r"\((CANNOT_COMPILE_REGEXP|TOO_DEEP_RECURSION|TOO_DEEP_AST|TOO_BIG_AST|TOO_DEEP_SUBQUERIES)\)"
)


def engine_error(text: str) -> ClewError:
    """The domain error for an engine's error text, the same whichever connection reported it."""
    kind = _QUERY_FAULTS.search(text)
    if kind is not None:  # what the request asked is what the engine cannot run
        return BadRequest(f"the query cannot be run as written ({kind.group(1)}): simplify it")
    return StoreError(text)


def over_budget(exc: StoreError, budget: float) -> ClewError:
    """A statement run under a tenant's `max_execution_time`: its timeout is the tenant's budget."""
    if "TIMEOUT_EXCEEDED" in exc.message:
        return QueryTooCostly(
            f"the query ran past this tenant's budget of {budget:g} s (query_timeout_s) "
            "and was stopped: narrow the time range or the query"
        )
    return exc
