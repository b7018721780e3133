"""The tail sampler: sums what policies need per trace over the spans received since the last tick,
and decides each trace once it is complete (its root ended `decision_wait` ago with no new span) or
too old (`max_age`). Only per-trace sums live here, never spans; the decisions go to the store
(queries.py) and the retention later deletes the spans of traces no policy kept."""

from __future__ import annotations

import functools
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from clew.components.sampling.config import SamplingConfig
from clew.components.sampling.policies import Candidate, SamplingPolicy, TokenBucket, TraceState, flagged


@dataclass(frozen=True, slots=True)
class Decision:
    tenant: str
    trace_id: bytes
    kept: bool
    policies: tuple[str, ...]  # the top-level policies that kept it
    decided_at: int
    spans: int


class ActivitySource(Protocol):
    """The store as the sampler sees it (queries.py)."""

    def received_until(self) -> int: ...

    def wrote_after(self, t: int) -> bool:
        """Whether spans may have been received after `t`: if not, a tick has nothing to read."""
        ...

    def trace_activity(
        self, since: int, until: int, now: int, only_undecided: bool
    ) -> list[tuple[str, bytes, TraceState]]:
        """Per trace, sums over its spans received in (since, until]; `flags` in `flagged()` order."""
        ...

    def write_decisions(self, decisions: list[Decision]) -> None: ...


@dataclass
class SamplerCounters:
    ticks: int = 0
    spans_seen: int = 0
    traces_kept: int = 0
    traces_dropped: int = 0
    decided_early: int = 0  # over max_pending_traces, or past max_age without a root
    late_spans: int = 0  # arrived after their trace was decided; they follow that decision
    kept_by_policy: dict[str, int] = field(default_factory=dict)


class Sampler:
    """Call `tick()` periodically (the server does, every `config.tick`); `clock` is the store's clock."""

    def __init__(
        self, source: ActivitySource, config: SamplingConfig, clock: Callable[[], int] = time.time_ns
    ) -> None:
        self.source, self.config, self.clock = source, config, clock
        self._flag_of = {id(leaf): i for i, leaf in enumerate(flagged(config.policies))}
        self.pending: dict[tuple[str, bytes], TraceState] = {}
        self._decided: OrderedDict[tuple[str, bytes], int] = OrderedDict()  # -> decided at
        self._buckets: dict[tuple[int, str], TokenBucket] = {}
        self._since: int | None = None
        self.counters = SamplerCounters()

    def reset(self) -> None:
        """Forget pending and decided traces, as a restart would; the next tick looks back over the
        window in which traces may still be undecided (counters stay)."""
        self.pending.clear()
        self._decided.clear()
        self._since = None

    def tick(self) -> list[Decision]:
        now = self.clock()
        until = self.source.received_until()
        first = self._since is None
        # after a start, look back over the window in which traces may still be undecided
        since = now - self.config.max_age - self.config.decision_wait if self._since is None else self._since
        if until > since and (first or self.source.wrote_after(since)):
            for tenant, trace_id, state in self.source.trace_activity(since, until, now, first):
                self.counters.spans_seen += state.spans
                key = (tenant, trace_id)
                if key in self._decided:
                    self.counters.late_spans += state.spans
                elif key in self.pending:
                    self.pending[key].merge(state)
                else:
                    self.pending[key] = state
        if until > since:
            self._since = until
        # complete means no new span up to `until`, not up to now: with several instances on one
        # store, what another instance received may be committed later than the wall clock says
        reached = min(now, self._since) if self._since is not None else now
        decisions = self._decide(now, reached)
        if decisions:
            self.source.write_decisions(decisions)
        self.counters.ticks += 1
        return decisions

    def _decide(self, now: int, reached: int) -> list[Decision]:
        """Decide what is complete: no new span of the trace received up to `reached` (what every
        writer has committed) for `decision_wait`, or the trace is older than `max_age`."""
        config = self.config
        complete = [
            key
            for key, s in self.pending.items()
            if (s.roots and s.last <= reached - config.decision_wait) or s.first <= reached - config.max_age
        ]
        early = [key for key in complete if not self.pending[key].roots]
        overflow = len(self.pending) - len(complete) - config.max_pending_traces
        if overflow > 0:
            done = set(complete)
            oldest = sorted((s.first, key) for key, s in self.pending.items() if key not in done)[:overflow]
            complete += [key for _, key in oldest]
            early += [key for _, key in oldest]
        self.counters.decided_early += len(early)
        decisions = []
        for key in sorted(complete, key=lambda k: self.pending[k].first):
            state = self.pending.pop(key)
            trace = Candidate(key[1], state, now, functools.partial(self._flag, state), self._bucket)
            kept = tuple(p.name for p in config.policies if p.keeps(trace))
            decisions.append(Decision(key[0], key[1], bool(kept), kept, now, state.spans))
            self._decided[key] = now
            if kept:
                self.counters.traces_kept += 1
                for name in kept:
                    self.counters.kept_by_policy[name] = self.counters.kept_by_policy.get(name, 0) + 1
            else:
                self.counters.traces_dropped += 1
        horizon = now - config.max_age - config.decision_wait
        while self._decided and next(iter(self._decided.values())) < horizon:
            self._decided.popitem(last=False)
        return decisions

    def _flag(self, state: TraceState, policy: SamplingPolicy) -> int:
        return state.flags[self._flag_of[id(policy)]]

    def _bucket(self, policy: SamplingPolicy, key: str, rate: float) -> TokenBucket:
        return self._buckets.setdefault((id(policy), key), TokenBucket(rate))
