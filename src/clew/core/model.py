"""The span model: one columnar `SpanBatch` flows from receivers through the pipeline to the store.

The column list below is the single source of truth for both the Arrow schema that receivers build
and the ClickHouse DDL that the store creates, so the two cannot drift apart.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass

import pyarrow as pa


class SpanKind(enum.IntEnum):
    """OTLP `Span.SpanKind` values, stored as they are on the wire."""

    UNSPECIFIED = 0
    INTERNAL = 1
    SERVER = 2
    CLIENT = 3
    PRODUCER = 4
    CONSUMER = 5


class StatusCode(enum.IntEnum):
    """OTLP `Status.StatusCode` values."""

    UNSET = 0
    OK = 1
    ERROR = 2


# lower-case names as queries and APIs spell them -> wire values
KIND_CODES = {k.name.lower(): k.value for k in SpanKind}
STATUS_CODES = {s.name.lower(): s.value for s in StatusCode}

DEFAULT_TENANT = "default"


def typed_map_columns(prefix: str) -> list[tuple[str, str, pa.DataType]]:
    """Attribute sets as one map per value type, so an int sent in is an int in every answer.

    Keys are plain `String`: `LowCardinality` map keys halved insert throughput (bench/RESULTS.md).
    """
    key = "String"
    return [
        (f"{prefix}_string", f"Map({key}, String) {TEXT}", pa.map_(pa.string(), pa.string())),
        (f"{prefix}_int", f"Map({key}, Int64) {TEXT}", pa.map_(pa.string(), pa.int64())),
        (f"{prefix}_float", f"Map({key}, Float64) {TEXT}", pa.map_(pa.string(), pa.float64())),
        (f"{prefix}_bool", f"Map({key}, Bool) {TEXT}", pa.map_(pa.string(), pa.bool_())),
        # arrays, key-value lists and bytes: a tag letter and the serialized message (see attributes.py)
        (f"{prefix}_complex", f"Map({key}, String) {TEXT}", pa.map_(pa.string(), pa.binary())),
    ]


LC = "LowCardinality(String)"
# Codecs, chosen by measurement (bench/storage.py, bench/RESULTS.md 2026-11-30): text and attribute
# maps repeat keys and values across the spans of a trace and its neighbours, which ZSTD at level 3
# finds and LZ4 (the default) and ZSTD(1) mostly do not (tracegen-shaped attribute maps: 8.5 B a
# span with LZ4, 22.7 with ZSTD(1), 4.1 with ZSTD(3)); trace and parent ids repeat within a trace.
TEXT = "CODEC(ZSTD(3))"
IDS = "CODEC(ZSTD(1))"
# Columns of a few distinct values a span (kind, status, service): the engine's default LZ4 leaves
# them at ~0.7 bytes a span where ZSTD(1) takes ~0.3, for no CPU that shows (bench/RESULTS.md).
FEW = "CODEC(ZSTD(1))"
# Attribute lists of scopes, events and links: (key, AnyValue field number, value as text). Searchable
# as text, as Jaeger's tag search compares; typed again on the way out (attributes.py).
ATTRIBUTE_LIST = "Array(Tuple(key String, type UInt8, value String))"
ATTRIBUTE = pa.struct([("key", pa.string()), ("type", pa.uint8()), ("value", pa.binary())])
TS = pa.timestamp("ns", tz="UTC")

# (column, ClickHouse type, Arrow type)
COLUMNS: list[tuple[str, str, pa.DataType]] = [
    ("tenant", LC, pa.string()),
    ("trace_id", f"FixedString(16) {IDS}", pa.binary(16)),
    ("span_id", "FixedString(8)", pa.binary(8)),  # random: nothing to gain
    ("parent_span_id", f"String {IDS}", pa.binary()),
    ("trace_state", "String", pa.string()),
    ("flags", "UInt32", pa.uint32()),
    ("name", f"{LC} {TEXT}", pa.string()),
    ("kind", f"UInt8 {FEW}", pa.uint8()),
    ("start_time", "DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1))", TS),
    ("duration", "UInt64 CODEC(ZSTD(1))", pa.uint64()),
    ("status_code", f"UInt8 {FEW}", pa.uint8()),
    ("status_message", f"String {TEXT}", pa.string()),
    ("service_name", f"{LC} {FEW}", pa.string()),
    *typed_map_columns("resource"),
    ("resource_dropped", "UInt32", pa.uint32()),
    ("resource_schema_url", LC, pa.string()),
    ("scope_name", LC, pa.string()),
    ("scope_version", LC, pa.string()),
    ("scope_attributes", f"{ATTRIBUTE_LIST} {TEXT}", pa.list_(ATTRIBUTE)),
    ("scope_dropped", "UInt32", pa.uint32()),
    ("scope_schema_url", LC, pa.string()),
    *typed_map_columns("attributes"),
    ("dropped_attributes", "UInt32", pa.uint32()),
    ("dropped_events", "UInt32", pa.uint32()),
    ("dropped_links", "UInt32", pa.uint32()),
    ("events_time", "Array(DateTime64(9, 'UTC'))", pa.list_(TS)),
    ("events_name", f"Array(String) {TEXT}", pa.list_(pa.string())),
    ("events_attributes", f"Array({ATTRIBUTE_LIST}) {TEXT}", pa.list_(pa.list_(ATTRIBUTE))),
    ("events_dropped", "Array(UInt32)", pa.list_(pa.uint32())),
    ("links_trace_id", "Array(String)", pa.list_(pa.binary())),
    ("links_span_id", "Array(String)", pa.list_(pa.binary())),
    ("links_trace_state", "Array(String)", pa.list_(pa.string())),
    ("links_attributes", f"Array({ATTRIBUTE_LIST}) {TEXT}", pa.list_(pa.list_(ATTRIBUTE))),
    ("links_dropped", "Array(UInt32)", pa.list_(pa.uint32())),
    ("links_flags", "Array(UInt32)", pa.list_(pa.uint32())),
    # how the span's and the resource's attributes were interleaved by type as sent, one letter each
    # (s string, i int, d double, b bool, c other): the typed maps keep the order within a type, so
    # this restores the whole order; empty where it was already grouped by type. Plain text under
    # ZSTD: where shapes vary from span to span (the shop workload's) a `LowCardinality` dictionary
    # took 5.0 bytes a span, this 2.6 (bench/RESULTS.md)
    ("attributes_order", f"String {TEXT}", pa.string()),
    ("resource_order", f"String {TEXT}", pa.string()),
]
# the columns before the order columns (added by a migration): what older layouts' steps create
HISTORIC_COLUMNS = COLUMNS[:-2]
ORDER_COLUMNS = COLUMNS[-2:]

SPAN_SCHEMA = pa.schema([(name, arrow_type) for name, _, arrow_type in COLUMNS])
RESOURCE_COLUMNS = [name for name, _, _ in COLUMNS if name.startswith(("resource_", "service_name"))]
SCOPE_COLUMNS = [name for name, _, _ in COLUMNS if name.startswith("scope_")]


@dataclass(frozen=True, slots=True)
class FileSlice:
    """`length` bytes of the file at `path` from `offset`: a payload left where it lies (a record of a
    log segment). A store that reads files has the kernel copy it (`os.sendfile`), so an insert does
    not hold a copy of its segment in this process's memory."""

    path: str
    offset: int
    length: int

    def __len__(self) -> int:
        return self.length

    def __bytes__(self) -> bytes:
        with open(self.path, "rb") as f:
            return self.read(f.fileno())

    def read(self, fd: int) -> bytes:
        """The slice's bytes from `fd`, the file at `path` opened by the caller (once for many)."""
        data = os.pread(fd, self.length, self.offset)
        if len(data) != self.length:
            raise self.cut_short()
        return data

    def cut_short(self) -> OSError:
        """The error of a file that ends before the slice does."""
        return OSError(f"{self.path} ends before its record at {self.offset}")


