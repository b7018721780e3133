"""Redaction before anything is stored: deny-listed keys and value detectors, compiled into the
insert's SQL (detectors.py), so no unredacted span is ever written. Its work is counted afterwards
from the marks its replacements leave in the rows (a dropped attribute leaves none, so it is not
counted)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from clew.components.base import COUNT_EVERY, BaseComponent, Context, MarkCounter
from clew.components.redaction.detectors import (
    RedactionConfig,
    RedactionError,
    hash_key,
    log_transforms,
    transforms,
)
from clew.core.errors import StoreError
from clew.core.telemetry import Metric, Sample
from clew.store.migrations import Migration, steps
from clew.store.transforms import Transforms

__all__ = ["Redaction", "RedactionConfig", "RedactionError", "hash_key"]

# every replacement detectors.py writes starts with one of these
MARKS = ["[REDACTED", "[email:", "[card:", "[ip:", "[token:", "[hash:"]
MARKED = (
    "multiSearchAny(concat(name, '\\n', status_message, '\\n', arrayStringConcat(mapValues(attributes_string), "
    "'\\n'), '\\n', arrayStringConcat(mapValues(resource_string), '\\n')), {marks:Array(String)})"
)
# the hash key when the store is a server several instances write to (a data directory keeps a file)
KEY_DDL = """
CREATE TABLE IF NOT EXISTS {db}.redaction_key (k0 UInt64, k1 UInt64, created DateTime64(9, 'UTC'))
ENGINE = MergeTree ORDER BY created
"""
MIGRATIONS = steps("redaction", ("hash key in the store", [KEY_DDL]))
SPANS = Metric("clew_redaction_spans", "counter", "Spans that went through redaction.")
REDACTED = Metric(
    "clew_redaction_redacted_spans", "counter", "Spans that came out of redaction with a value replaced."
)


class Redaction(BaseComponent):
    name = "redaction"
    telemetry = (SPANS, REDACTED)
    interval = COUNT_EVERY

    def __init__(self, ctx: Context, config: RedactionConfig, key_dir: Path | None) -> None:
        """`key_dir`: where the hash key is kept; None keeps it in the store, for every instance
        writing to it (a ClickHouse server)."""
        self.config = config
        self.conn, self.db, self.key_dir = ctx.conn, ctx.db, key_dir
        self.key = (0, 0)
        self.counter = MarkCounter(ctx, MARKED, {"marks": MARKS})

    def migrations(self) -> Sequence[Migration]:
        return MIGRATIONS

    def insert_stage(self) -> Transforms | None:
        if not self.config.enabled:
            return None
        # keyed hashes need a key kept beside the data, so equal values hash equal across restarts
        # (and across the instances that write to one store)
        self.key = hash_key(self.key_dir) if self.key_dir is not None else self._stored_key()
        return transforms(self.config, self.key)

    def log_stage(self) -> Transforms | None:
        """The same detectors and key over log bodies and attributes (after `insert_stage`, which
        reads the key)."""
        if not self.config.enabled:
            return None
        return log_transforms(self.config, self.key)

    def _stored_key(self) -> tuple[int, int]:
        """The store's key, made by the first instance that needs one (the earliest written wins
        should two start at once on a new store; `clew migrate` first avoids even that)."""
        for _ in range(2):
            table = self.conn.query(
                f"SELECT k0, k1 FROM {self.db}.redaction_key ORDER BY created, k0, k1 LIMIT 1"
            )
            if table.num_rows:
                return int(table.column(0)[0].as_py()), int(table.column(1)[0].as_py())
            k0, k1 = (int.from_bytes(os.urandom(8), "little") for _ in range(2))
            self.conn.command(
                f"INSERT INTO {self.db}.redaction_key SELECT {{k0:UInt64}}, {{k1:UInt64}}, now64(9, 'UTC')",
                {"k0": k0, "k1": k1},
            )
        raise StoreError("the redaction key written to the store cannot be read back")

    def start(self) -> None:
        self.counter.start()

    def tick(self, now: int) -> None:
        if self.config.enabled:
            self.counter.count()

    def metrics(self) -> Iterable[Sample]:
        return [Sample(SPANS, self.counter.spans), Sample(REDACTED, self.counter.matched)]
