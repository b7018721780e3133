"""Span storage: one ClickHouse schema and SQL, reached in-process (chdb) or on a server."""

from clew.store.base import Store, StoreError
from clew.store.clickhouse import ClickHouseStore, open_embedded

__all__ = ["ClickHouseStore", "Store", "StoreError", "open_embedded"]
