"""Counters for the processors that run inside the insert (redaction, name templates).

They are SQL inside the engine's INSERT ... SELECT, which reports no per-row figures, so their work
is counted afterwards from the rows they wrote: every tick, the spans received since the last one are
scanned (through the `received_at` index) for the marks the processors leave: `[REDACTED...]` or a
keyed hash `[label:...]` in names, status messages and span or resource string attributes, and `{id}`
in names. A dropped attribute leaves no mark, so it is not counted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from clew.store.base import Connection

# every replacement redact.py writes starts with one of these
MARKS = ["[REDACTED", "[email:", "[card:", "[ip:", "[token:", "[hash:"]


@dataclass
class ProcessorCounters:
    redaction_spans: int = 0  # spans that went through redaction
    redacted_spans: int = 0  # ... and came out with at least one value replaced
    template_spans: int = 0  # spans that went through span-name templates
    templated_names: int = 0  # ... whose name became a template


class ProcessedScan:
    def __init__(
        self, conn: Connection, db: str, received_until: Callable[[], int], redaction: bool, templates: bool
    ) -> None:
        self.conn, self.db = conn, db
        self.received_until = received_until
        self.redaction, self.templates = redaction, templates
        self.counters = ProcessorCounters()
        self._since = received_until()  # what was stored before this process started was counted then

    def scan(self) -> None:
        if not (self.redaction or self.templates):
            return
        until = self.received_until()
        if until <= self._since:
            return
        text = (
            "concat(name, '\\n', status_message, '\\n', arrayStringConcat(mapValues(attributes_string), '\\n'), "
            "'\\n', arrayStringConcat(mapValues(resource_string), '\\n'))"
        )
        table = self.conn.query(
            f"SELECT count(), countIf(multiSearchAny({text}, {{marks:Array(String)}})), "
            "countIf(position(name, '{id}') > 0) "
            f"FROM {self.db}.spans WHERE received_at > fromUnixTimestamp64Nano({{since:Int64}}, 'UTC') "
            "AND received_at <= fromUnixTimestamp64Nano({until:Int64}, 'UTC')",
            {"since": self._since, "until": until, "marks": "[" + ",".join(f"'{m}'" for m in MARKS) + "]"},
        )
        spans, redacted, templated = (int(c[0].as_py()) for c in table.columns)
        self._since = until
        c = self.counters
        if self.redaction:
            c.redaction_spans += spans
            c.redacted_spans += redacted
        if self.templates:
            c.template_spans += spans
            c.templated_names += templated

    def metrics(self) -> dict[str, tuple[str, float]]:
        c = self.counters
        return {
            "clew_redaction_spans": ("counter", c.redaction_spans),
            "clew_redaction_redacted_spans": ("counter", c.redacted_spans),
            "clew_templates_spans": ("counter", c.template_spans),
            "clew_templates_templated_names": ("counter", c.templated_names),
        }
