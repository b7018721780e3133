"""Redaction before anything is stored: deny-listed keys and value detectors, compiled into the
insert's SQL (detectors.py), so no unredacted span is ever written. Its work is counted afterwards
from the marks its replacements leave in the rows (a dropped attribute leaves none, so it is not
counted)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from clew.components.base import COUNT_EVERY, BaseComponent, Context, MarkCounter
from clew.components.redaction.detectors import RedactionConfig, RedactionError, hash_key, transforms
from clew.core.telemetry import Metric, Sample
from clew.store.transforms import Transforms

__all__ = ["Redaction", "RedactionConfig", "RedactionError", "hash_key"]

# every replacement detectors.py writes starts with one of these
MARKS = ["[REDACTED", "[email:", "[card:", "[ip:", "[token:", "[hash:"]
MARKED = (
    "multiSearchAny(concat(name, '\\n', status_message, '\\n', arrayStringConcat(mapValues(attributes_string), "
    "'\\n'), '\\n', arrayStringConcat(mapValues(resource_string), '\\n')), {marks:Array(String)})"
)
SPANS = Metric("clew_redaction_spans", "counter", "Spans that went through redaction.")
REDACTED = Metric(
    "clew_redaction_redacted_spans", "counter", "Spans that came out of redaction with a value replaced."
)


class Redaction(BaseComponent):
    name = "redaction"
    telemetry = (SPANS, REDACTED)
    interval = COUNT_EVERY

    def __init__(self, ctx: Context, config: RedactionConfig, key_dir: Path) -> None:
        self.config = config
        # keyed hashes need a key kept beside the data, so equal values hash equal across restarts
        self.key = hash_key(key_dir) if config.enabled else (0, 0)
        self.counter = MarkCounter(ctx, MARKED, {"marks": MARKS})

    def insert_stage(self) -> Transforms | None:
        return transforms(self.config, self.key) if self.config.enabled else None

    def start(self) -> None:
        self.counter.start()

    def tick(self, now: int) -> None:
        if self.config.enabled:
            self.counter.count()

    def metrics(self) -> Iterable[Sample]:
        return [Sample(SPANS, self.counter.spans), Sample(REDACTED, self.counter.matched)]
