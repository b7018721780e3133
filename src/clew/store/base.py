"""The storage interface every backend implements; receivers and the query layer depend on this only."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

import pyarrow as pa

from clew.model import DEFAULT_TENANT, OtlpBatch, SpanBatch
from clew.query.language import Query

if TYPE_CHECKING:
    from clew.store.completeness import Completeness
    from clew.store.processed import ProcessedScan
    from clew.store.red import RedMetrics
    from clew.store.sampling import SamplingStore
    from clew.store.servicegraph import ServiceGraph


class StoreError(RuntimeError):
    """The backend failed; the request that caused it may be retried."""


@dataclass(frozen=True, slots=True)
class TraceQuery:
    """Jaeger's search: one span of `service` must match every condition. Times in nanoseconds."""

    service: str
    start_min: int
    start_max: int
    operation: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    duration_min: int | None = None
    duration_max: int | None = None
    limit: int = 100
    tenant: str = DEFAULT_TENANT


@dataclass(frozen=True, slots=True)
class SearchRequest:
    """A query-language search: traces with a matching span starting in [start, end] nanoseconds."""

    query: Query
    start: int
    end: int
    limit: int = 20
    spans_per_trace: int = 3
    tenant: str = DEFAULT_TENANT


@dataclass(frozen=True, slots=True)
class MatchedSpan:
    span_id: bytes
    service: str
    name: str
    start: int
    duration: int
    status_code: int


@dataclass(slots=True)
class TraceSummary:
    trace_id: bytes
    root_service: str
    root_name: str
    start: int
    duration: int
    span_count: int
    error_count: int
    services: dict[str, tuple[int, int]]  # service -> (spans, errors)
    matched: int = 0
    spans: list[MatchedSpan] = field(default_factory=list)


@dataclass(slots=True)
class SearchResult:
    traces: list[TraceSummary]
    inspected_traces: int
    complete: bool  # False when the search stopped before it had looked at every candidate trace


class Connection(Protocol):
    """A ClickHouse connection: the engine in-process (chdb) or a server (a later backend)."""

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


class Store(Protocol):
    red: RedMetrics  # span-derived RED metrics (store/red.py)
    completeness: Completeness  # incomplete-trace detection (store/completeness.py)
    servicegraph: ServiceGraph  # edges with errors and latency, and uninstrumented peers
    sampling: SamplingStore  # tail-sampling decisions and the retention tiers
    processed: ProcessedScan  # what redaction and name templates did, for /metrics

    def received_until(self) -> int:
        """Every span received at or before this time (ns, the store's clock) is committed or refused."""
        ...

    def write(self, batch: OtlpBatch) -> None:
        """Commit the batch durably; returns only once it is on disk."""
        ...

    def get_trace(self, trace_id: bytes, tenant: str = ...) -> SpanBatch: ...

    def get_traces(self, trace_ids: list[bytes], tenant: str = ...) -> SpanBatch: ...

    def find_traces(self, query: TraceQuery) -> list[bytes]:
        """Ids of matching traces, the most recent first, at most `query.limit`."""
        ...

    def search(self, request: SearchRequest) -> SearchResult:
        """Traces matching a query-language query, the most recent first, at most `request.limit`."""
        ...

    def dependencies(self, start: int, end: int, tenant: str = ...) -> list[tuple[str, str, int]]:
        """(parent service, child service, calls) for child spans started in [start, end] nanoseconds
        whose parent, in another service, started at most an hour before the child's hour."""
        ...

    def services(self, tenant: str = ...) -> list[str]: ...

    def operations(
        self, service: str, kind: int | None = None, tenant: str = ...
    ) -> list[tuple[str, int]]: ...

    def span_count(self, tenant: str | None = None) -> int: ...

    def purge(self, before: datetime) -> None: ...

    def close(self) -> None: ...
