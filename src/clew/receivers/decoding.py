"""Decoding off the event loop: request bodies go to worker processes, columns come back as Arrow IPC.

Python-level work per attribute bounds ingest, so decoding runs in processes to use every core; the
loop keeps serving HTTP/gRPC and the writer keeps committing. Small bodies are decoded inline, where
the round trip to a worker would cost more than it saves.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

from clew.model import SpanBatch, from_ipc, to_ipc
from clew.receivers.otlp import Decoded, decode_json, decode_protobuf
from clew.receivers.zipkin import decode_zipkin

DECODERS: dict[str, Callable[[bytes, str], Decoded]] = {
    "otlp-protobuf": decode_protobuf,
    "otlp-json": decode_json,
    "zipkin-json": decode_zipkin,
}


def _decode_in_worker(kind: str, body: bytes, tenant: str) -> tuple[bytes, int, dict[str, int]]:
    decoded = DECODERS[kind](body, tenant)
    return to_ipc(decoded.batch.table), decoded.rejected, dict(decoded.reasons)


def _ready() -> int:
    return os.getpid()


def default_workers() -> int:
    return os.cpu_count() or 1


class Decoder:
    """`await decoder.decode(kind, body, tenant)`; `workers=0` decodes everything inline."""

    def __init__(self, workers: int = 0, inline_below: int = 64 * 1024) -> None:
        self.workers = workers
        self.inline_below = inline_below
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> None:
        if self.workers > 0:
            # spawn, not fork: the parent holds the engine's threads, which a fork must not copy
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
            for f in [self._pool.submit(_ready) for _ in range(self.workers)]:
                f.result(timeout=120)

    async def decode(self, kind: str, body: bytes, tenant: str) -> Decoded:
        if self._pool is None or len(body) < self.inline_below:
            return DECODERS[kind](body, tenant)
        loop = asyncio.get_running_loop()
        ipc, rejected, reasons = await loop.run_in_executor(self._pool, _decode_in_worker, kind, body, tenant)
        return Decoded(SpanBatch(from_ipc(ipc)), rejected, Counter(reasons))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
