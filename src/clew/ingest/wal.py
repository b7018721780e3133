"""The write-ahead log: requests are acknowledged once appended here, and committed to the store later
in large inserts (ingest/writer.py).

Segments live in a memory-backed directory (/dev/shm): they survive `kill -9` of the server (the
kernel keeps the pages) but never reach the disk, so the unredacted requests they hold are never at
rest; redaction runs when a segment is committed. A power loss loses what was not committed yet, as
it loses ClickHouse's unsynced parts. A segment is named by the run that wrote it and a sequence
number, which also names its inserts (deduplication tokens): a segment replayed after a crash that
had already been inserted is dropped by the engine, so every span is stored exactly once.

Record: u32 length of what follows, u32 tenant length, tenant, u32 records, payload (one serialized
ExportTraceServiceRequest, or ExportLogsServiceRequest where the top bit of the record count is
set). A record cut short by a kill was never acknowledged; replay skips it, and stops at anything
that does not decode.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from clew.core.model import LOGS, SPANS, FileSlice, OtlpBatch

SHM = Path("/dev/shm")
_HEAD = struct.Struct("<II")  # a tenant is whatever the header said: no bound of the log's own
_SPANS = struct.Struct("<I")
_LOGS_BIT = 1 << 31  # in the record count: the payload is a logs request


def default_dir(data_dir: Path) -> Path | None:
    """The log of a data directory, memory-backed; None where there is no such filesystem."""
    if not SHM.is_dir():
        return None
    digest = hashlib.sha1(str(data_dir.resolve()).encode()).hexdigest()[:16]
    return SHM / f"clew-wal-{digest}"


@dataclass
class Segment:
    """A file of the log. Its records stay in the file until committed, not in this process: the
    file is in memory already, and the store copies them from it to its insert's spool in the kernel
    (a copy on the heap was ~33 MB per insert in flight, up to a fifth of the server under load)."""

    path: Path
    spans: int = 0
    opened: float = 0.0  # monotonic time of its first record
    end: int = 0  # records appended to the log by this run up to the end of this segment
    done: bool = False  # committed (the committer's bookkeeping)

    @property
    def name(self) -> str:
        return self.path.stem

    def read(self) -> list[OtlpBatch]:
        return read_segment(self.path)


def encode(batch: OtlpBatch) -> bytes:
    tenant = batch.tenant.encode()
    out = bytearray()
    for i, payload in enumerate(batch.payloads):
        spans = batch.spans if i == 0 else 0
        if batch.signal == LOGS:
            spans |= _LOGS_BIT
        body = tenant + _SPANS.pack(spans) + (bytes(payload) if isinstance(payload, FileSlice) else payload)
        out += _HEAD.pack(len(body), len(tenant)) + body
    return bytes(out)


def read_segment(path: Path) -> list[OtlpBatch]:
    """The complete records of a segment file, in order, each payload left in the file (a
    `FileSlice`): only the records' headers are read, and the store copies the rest file to file."""
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        records = list(_records(lambda at, n: os.pread(f.fileno(), n, at), size))
    return [
        OtlpBatch(tenant, (FileSlice(str(path), at, length),), spans, signal)
        for tenant, spans, signal, at, length in records
    ]


def _records(read: Callable[[int, int], bytes], size: int) -> Iterator[tuple[str, int, str, int, int]]:
    """(tenant, records, signal, payload offset, payload length) of each whole record of a segment
    of `size` bytes, `read(offset, n)` giving its bytes; stops at a torn or damaged record."""
    at = 0
    while at + _HEAD.size <= size:
        length, tenant_len = _HEAD.unpack(read(at, _HEAD.size))
        start = at + _HEAD.size
        if start + length > size or length < tenant_len + _SPANS.size:
            return
        meta = read(start, tenant_len + _SPANS.size)
        try:
            tenant = meta[:tenant_len].decode()
        except UnicodeDecodeError:
            return
        (spans,) = _SPANS.unpack_from(meta, tenant_len)
        signal = LOGS if spans & _LOGS_BIT else SPANS
        payload = start + tenant_len + _SPANS.size
        yield tenant, spans & ~_LOGS_BIT, signal, payload, at + _HEAD.size + length - payload
        at += _HEAD.size + length


class Wal:
    """Appends to the open segment; `seal()` hands it to the committer and opens the next."""

    def __init__(self, directory: Path, roll_spans: int | None = None) -> None:
        """`roll_spans`: a segment that holds this many records is sealed and the next one opened,
        so that no insert holds more than that (plus one request) however far the committer is
        behind; the engine's memory for an insert grows with its rows."""
        self.dir = directory
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.run = uuid.uuid4().hex[:12]
        self.roll_spans = roll_spans
        self._seq = 0
        self.appended = 0  # records appended by this run, in order (a segment's `end` counts them)
        self._lock = threading.Lock()
        self._open: Segment | None = None
        self._sealed: list[Segment] = []  # full segments waiting for the committer, oldest first
        self._fd = -1

    def leftovers(self) -> list[Segment]:
        """Segments a previous run left (not yet committed, or committed but not trimmed), oldest
        first: the committer replays them before anything new."""
        found = []
        for path in sorted(self.dir.glob("*.wal"), key=lambda p: p.stat().st_mtime_ns):
            found.append(Segment(path, sum(b.spans for b in read_segment(path))))
        return found

    def append(self, batch: OtlpBatch, now: float) -> None:
        """Once this returns, the batch survives the death of this process."""
        record = encode(batch)
        with self._lock:
            if self._open is None:
                self._seq += 1
                path = self.dir / f"{self.run}-{self._seq:012d}.wal"
                self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                self._open = Segment(path, opened=now)
            view = memoryview(record)
            while view:
                view = view[os.write(self._fd, view) :]
            self._open.spans += batch.spans
            self.appended += batch.spans
            self._open.end = self.appended
            if self.roll_spans is not None and self._open.spans >= self.roll_spans:
                self._sealed.append(self._close_open())

    def pending(self) -> tuple[int, float | None]:
        """Records not yet handed to the committer, and when the oldest of them arrived."""
        with self._lock:
            segments = [*self._sealed, *([self._open] if self._open is not None else [])]
            if not segments:
                return 0, None
            return sum(s.spans for s in segments), segments[0].opened

    def sealed(self) -> int:
        """How many full segments wait for the committer besides the open one."""
        with self._lock:
            return len(self._sealed)

    def seal(self) -> Segment | None:
        """The oldest segment not yet handed out: a full one, or else the open one, sealed."""
        with self._lock:
            if self._sealed:
                return self._sealed.pop(0)
            return self._close_open() if self._open is not None else None

    def _close_open(self) -> Segment:
        segment, self._open = self._open, None
        assert segment is not None
        os.close(self._fd)
        self._fd = -1
        return segment

    @staticmethod
    def trim(segment: Segment) -> None:
        segment.path.unlink(missing_ok=True)

    def close(self) -> None:
        """After the committer drained it: an empty log leaves no directory behind."""
        self.seal()
        if not any(self.dir.glob("*.wal")):
            self.dir.rmdir()
