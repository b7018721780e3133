"""Tail-based sampling: once a trace is complete, policies decide whether it outlives the full-fidelity
window (`[sampling]` in clew.toml, docs/sampling.md).

Every span is stored when it arrives, so nothing is lost while a trace is undecided and the last hour
can be debugged with every trace. The sampler (sampler.py) only decides; the retention component
later deletes the spans of traces no policy kept, asking this component which ones were (`kept_sql`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from clew.components.base import BaseComponent, Context
from clew.components.http import tenant, trace_id_param
from clew.components.sampling.config import SamplingConfig
from clew.components.sampling.policies import SamplingError, SamplingPolicy, policy, probabilistic
from clew.components.sampling.queries import MIGRATIONS, SamplingQueries
from clew.components.sampling.sampler import Decision, Sampler
from clew.core.telemetry import Metric, Sample
from clew.store.migrations import Migration

__all__ = [
    "Decision",
    "Sampler",
    "Sampling",
    "SamplingConfig",
    "SamplingError",
    "SamplingPolicy",
    "policy",
    "probabilistic",
]

TICKS = Metric("clew_sampling_ticks", "counter", "Rounds of the tail sampler.")
SEEN = Metric("clew_sampling_spans_seen", "counter", "Spans the sampler summed into their traces.")
KEPT = Metric("clew_sampling_traces_kept", "counter", "Traces a policy kept.")
DROPPED = Metric("clew_sampling_traces_dropped", "counter", "Traces no policy kept.")
EARLY = Metric(
    "clew_sampling_traces_decided_early",
    "counter",
    "Traces decided before they were complete: over max_pending_traces, or past max_age without a root.",
)
LATE = Metric("clew_sampling_late_spans", "counter", "Spans that arrived after their trace was decided.")
PENDING = Metric("clew_sampling_pending_traces", "gauge", "Traces waiting to be decided.")
KEPT_BY = Metric("clew_sampling_kept_by_policy", "counter", "Traces kept, by each top-level policy.")


class Sampling(BaseComponent):
    name = "sampling"
    telemetry = (TICKS, SEEN, KEPT, DROPPED, EARLY, LATE, PENDING, KEPT_BY)

    def __init__(self, ctx: Context, config: SamplingConfig) -> None:
        self.config = config
        self.interval = config.tick if config.enabled else None
        self.queries = SamplingQueries(ctx.conn, ctx.db, ctx.received_until, config.policies, ctx.wrote_after)
        self.sampler = Sampler(self.queries, config, ctx.clock)

    def migrations(self) -> Sequence[Migration]:
        return MIGRATIONS

    def start(self) -> None:
        """Also when this instance becomes the one that decides (several on one store): what
        another decided meanwhile is in the store, not in this sampler's memory."""
        self.sampler.reset()

    def tick(self, now: int) -> None:
        self.sampler.tick()

    def kept_sql(self) -> str:
        return self.queries.kept_sql()

    def forget(self, before: int, unkept_before: int) -> None:
        self.queries.forget(before, unkept_before)

    def metrics(self) -> Iterable[Sample]:
        if not self.config.enabled:
            return []
        c = self.sampler.counters
        return [
            Sample(TICKS, c.ticks),
            Sample(SEEN, c.spans_seen),
            Sample(KEPT, c.traces_kept),
            Sample(DROPPED, c.traces_dropped),
            Sample(EARLY, c.decided_early),
            Sample(LATE, c.late_spans),
            Sample(PENDING, len(self.sampler.pending)),
            *(
                Sample(KEPT_BY, c.kept_by_policy.get(p.name, 0), {"policy": p.name})
                for p in self.config.policies
            ),
        ]

    def routes(self) -> Sequence[BaseRoute]:
        async def decision(request: Request) -> JSONResponse:
            trace_id = trace_id_param(request)
            found = await asyncio.to_thread(self.queries.decision, trace_id, tenant(request))
            answer: dict[str, Any] = {"traceID": trace_id.hex(), "decided": found is not None}
            if found is not None:
                answer |= {
                    "kept": found.kept,
                    "policies": found.policies,
                    "decidedAt": found.decided_at // 1000,
                    "spans": found.spans,
                }
            return JSONResponse(answer)

        return [Route("/api/v1/traces/{trace_id}/sampling", decision)]
