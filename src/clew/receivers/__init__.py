"""Receivers decode what clients send into `SpanBatch`es and hand them to a sink; they know no storage."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from clew.model import OtlpBatch

Sink = Callable[[OtlpBatch], Awaitable[None]]

__all__ = ["Sink"]
