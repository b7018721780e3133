"""TraceQL metrics computed in the engine: one GROUP BY over the matching spans, per step and per
`by(...)` value, with an exemplar (the slowest span's trace) per point. Durations come out in
seconds, as Tempo gives them."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from clew.core.language import Field
from clew.core.metrics_query import MetricsQuery
from clew.core.model import KIND_CODES, STATUS_CODES
from clew.store.connection import Connection
from clew.store.search import Params, Searcher, SearchRequest, condition_sql, field_text_sql, value_sql
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


@dataclass(slots=True)
class MetricsResult:
    series: list[MetricSeries]
    inspected_traces: int | None = None  # candidate traces evaluated (structural queries only)
    complete: bool = True  # False when a structural query stopped at the inspection limit


def compute(
    conn: Connection, db: str, q: MetricsQuery, start: int, end: int, step: int, tenant: str
) -> MetricsResult:
    """Series of `q` over [start, end) ns in steps of `step` ns."""
    if q.function == "compare":
        return _compare(conn, db, q, start, end, step, tenant)
    if not q.filter.simple:
        return _structural(conn, db, q, start, end, step, tenant)
    params = Params(db=db)
    where = condition_sql(q.filter.filters[0].condition, params)
    columns = _span_columns(q, params, step)
    group = [
        "b",
        *(f"g{i}" for i in range(len(q.by))),
        *(["hb"] if q.function == "histogram_over_time" else []),
    ]
    spans = (
        f"SELECT {', '.join(f'{sql} AS {alias}' for alias, sql in columns.items())}, duration, trace_id "
        f"FROM {db}.spans WHERE tenant = {{tenant:String}} "
        "AND start_time >= fromUnixTimestamp64Nano({start:Int64}, 'UTC') "
        f"AND start_time < fromUnixTimestamp64Nano({{end:Int64}}, 'UTC') AND {where}"
    )
    table = conn.query(
        f"SELECT {', '.join(group)}, {_AGGREGATES[q.function].format(step=step / 1e9, q=_quantiles(q))} "
        "AS value, argMax(trace_id, duration) AS ex_trace, max(duration) AS ex_duration "
        f"FROM ({spans}) WHERE v IS NOT NULL GROUP BY {', '.join(group)} ORDER BY b",
        {**params.values, "tenant": tenant, "start": start, "end": end, "step": step},
    )
    return MetricsResult(_series(q, table.to_pylist(), start, end, step))


# each function's aggregate over the spans of a step and a group (`v`: the number it reads)
_AGGREGATES = {
    "rate": "count() / {step!r}",
    "count_over_time": "count()",
    "histogram_over_time": "count()",
    "quantile_over_time": "quantiles({q})(v)",
    "sum_over_time": "sum(v)",
    "avg_over_time": "avg(v)",
    "min_over_time": "min(v)",
    "max_over_time": "max(v)",
}


def _quantiles(q: MetricsQuery) -> str:
    return ", ".join(repr(x) for x in q.quantiles)


def _span_columns(q: MetricsQuery, params: Params, step: int) -> dict[str, str]:
    """What each span contributes, as SQL: its step `b`, its `by` labels `g0..`, the number `v` it
    adds (1 when the function only counts) and its histogram bucket `hb`."""
    columns = {
        "b": f"intDiv(toUnixTimestamp64Nano(start_time) - {{start:Int64}}, {step})",
        **{f"g{i}": field_text_sql(f, params) for i, f in enumerate(q.by)},
        "v": _number_sql(q.field, params) if q.field is not None else "1",
    }
    if q.function == "histogram_over_time":
        columns["hb"] = f"pow(2, ceil(log2(greatest({columns['v']}, 1e-9))))"
    return columns


def _matching(
    conn: Connection,
    db: str,
    q: MetricsQuery,
    start: int,
    end: int,
    tenant: str,
    columns: Callable[[Params], dict[str, str]],
) -> tuple[list[dict[str, Any]], Searcher]:
    """The spans starting in [start, end) that a query SQL alone cannot decide matches (several
    spanset filters, structural operators, an aggregate pipeline), with `columns` (alias -> SQL)
    read for each, and their duration and trace: the search engine evaluates each candidate trace,
    the newest first, up to its inspection limit."""
    searcher = Searcher(conn, db, SearchRequest(q.filter, start, end - 1, tenant=tenant))
    extra = {f"m_{alias}": sql for alias, sql in columns(searcher.params).items()}
    rows = []
    for found, matched in searcher.scan(extra):
        for r in matched:
            if start <= found["start"][r] < end:
                row = {alias[2:]: found[alias][r] for alias in extra}
                row["duration"], row["trace_id"] = int(found["duration"][r]), bytes(found["trace_id"][r])
                rows.append(row)
    return rows, searcher


def _structural(
    conn: Connection, db: str, q: MetricsQuery, start: int, end: int, step: int, tenant: str
) -> MetricsResult:
    """A metrics function over the spans `_matching` finds, aggregated here in the groups the SQL
    path forms."""
    spans, searcher = _matching(conn, db, q, start, end, tenant, lambda p: _span_columns(q, p, step))
    groups: dict[tuple[object, ...], list[dict[str, Any]]] = defaultdict(list)
    keys = [
        "b",
        *(f"g{i}" for i in range(len(q.by))),
        *(["hb"] if q.function == "histogram_over_time" else []),
    ]
    for span in spans:
        if span["v"] is not None:
            groups[tuple(span[k] for k in keys)].append(span)
    table = []
    for key, members in sorted(groups.items(), key=lambda item: int(item[0][0])):  # type: ignore[call-overload]  # b is an int
        slowest = max(members, key=lambda m: (m["duration"], m["trace_id"]))
        row = {**dict(zip(keys, key, strict=True)), "ex_trace": slowest["trace_id"]}
        row["ex_duration"] = slowest["duration"]
        row["value"] = _aggregate(q, [float(m["v"]) for m in members], step)
        table.append(row)
    return MetricsResult(_series(q, table, start, end, step), searcher.inspected, searcher.complete)


def _aggregate(q: MetricsQuery, values: list[float], step: int) -> float | list[float]:
    """The function over one group's numbers, as `_AGGREGATES` computes it in the engine."""
    f = q.function
    if f == "rate":
        return len(values) / (step / 1e9)
    if f in ("count_over_time", "histogram_over_time"):
        return float(len(values))
    if f == "quantile_over_time":
        return [quantile(sorted(values), p) for p in q.quantiles]
    if f == "sum_over_time":
        return sum(values)
    if f == "min_over_time":
        return min(values)
    if f == "max_over_time":
        return max(values)
    return sum(values) / len(values)  # avg_over_time


