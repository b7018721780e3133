"""The storage interface every backend implements; receivers and the query layer depend on this only."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

import pyarrow as pa

from clew.model import SpanBatch


class StoreError(RuntimeError):
    """The backend failed; the request that caused it may be retried."""


class Connection(Protocol):
    """A ClickHouse connection: the engine in-process (chdb) or a server (a later backend)."""

    def query(self, sql: str, params: dict[str, object] | None = None) -> pa.Table: ...

    def command(self, sql: str, params: dict[str, object] | None = None) -> None: ...

    def insert(self, table: str, data: pa.Table, settings: dict[str, object] | None = None) -> None: ...

    def close(self) -> None: ...


class Store(Protocol):
    def write(self, batch: SpanBatch) -> None:
        """Commit the batch durably; returns only once it is on disk."""
        ...

    def get_trace(self, trace_id: bytes, tenant: str = ...) -> SpanBatch: ...

    def services(self, tenant: str = ...) -> list[str]: ...

    def operations(
        self, service: str, kind: int | None = None, tenant: str = ...
    ) -> list[tuple[str, int]]: ...

    def span_count(self, tenant: str | None = None) -> int: ...

    def purge(self, before: datetime) -> None: ...

    def close(self) -> None: ...
