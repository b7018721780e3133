"""The statistics of a release comparison, in plain Python over bounded samples.

Latency: the Mann-Whitney U test (rank-sum, normal approximation with the tie correction), which
asks whether one release's durations tend to be larger without assuming a distribution (latencies
are skewed and multi-modal). Errors: the two-proportion z-test. Over many operations the p-values
are adjusted by Holm's step-down method, which keeps the chance of any false alarm in a comparison
at `ALPHA`. A change is reported only when it is significant *and* large enough to matter
(`MIN_LATENCY_CHANGE`, `MIN_ERROR_CHANGE`): with thousands of spans a trivial shift is
"significant", and a release that changed nothing a user would notice must not fire.
bench/releases.py measures the false-positive rate on identical releases.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from clew.store.metrics import quantile

ALPHA = 0.01
# a latency change must move the median or the p95 by this share (and by MIN_LATENCY_DELTA_NS)
MIN_LATENCY_CHANGE = 0.10
MIN_LATENCY_DELTA_NS = 1_000_000
# an error-rate change must move the rate by this much (absolute: 0.01 is one point)
MIN_ERROR_CHANGE = 0.01
MIN_SAMPLES = 10  # fewer spans in either release: not compared


def _normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2))


def mann_whitney(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value that `a` and `b` come from one distribution (b's values neither tend to be
    larger nor smaller). Ties share their average rank; the variance is corrected for them."""
    n1, n2 = len(a), len(b)
    if n1 == 0 or n2 == 0:
        return 1.0
    pooled = sorted([(x, 0) for x in a] + [(x, 1) for x in b])
    rank_sum_b, ties, i = 0.0, 0.0, 0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        rank = (i + j) / 2 + 1  # the average of ranks i+1 .. j+1
        t = j - i + 1
        ties += t**3 - t
        rank_sum_b += rank * sum(1 for k in range(i, j + 1) if pooled[k][1] == 1)
        i = j + 1
    u = rank_sum_b - n2 * (n2 + 1) / 2
    n = n1 + n2
    variance = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
    if variance <= 0:
        return 1.0  # every value equal
    z = (abs(u - n1 * n2 / 2) - 0.5) / math.sqrt(variance)  # with continuity correction
    return min(1.0, 2 * _normal_sf(max(z, 0.0)))


def two_proportions(errors_a: int, n_a: int, errors_b: int, n_b: int) -> float:
    """Two-sided p-value that two error rates are equal (pooled z-test)."""
    if n_a == 0 or n_b == 0:
        return 1.0
    pooled = (errors_a + errors_b) / (n_a + n_b)
    variance = pooled * (1 - pooled) * (1 / n_a + 1 / n_b)
    if variance <= 0:
        return 1.0
    z = abs(errors_a / n_a - errors_b / n_b) / math.sqrt(variance)
    return min(1.0, 2 * _normal_sf(z))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the given order: compare each to ALPHA."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [1.0] * len(p_values)
    running = 0.0
    m = len(p_values)
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def latency_changed(base: Sequence[float], cand: Sequence[float]) -> tuple[float, float]:
    """The larger relative move of the median and the p95 (signed: positive is slower), and its
    absolute size in ns, from sorted samples."""
    moves = []
    for q in (0.5, 0.95):
        b, c = quantile(base, q), quantile(cand, q)
        moves.append(((c - b) / b if b > 0 else 0.0, c - b))
    return max(moves, key=lambda m: abs(m[0]))


@dataclass(frozen=True, slots=True)
class Release:
    """One operation in one release: its span and error counts and a sample of its durations."""

    spans: int
    errors: int
    sample: Sequence[float]


@dataclass(frozen=True, slots=True)
class Verdict:
    latency: str  # slower, faster, unchanged, too few spans
    latency_p: float  # Holm-adjusted
    change: float  # the larger relative move of the median and p95, positive when slower
    errors: str  # more, fewer, unchanged, too few spans
    errors_p: float  # Holm-adjusted
    error_delta: float  # candidate's error rate minus the baseline's

    @property
    def regression(self) -> bool:
        return self.latency == "slower" or self.errors == "more"


def judge(pairs: Sequence[tuple[Release, Release]]) -> list[Verdict]:
    """(baseline, candidate) of each operation of a comparison, judged together: the p-values of
    every test are Holm-adjusted as one family, and a change must be significant and large."""
    ordered = [(sorted(b.sample), sorted(c.sample)) for b, c in pairs]
    latency_p = [mann_whitney(b, c) for b, c in ordered]
    error_p = [two_proportions(b.errors, b.spans, c.errors, c.spans) for b, c in pairs]
    adjusted = holm([*latency_p, *error_p])
    out = []
    for i, ((base, cand), (b_sorted, c_sorted)) in enumerate(zip(pairs, ordered, strict=True)):
        enough = min(base.spans, cand.spans, len(b_sorted), len(c_sorted)) >= MIN_SAMPLES
        change, delta = latency_changed(b_sorted, c_sorted)
        lp, ep = adjusted[i], adjusted[len(pairs) + i]
        rate_b = base.errors / base.spans if base.spans else 0.0
        rate_c = cand.errors / cand.spans if cand.spans else 0.0
        if not enough:
            latency = errors = "too few spans"
        else:
            big = abs(change) >= MIN_LATENCY_CHANGE and abs(delta) >= MIN_LATENCY_DELTA_NS
            latency = ("slower" if change > 0 else "faster") if lp < ALPHA and big else "unchanged"
            moved = abs(rate_c - rate_b) >= MIN_ERROR_CHANGE
            errors = ("more" if rate_c > rate_b else "fewer") if ep < ALPHA and moved else "unchanged"
        out.append(Verdict(latency, lp, change, errors, ep, rate_c - rate_b))
    return out
