"""Go-style durations (`1.5s`, `100ms`, `1h30m`, `7d`): Jaeger's API parameters, `--since` and clew.toml."""

from __future__ import annotations

import re

from clew.core.errors import BadRequest

_UNITS = {"ns": 1, "us": 10**3, "µs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
_UNITS_WITH_DAYS = {**_UNITS, "d": 24 * 3600 * 10**9}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d)")


# the longest duration the engine's Int64 nanoseconds hold (about 292 years)
MAX_DURATION_NS = 2**63 - 1


class DurationError(BadRequest):
    pass


def parse_duration(text: str, allow_days: bool = False) -> int:
    """A Go duration in nanoseconds."""
    units = _UNITS_WITH_DAYS if allow_days else _UNITS
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos or match.group(2) not in units:
            break
        total += float(match.group(1)) * units[match.group(2)]
        pos = match.end()
    if pos == 0 or pos != len(text):
        raise DurationError(
            f"cannot parse duration {text!r}: use a number and a unit such as 250ms, 1.5s or 2h"
        )
    if total > MAX_DURATION_NS:
        raise DurationError(f"duration {text[:40]!r} is longer than the longest one stored (2562047h)")
    return int(total)
