"""Enrichment before storage: resource attributes per tenant and span-name templates, compiled into
the insert's SQL (templates.py). Templated names are counted afterwards by their `{id}` mark."""

from __future__ import annotations

from collections.abc import Iterable

from clew.components.base import RECEIVED_IN, BaseComponent, Context, ReceivedWindow
from clew.components.enrichment.templates import EnrichConfig, EnrichError, transforms
from clew.core.telemetry import Metric, Sample
from clew.store.transforms import Transforms

__all__ = ["EnrichConfig", "EnrichError", "Enrichment"]

SPANS = Metric("clew_templates_spans", "counter", "Spans that went through span-name templates.")
TEMPLATED = Metric("clew_templates_templated_names", "counter", "Spans whose name became a template.")
SECOND = 10**9


class Enrichment(BaseComponent):
    name = "enrichment"
    telemetry = (SPANS, TEMPLATED)
    interval = SECOND

    def __init__(self, ctx: Context, config: EnrichConfig) -> None:
        self.conn, self.db, self.config = ctx.conn, ctx.db, config
        self.window = ReceivedWindow(ctx.received_until)
        self.spans = self.templated = 0

    def insert_stage(self) -> Transforms | None:
        stage = transforms(self.config)
        return stage if stage.columns else None

    def start(self) -> None:
        self.window.start()

    def tick(self, now: int) -> None:
        window = self.window.advance()
        if window is None or not self.config.normalize_names:
            return
        table = self.conn.query(
            f"SELECT count(), countIf(position(name, '{{id}}') > 0) FROM {self.db}.spans WHERE {RECEIVED_IN}",
            {"since": window[0], "until": window[1]},
        )
        spans, templated = (int(c[0].as_py()) for c in table.columns)
        self.spans += spans
        self.templated += templated

    def metrics(self) -> Iterable[Sample]:
        return [Sample(SPANS, self.spans), Sample(TEMPLATED, self.templated)]
