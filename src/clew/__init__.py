"""clew: follow every request through the maze of services."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["instrument"]


def __getattr__(name: str) -> Any:
    """`from clew import instrument` without loading the OpenTelemetry SDK for every `clew` command."""
    if name == "instrument":
        from clew.instrumentation import instrument

        return instrument
    raise AttributeError(f"module 'clew' has no attribute {name!r}")
