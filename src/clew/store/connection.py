"""The storage seam: a ClickHouse connection, the engine in-process (chdb) or a server. Everything
above it speaks SQL through these five methods."""

from __future__ import annotations

from typing import Protocol

import pyarrow as pa


class Connection(Protocol):
    def query(self, sql: str, params: dict[str, object] | None = None) -> pa.Table: ...

    def command(self, sql: str, params: dict[str, object] | None = None) -> None: ...

    def format_schema(self, name: str, text: str) -> str:
        """Make a `.proto` schema available to the engine; returns the `format_schema` path for it."""
        ...

    def insert_formatted(
        self,
        sql: str,
        fmt: str,
        structure: str,
        data: bytes,
        settings: dict[str, object],
        params: dict[str, object],
    ) -> None:
        """Run `sql` (an INSERT ... SELECT over `{source}`) with `data` in format `fmt` as the source."""
        ...

    def close(self) -> None: ...
