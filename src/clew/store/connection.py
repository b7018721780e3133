"""The storage seam: a ClickHouse connection, the engine in-process (chdb) or a server. Everything
above it speaks SQL through these four methods."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

import pyarrow as pa

from clew.core.errors import BadRequest, ClewError, QueryTooCostly, StoreError

# an insert's source: its bytes, or its pieces in order (written one after the other, not joined)
Data = bytes | Sequence[bytes | memoryview]


def joined(data: Data) -> bytes:
    return data if isinstance(data, bytes) else b"".join(data)


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
