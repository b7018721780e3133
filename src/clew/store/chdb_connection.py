"""The ClickHouse engine running in this process through chdb, with its data in a directory."""

from __future__ import annotations

import threading
from pathlib import Path

import pyarrow as pa

from clew.model import to_ipc
from clew.store.base import StoreError


def _settings_clause(settings: dict[str, object] | None) -> str:
    if not settings:
        return ""
    return " SETTINGS " + ", ".join(f"{k} = {v!r}" for k, v in settings.items())


class ChdbConnection:
    """One chdb session per process: whoever opens it owns the data directory until `close()`."""

    def __init__(self, data_dir: str | Path) -> None:
        from chdb import session  # imported lazily: loading the engine takes a moment

        self.path = Path(data_dir).resolve()
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            self._session = session.Session(str(self.path))
            self._session.query("SELECT 1")
        except Exception as exc:  # chdb raises RuntimeError with ClickHouse's text
            raise StoreError(
                f"cannot open data directory {self.path}: {exc}. "
                "Is a clew server running on it? Stop it, or talk to it with --url."
            ) from exc
        # Inserts and reads may come from different threads; chdb serialises them per session,
        # this lock only keeps close() from racing a query.
        self._lock = threading.RLock()
        self._closed = False

    def query(self, sql: str, params: dict[str, object] | None = None) -> pa.Table:
        with self._lock:
            self._check()
            try:
                return self._session.query(sql, "ArrowTable", params=params or None)
            except Exception as exc:
                raise StoreError(str(exc)) from exc

    def command(self, sql: str, params: dict[str, object] | None = None) -> None:
        with self._lock:
            self._check()
            try:
                self._session.query(sql, "CSV", params=params or None)
            except Exception as exc:
                raise StoreError(str(exc)) from exc

    def insert(self, table: str, data: pa.Table, settings: dict[str, object] | None = None) -> None:
        payload = to_ipc(data)
        with self._lock:
            self._check()
            try:
                inserter = self._session.send_insert(
                    f"INSERT INTO {table}{_settings_clause(settings)}", "ArrowStream"
                )
                inserter.append(payload)
                inserter.finish()
            except Exception as exc:
                raise StoreError(str(exc)) from exc

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._session.close()

    def _check(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")