# a request's serialized body, as received or where it lies in a log segment
Payload = bytes | memoryview | FileSlice


@dataclass(frozen=True, slots=True)
class OtlpBatch:
    """Validated OTLP `ExportTraceServiceRequest` bodies on their way to the store.

    The ingest batch stays in wire form: the engine parses it into columns itself (store/otlp_wire.py),
    so no Python object is made per span or per attribute on the hot path.
    """

    tenant: str
    payloads: tuple[Payload, ...]  # slices of a log segment when read back for its commit
    spans: int  # records: spans, or log records when `signal` is LOGS
    # which OTLP signal the payloads are: `ExportTraceServiceRequest`s (SPANS) or
    # `ExportLogsServiceRequest`s (LOGS); both take the same way in (log, commit, acknowledgement)
    signal: str = "spans"

    def __len__(self) -> int:
        return self.spans

    @property
    def key(self) -> tuple[str, str]:
        """What one insert may hold: batches of one signal and one tenant."""
        return self.signal, self.tenant

    @classmethod
    def concat(cls, batches: list[OtlpBatch]) -> OtlpBatch:
        """Batches of one tenant and signal as one, in arrival order."""
        first = batches[0]
        if any(b.key != first.key for b in batches):
            raise ValueError("cannot merge batches of different tenants or signals")
        return cls(
            first.tenant,
            tuple(p for b in batches for p in b.payloads),
            sum(b.spans for b in batches),
            first.signal,
        )


SPANS, LOGS = "spans", "logs"


@dataclass(frozen=True, slots=True)
class SpanBatch:
    """Stored spans as one Arrow table with `SPAN_SCHEMA`: what the store answers reads with."""

    table: pa.Table

    def __len__(self) -> int:
        return int(self.table.num_rows)


def parse_trace_id(text: str) -> bytes | None:
    """A trace id in hex; 64-bit ids (16 hex) are the low half of a 128-bit id, as Jaeger treats them."""
    try:
        raw = bytes.fromhex(text if len(text) % 2 == 0 else "0" + text)
    except ValueError:
        return None
    if 0 < len(raw) <= 16:
        return raw.rjust(16, b"\0")
    return None
