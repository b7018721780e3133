"""The ClickHouse engine running in this process through chdb, with its data in a directory."""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path

import pyarrow as pa

from clew.core.errors import StoreError


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _settings_clause(settings: dict[str, object]) -> str:
    if not settings:
        return ""
    return " SETTINGS " + ", ".join(
        f"{k} = {_quote(v) if isinstance(v, str) else v}" for k, v in settings.items()
    )


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
        # Batches reach the engine as files it reads with file(); memory-backed where there is one.
        shm = Path("/dev/shm")
        self._spool = Path(tempfile.mkdtemp(prefix="clew-ingest-", dir=shm if shm.is_dir() else None))
        # One statement at a time: a chdb session keeps query parameters as session state, so
        # concurrent statements would see each other's parameters.
        self._lock = threading.Lock()
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

    def format_schema(self, name: str, text: str) -> str:
        directory = self.path / "format_schemas"
        directory.mkdir(exist_ok=True)
        path = directory / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        return str(path)

    def insert_formatted(
        self,
        sql: str,
        fmt: str,
        structure: str,
        data: bytes,
        settings: dict[str, object],
        params: dict[str, object],
    ) -> None:
        with self._lock:
            self._check()
            spool = self._spool / "batch.bin"
            spool.write_bytes(data)
            source = f"file({_quote(str(spool))}, {_quote(fmt)}, {_quote(structure)})"
            try:
                self._session.query(
                    sql.replace("{source}", source) + _settings_clause(settings), "CSV", params=params or None
                )
            except Exception as exc:
                raise StoreError(str(exc)) from exc
            finally:
                spool.unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._session.close()
                shutil.rmtree(self._spool, ignore_errors=True)

    def _check(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")
