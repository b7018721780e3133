"""TraceQL metrics computed in the engine: one GROUP BY over the matching spans, per step and per
`by(...)` value, with an exemplar (the slowest span's trace) per point. Durations come out in
seconds, as Tempo gives them."""

from __future__ import annotations

from dataclasses import dataclass, field

from clew.core.language import Field
from clew.core.metrics_query import MetricsQuery
from clew.store.connection import Connection
from clew.store.search import Params, condition_sql, field_text_sql, value_sql

MAX_SERIES = 1000


@dataclass(slots=True)
class MetricSeries:
    labels: tuple[tuple[str, str | None], ...]  # (key, value); None where the span had no value
    samples: dict[int, float] = field(default_factory=dict)  # step start (ns) -> value
    exemplars: dict[int, tuple[bytes, float]] = field(default_factory=dict)  # step start -> (trace, value)


def _number_sql(f: Field, params: Params) -> str:
    """What *_over_time reads: a duration in seconds, or a numeric attribute (NULL otherwise)."""
    if f.scope == "intrinsic":
        return "duration / 1e9"
    return value_sql(f, params)


def compute(
    conn: Connection, db: str, q: MetricsQuery, start: int, end: int, step: int, tenant: str
) -> list[MetricSeries]:
    """Series of `q` over [start, end) ns in steps of `step` ns."""
    params = Params(db=db)
    where = condition_sql(q.filter.filters[0].condition, params)
    labels = [field_text_sql(f, params) for f in q.by]
    value = _number_sql(q.field, params) if q.field is not None else "1"
    extra, group = "", [f"g{i}" for i in range(len(labels))]
    if q.function == "rate":
        agg = f"count() / {step / 1e9!r}"
    elif q.function == "count_over_time":
        agg = "count()"
    elif q.function == "quantile_over_time":
        agg = f"quantiles({', '.join(repr(x) for x in q.quantiles)})(v)"
    elif q.function == "histogram_over_time":
        agg = "count()"
        extra = ", pow(2, ceil(log2(greatest(v, 1e-9)))) AS hb"
        group.append("hb")
    else:
        agg = {"sum_over_time": "sum(v)", "avg_over_time": "avg(v)", "min_over_time": "min(v)",
               "max_over_time": "max(v)"}[q.function]  # fmt: skip
    selects = "".join(f", {sql} AS g{i}" for i, sql in enumerate(labels))
    spans = (
        f"SELECT intDiv(toUnixTimestamp64Nano(start_time) - {{start:Int64}}, {{step:Int64}}) AS b{selects}, "
        f"{value} AS v{extra}, duration, trace_id FROM {db}.spans "
        "WHERE tenant = {tenant:String} AND start_time >= fromUnixTimestamp64Nano({start:Int64}, 'UTC') "
        f"AND start_time < fromUnixTimestamp64Nano({{end:Int64}}, 'UTC') AND {where}"
    )
    table = conn.query(
        f"SELECT b{''.join(', ' + g for g in group)}, {agg} AS value, argMax(trace_id, duration) AS ex_trace, "
        f"max(duration) AS ex_duration FROM ({spans}) WHERE v IS NOT NULL "
        f"GROUP BY b{''.join(', ' + g for g in group)} ORDER BY b",
        {**params.values, "tenant": tenant, "start": start, "end": end, "step": step},
    )
    series: dict[tuple[object, ...], MetricSeries] = {}
    keys = [f"g{i}" for i in range(len(labels))]
    for row in table.to_pylist():
        at = start + int(row["b"]) * step
        values: list[tuple[str | None, float]] = [(None, row["value"])]
        if q.function == "quantile_over_time":
            values = list(zip((f"{x:g}" for x in q.quantiles), row["value"], strict=True))
        for extra_label, v in values:
            base = tuple(
                (label, None if row[k] is None else str(row[k]))
                for label, k in zip(q.labels, keys, strict=True)
            )
            if q.function == "quantile_over_time":
                base += (("p", extra_label),)
            if q.function == "histogram_over_time":
                base += (("__bucket", f"{row['hb']:g}"),)
            s = series.get(base)
            if s is None:
                if len(series) == MAX_SERIES:
                    continue
                s = series[base] = MetricSeries(base)
            s.samples[at] = float(v)
            s.exemplars[at] = (bytes(row["ex_trace"]), row["ex_duration"] / 1e9)
    out = list(series.values())
    if q.function in ("rate", "count_over_time", "histogram_over_time"):  # a step without spans is 0
        steps = range(start, end, step)
        for s in out:
            for at in steps:
                s.samples.setdefault(at, 0.0)
    if q.rank is not None:
        kind, n = q.rank
        out.sort(key=lambda s: sum(s.samples.values()) / max(1, len(s.samples)), reverse=kind == "topk")
        out = out[:n]
    return out
