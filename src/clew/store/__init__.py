"""Storage: one ClickHouse schema and SQL, reached in-process (chdb) or on a server, through the
five-method `Connection`. Roles: `SpanWriter` (ingest), `TraceReader` (queries); components keep
their own SQL beside their logic and reach the engine through the same `Connection`."""

from clew.store.connection import Connection
from clew.store.spans import ClickHouseSpanWriter, SpanWriter
from clew.store.traces import ClickHouseTraceReader, TraceReader

__all__ = ["ClickHouseSpanWriter", "ClickHouseTraceReader", "Connection", "SpanWriter", "TraceReader"]
