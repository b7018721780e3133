"""TraceQL metrics computed in the engine: one GROUP BY over the matching spans, per step and per
`by(...)` value, with an exemplar (the slowest span's trace) per point. Durations come out in
seconds, as Tempo gives them."""

from __future__ import annotations

from dataclasses import dataclass, field

from clew.core.language import Field
from clew.core.metrics_query import MetricsQuery
from clew.core.model import KIND_CODES, STATUS_CODES
from clew.store.connection import Connection
from clew.store.search import Params, condition_sql, field_text_sql, value_sql
from clew.store.sql import code_names

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
    if q.function == "compare":
        return _compare(conn, db, q, start, end, step, tenant)
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


def _pairs(scope: str, prefix: str) -> list[str]:
    """(label, value as text) of every attribute of one set, for compare()."""
    return [
        f"arrayMap(k -> ('{scope}.' || k, {text}), mapKeys({prefix}_{kind}))"
        for kind, text in (
            ("string", f"{prefix}_string[k]"),
            ("int", f"toString({prefix}_int[k])"),
            ("float", f"toString({prefix}_float[k])"),
            ("bool", f"if({prefix}_bool[k], 'true', 'false')"),
        )
    ]


def _compare(
    conn: Connection, db: str, q: MetricsQuery, start: int, end: int, step: int, tenant: str
) -> list[MetricSeries]:
    """`compare()`: for every attribute value of the matching spans, how many spans a step hold it
    in the selection and in the rest (the baseline); the `top` most frequent values of each
    attribute in each group, and an error series for an attribute that had more."""
    params = Params(db=db)
    where = condition_sql(q.filter.filters[0].condition, params)
    selected = condition_sql(q.selection, params)
    if q.selection_window is not None:
        lo, hi = (params.add(t, "Int64") for t in q.selection_window)
        selected = f"({selected} AND toUnixTimestamp64Nano(start_time) BETWEEN {lo} AND {hi})"
    pairs = ", ".join([
        *_pairs("span", "attributes"),
        *_pairs("resource", "resource"),
        f"[('name', toString(name)), ('status', {code_names(STATUS_CODES, 'status_code')}), "
        f"('kind', {code_names(KIND_CODES, 'kind')})]",
    ])  # fmt: skip
    table = conn.query(
        "SELECT b, grp, kv.1 AS attr, kv.2 AS val, count() AS n, argMax(trace_id, duration) AS ex FROM ("
        f"SELECT intDiv(toUnixTimestamp64Nano(start_time) - {{start:Int64}}, {{step:Int64}}) AS b, "
        f"if({selected}, 'selection', 'baseline') AS grp, arrayJoin(arrayConcat({pairs})) AS kv, duration, trace_id "
        f"FROM {db}.spans WHERE tenant = {{tenant:String}} "
        "AND start_time >= fromUnixTimestamp64Nano({start:Int64}, 'UTC') "
        f"AND start_time < fromUnixTimestamp64Nano({{end:Int64}}, 'UTC') AND {where}) "
        "GROUP BY b, grp, attr, val",
        {**params.values, "tenant": tenant, "start": start, "end": end, "step": step},
    )
    totals: dict[tuple[str, str], dict[str, float]] = {}
    points: dict[tuple[str, str, str], MetricSeries] = {}
    for row in table.to_pylist():
        group, attr, value = str(row["grp"]), str(row["attr"]), str(row["val"])
        key = (group, attr, value)
        s = points.get(key)
        if s is None:
            s = points[key] = MetricSeries((("__meta_type", group), (attr, value)))
        at = start + int(row["b"]) * step
        s.samples[at] = s.samples.get(at, 0.0) + float(row["n"])
        s.exemplars[at] = (bytes(row["ex"]), 0.0)
        values = totals.setdefault((group, attr), {})
        values[value] = values.get(value, 0.0) + float(row["n"])
    out: list[MetricSeries] = []
    for (group, attr), values in sorted(totals.items()):
        ranked = sorted(values, key=lambda v: (-values[v], v))
        out += [points[(group, attr, v)] for v in ranked[: q.top]]
        if len(ranked) > q.top:
            out.append(MetricSeries((("__meta_error", "__too_many_values__"), (attr, None))))
    return out[:MAX_SERIES]
