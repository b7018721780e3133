"""Enrichment before storage: resource attributes per tenant and span-name templates, compiled into
the insert's SQL (templates.py). Templated names are counted afterwards by their `{id}` mark."""

from __future__ import annotations

from collections.abc import Iterable

from clew.components.base import COUNT_EVERY, BaseComponent, Context, MarkCounter
from clew.components.enrichment.templates import EnrichConfig, EnrichError, transforms
from clew.core.telemetry import Metric, Sample
from clew.store.transforms import Transforms

__all__ = ["EnrichConfig", "EnrichError", "Enrichment"]

SPANS = Metric("clew_templates_spans", "counter", "Spans that went through span-name templates.")
TEMPLATED = Metric("clew_templates_templated_names", "counter", "Spans whose name became a template.")


class Enrichment(BaseComponent):
    name = "enrichment"
    telemetry = (SPANS, TEMPLATED)
    interval = COUNT_EVERY

    def __init__(self, ctx: Context, config: EnrichConfig) -> None:
        self.config = config
        self.counter = MarkCounter(ctx, "position(name, '{id}') > 0")

    def insert_stage(self) -> Transforms | None:
        stage = transforms(self.config)
        return stage if stage.columns else None

    def start(self) -> None:
        self.counter.start()

    def tick(self, now: int) -> None:
        if self.config.normalize_names:
            self.counter.count()

    def metrics(self) -> Iterable[Sample]:
        return [Sample(SPANS, self.counter.spans), Sample(TEMPLATED, self.counter.matched)]
