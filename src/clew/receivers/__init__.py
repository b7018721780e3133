"""Receivers decode what clients send into `OtlpBatch`es and hand them to a sink. They know no
storage: the sink's contract is this callable, which may raise `Backpressure` or `StoreError`
(`clew.core.errors`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from clew.core.model import OtlpBatch

Sink = Callable[[OtlpBatch], Awaitable[None]]

__all__ = ["Sink"]
