"""Receivers decode what clients send into `SpanBatch`es and hand them to a sink; they know no storage."""

from collections.abc import Awaitable, Callable

from clew.model import SpanBatch

Sink = Callable[[SpanBatch], Awaitable[None]]

__all__ = ["Sink"]
