"""Receivers decode what clients send into `SpanBatch`es and hand them to a sink; they know no storage."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from clew.model import SpanBatch

if TYPE_CHECKING:
    from clew.receivers.otlp import Decoded

Sink = Callable[[SpanBatch], Awaitable[None]]
# (kind, body, tenant) -> Decoded, where kind is "otlp-protobuf", "otlp-json" or "zipkin-json"
Decode = Callable[[str, bytes, str], Awaitable["Decoded"]]

__all__ = ["Decode", "Sink"]