def quantile(ordered: Sequence[float], p: float) -> float:
    """Linear interpolation between the closest ranks of sorted values (the engine's `quantiles`
    on small sets); 0 for none."""
    if not ordered:
        return 0.0
    at = p * (len(ordered) - 1)
    low = int(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


def _series(
    q: MetricsQuery, rows: list[dict[str, Any]], start: int, end: int, step: int
) -> list[MetricSeries]:
    """Series from aggregated rows (b, g0.., hb, value, ex_trace, ex_duration), labelled as Tempo
    labels them, ranked by `topk`/`bottomk`."""
    series: dict[tuple[object, ...], MetricSeries] = {}
    keys = [f"g{i}" for i in range(len(q.by))]
    for row in rows:
        at = start + int(row["b"]) * step
        values: list[tuple[str | None, float]] = [(None, row["value"])]
        if q.function == "quantile_over_time":
            values = list(zip((f"{x:g}" for x in q.quantiles), row["value"], strict=True))
        for extra_label, v in values:
            if v is None or not math.isfinite(v):  # NaN/inf attributes: no JSON number says them
                continue
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


def attribute_pairs(scope: str, prefix: str) -> list[str]:
    """(label, value as text) of every attribute of one set: compare() and what-changed rank them."""
    return [
        f"arrayMap(k -> ('{scope}.' || k, {text}), mapKeys({prefix}_{kind}))"
        for kind, text in (
            ("string", f"{prefix}_string[k]"),
            ("int", f"toString({prefix}_int[k])"),
            ("float", f"toString({prefix}_float[k])"),
            ("bool", f"if({prefix}_bool[k], 'true', 'false')"),
        )
    ]


def _compare_columns(q: MetricsQuery, params: Params, step: int) -> dict[str, str]:
    """What each span contributes to `compare()`: its step, its group (the selection or the
    baseline) and its (attribute, value) pairs: span and resource attributes, name, status, kind."""
    selected = condition_sql(q.selection, params)
    if q.selection_window is not None:
        lo, hi = (params.add(t, "Int64") for t in q.selection_window)
        selected = f"({selected} AND toUnixTimestamp64Nano(start_time) BETWEEN {lo} AND {hi})"
    pairs = ", ".join([
        *attribute_pairs("span", "attributes"),
        *attribute_pairs("resource", "resource"),
        f"[('name', toString(name)), ('status', {code_names(STATUS_CODES, 'status_code')}), "
        f"('kind', {code_names(KIND_CODES, 'kind')})]",
    ])  # fmt: skip
    return {
        "b": f"intDiv(toUnixTimestamp64Nano(start_time) - {{start:Int64}}, {step})",
        "grp": f"if({selected}, 'selection', 'baseline')",
        "pairs": f"arrayConcat({pairs})",
    }


def _compare(
    conn: Connection, db: str, q: MetricsQuery, start: int, end: int, step: int, tenant: str
) -> MetricsResult:
    """`compare()`: for every attribute value of the matching spans, how many spans a step hold it
    in the selection and in the rest (the baseline); the `top` most frequent values of each
    attribute in each group, and an error series for an attribute that had more."""
    if not q.filter.simple:
        spans, searcher = _matching(conn, db, q, start, end, tenant, lambda p: _compare_columns(q, p, step))
        counts: dict[tuple[int, str, str, str], tuple[int, int, bytes]] = {}
        for span in spans:
            for pair in span["pairs"]:  # unnamed tuples come back as {"1": ..., "2": ...}
                attr, value = (pair["1"], pair["2"]) if isinstance(pair, dict) else pair
                key = (int(span["b"]), str(span["grp"]), str(attr), str(value))
                n, longest, trace = counts.get(key, (0, -1, b""))
                slower = (span["duration"], span["trace_id"]) > (longest, trace)
                counts[key] = (n + 1, *((span["duration"], span["trace_id"]) if slower else (longest, trace)))
        rows = [
            {"b": b, "grp": g, "attr": a, "val": v, "n": n, "ex": ex}
            for (b, g, a, v), (n, _, ex) in counts.items()
        ]
        return MetricsResult(_compare_series(q, rows, start, step), searcher.inspected, searcher.complete)
    params = Params(db=db)
    where = condition_sql(q.filter.filters[0].condition, params)
    columns = _compare_columns(q, params, step)
    table = conn.query(
        "SELECT b, grp, kv.1 AS attr, kv.2 AS val, count() AS n, argMax(trace_id, duration) AS ex FROM ("
        f"SELECT {columns['b']} AS b, {columns['grp']} AS grp, arrayJoin({columns['pairs']}) AS kv, "
        f"duration, trace_id FROM {db}.spans WHERE tenant = {{tenant:String}} "
        "AND start_time >= fromUnixTimestamp64Nano({start:Int64}, 'UTC') "
        f"AND start_time < fromUnixTimestamp64Nano({{end:Int64}}, 'UTC') AND {where}) "
        "GROUP BY b, grp, attr, val",
        {**params.values, "tenant": tenant, "start": start, "end": end},
    )
    return MetricsResult(_compare_series(q, table.to_pylist(), start, step))


def _compare_series(q: MetricsQuery, rows: list[dict[str, Any]], start: int, step: int) -> list[MetricSeries]:
    """compare()'s series from counted rows (b, grp, attr, val, n, ex)."""
    totals: dict[tuple[str, str], dict[str, float]] = {}
    points: dict[tuple[str, str, str], MetricSeries] = {}
    for row in rows:
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
