"""Release regressions: one service's operations compared between two values of an attribute (a
baseline and a candidate `service.version`, or any attribute), and "what changed": the attribute
values over-represented among a service's slow or failed spans (BubbleUp-style).

The engine counts, takes quantiles, log2 histograms and a bounded random sample of durations per
operation and release; the tests run in Python on the samples (stats.py). Example traces come from
the candidate's slow tail and the baseline's typical spans, so each regression links to a compare.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from clew.components.base import BaseComponent, Context
from clew.components.http import number, tenant, time_range_ns
from clew.components.releases import stats
from clew.core.errors import BadRequest
from clew.store.metrics import attribute_pairs
from clew.store.sql import WINDOW

SAMPLE = 2000  # durations per operation and release the tests run on
MAX_OPERATIONS = 100
MAX_VALUES = 20
MAX_CHANGED = 30
EXAMPLES = 3
MAX_TEXT = 1024
# the spans that stand for an operation's latency: where a request enters the service
ENTRY = "kind IN (2, 5)"
# an attribute's value, from the resource (a release is usually there) or else the span
VALUE = (
    "if(mapContains(resource_string, {attr:String}), resource_string[{attr:String}], "
    "attributes_string[{attr:String}])"
)
HAS_VALUE = "(mapContains(resource_string, {attr:String}) OR mapContains(attributes_string, {attr:String}))"
TEST = {
    "latency": "Mann-Whitney U, two-sided (normal approximation, ties corrected), on up to "
    f"{SAMPLE} sampled durations of each release; Holm-adjusted across the comparison",
    "errors": "two-proportion z-test, two-sided; Holm-adjusted across the comparison",
}


class Releases(BaseComponent):
    """`/api/v1/compare/releases` and `/api/v1/compare/attributes`."""

    name = "releases"

    def __init__(self, ctx: Context) -> None:
        self.conn, self.db = ctx.conn, ctx.db

    def routes(self) -> Sequence[BaseRoute]:
        async def releases(request: Request) -> JSONResponse:
            args = _releases_args(request)
            return JSONResponse(await asyncio.to_thread(self.compare, **args))

        async def attributes(request: Request) -> JSONResponse:
            args = _attributes_args(request)
            return JSONResponse(await asyncio.to_thread(self.what_changed, **args))

        return [
            Route("/api/v1/compare/releases", releases),
            Route("/api/v1/compare/attributes", attributes),
        ]

    def compare(
        self, service: str, attribute: str, baseline: str, candidate: str, operation: str,
        start: int, end: int, tenant: str,
    ) -> dict[str, Any]:  # fmt: skip
        """Every entry operation of `service` in [start, end] ns, baseline against candidate."""
        params: dict[str, object] = {"tenant": tenant, "start": start, "end": end, "service": service,
                                     "attr": attribute, "op": operation}  # fmt: skip
        scope = f"{WINDOW} AND service_name = {{service:String}} AND {ENTRY}" + (
            " AND name = {op:String}" if operation else ""
        )
        values = self.conn.query(
            f"SELECT {VALUE} AS v, count() AS n FROM {self.db}.spans WHERE {scope} AND {HAS_VALUE} "
            f"GROUP BY v ORDER BY n DESC, v LIMIT {MAX_VALUES}",
            params,
        ).to_pylist()
        answer: dict[str, Any] = {
            "service": service, "attribute": attribute, "baseline": baseline, "candidate": candidate,
            "operation": operation or None, "start": start / 1e9, "end": end / 1e9,
            "values": [{"value": str(v["v"]), "spans": int(v["n"])} for v in values],
            "test": {**TEST, "alpha": stats.ALPHA, "minLatencyChange": stats.MIN_LATENCY_CHANGE,
                     "minErrorChange": stats.MIN_ERROR_CHANGE, "minSpans": stats.MIN_SAMPLES},
            "operations": [], "regressions": 0,
        }  # fmt: skip
        if not baseline or not candidate:
            return answer
        rows = self.conn.query(
            f"SELECT toString(name) AS op, {VALUE} = {{candidate:String}} AS is_candidate, count() AS n, "
            "countIf(status_code = 2) AS errors, quantiles(0.5, 0.95, 0.99)(duration) AS q, "
            f"groupArraySample({SAMPLE}, 7)(duration) AS sample, "
            "sumMap([toUInt8(ceil(log2(greatest(duration, 1))))], [toUInt64(1)]) AS histogram, "
            "histogram.1 AS buckets, histogram.2 AS counts "
            f"FROM {self.db}.spans WHERE {scope} AND {VALUE} IN ({{baseline:String}}, {{candidate:String}}) "
            # the busiest operations only, chosen before anything is sampled
            f"AND name IN (SELECT name FROM {self.db}.spans WHERE {scope} GROUP BY name "
            f"ORDER BY count() DESC, name LIMIT {MAX_OPERATIONS}) "
            "GROUP BY op, is_candidate ORDER BY op",
            {**params, "baseline": baseline, "candidate": candidate},
        ).to_pylist()
        by_op: dict[str, dict[bool, dict[str, Any]]] = {}
        for row in rows:
            by_op.setdefault(str(row["op"]), {})[bool(row["is_candidate"])] = row
        ops = sorted(by_op, key=lambda o: -sum(r["n"] for r in by_op[o].values()))[:MAX_OPERATIONS]
        compared = [(op, by_op[op]) for op in ops if len(by_op[op]) == 2]
        verdicts = stats.judge([
            (stats.Release(s[False]["n"], s[False]["errors"], s[False]["sample"]),
             stats.Release(s[True]["n"], s[True]["errors"], s[True]["sample"]))
            for _, s in compared
        ])  # fmt: skip
        results: list[dict[str, Any]] = []
        for (op, sides), verdict in zip(compared, verdicts, strict=True):
            base, cand = sides[False], sides[True]
            deltas = {
                f"delta{k}Ms": (cand["q"][j] - base["q"][j]) / 1e6
                for j, k in enumerate(("P50", "P95", "P99"))
            }
            results.append({
                "operation": op,
                "baseline": _side(base),
                "candidate": _side(cand),
                "latency": {"verdict": verdict.latency, "pValue": verdict.latency_p, "change": verdict.change, **deltas},
                "errors": {"verdict": verdict.errors, "pValue": verdict.errors_p, "delta": verdict.error_delta},
                "regression": verdict.regression,
                "examples": self._examples(scope, params, op, baseline, candidate, base["q"][0])
                if verdict.regression else None,
            })  # fmt: skip
        results.sort(key=lambda r: (not r["regression"], -abs(r["latency"]["change"])))
        answer["operations"] = results
        answer["regressions"] = sum(r["regression"] for r in results)
        answer["onlyOneSide"] = [op for op in ops if len(by_op[op]) == 1]
        return answer

    def _examples(
        self, scope: str, params: dict[str, object], op: str, baseline: str, candidate: str, median: float
    ) -> dict[str, list[dict[str, Any]]]:
        """The candidate's slowest spans of `op` and the baseline's closest to its median."""
        out: dict[str, list[dict[str, Any]]] = {}
        for side, value, order in (
            ("candidate", candidate, "duration DESC"),
            ("baseline", baseline, "abs(toFloat64(duration) - {median:Float64})"),
        ):
            rows = self.conn.query(
                f"SELECT lower(hex(trace_id)) AS t, lower(hex(span_id)) AS s, duration FROM {self.db}.spans "
                f"WHERE {scope} AND name = {{example_op:String}} AND {VALUE} = {{value:String}} "
                f"ORDER BY {order}, trace_id LIMIT {EXAMPLES}",
                {**params, "example_op": op, "value": value, "median": median},
            ).to_pylist()
            out[side] = [
                {"traceID": r["t"], "spanID": r["s"], "durationMs": r["duration"] / 1e6} for r in rows
            ]
        return out

    def what_changed(
        self, service: str, slower_than: int | None, start: int, end: int, tenant: str
    ) -> dict[str, Any]:
        """Attribute values over-represented among `service`'s slow (over `slower_than` ns, its p95
        by default) or failed spans, against the rest of its spans, ranked by the difference of
        their shares."""
        params: dict[str, object] = {"tenant": tenant, "start": start, "end": end, "service": service}
        scope = f"{WINDOW} AND service_name = {{service:String}}"
        if slower_than is None:
            table = self.conn.query(
                f"SELECT quantile(0.95)(duration) FROM {self.db}.spans WHERE {scope}", params
            )
            p95 = table.column(0)[0].as_py()
            slower_than = int(p95) if p95 is not None and not math.isnan(p95) else 0
        params["slow"] = slower_than
        selected = "(status_code = 2 OR duration > {slow:UInt64})"
        pairs = ", ".join([*attribute_pairs("span", "attributes"), *attribute_pairs("resource", "resource")])
        totals = self.conn.query(
            f"SELECT countIf({selected}) AS sel, countIf(NOT {selected}) AS rest FROM {self.db}.spans WHERE {scope}",
            params,
        ).to_pylist()[0]
        sel, rest = int(totals["sel"]), int(totals["rest"])
        # ranked in the engine: a service's attributes may hold millions of distinct values
        rows = self.conn.query(
            f"SELECT kv.1 AS attr, kv.2 AS val, countIf({selected}) AS s, countIf(NOT {selected}) AS r, "
            "s / greatest({sel:UInt64}, 1) - r / greatest({rest:UInt64}, 1) AS d "
            f"FROM {self.db}.spans ARRAY JOIN arrayConcat({pairs}) AS kv WHERE {scope} "
            f"GROUP BY attr, val HAVING d > 0 ORDER BY d DESC, attr, val LIMIT {MAX_CHANGED}",
            {**params, "sel": sel, "rest": rest},
        ).to_pylist()
        values: list[dict[str, Any]] = [
            {
                "attribute": str(r["attr"]), "value": str(r["val"]), "selected": int(r["s"]), "rest": int(r["r"]),
                "selectedShare": int(r["s"]) / sel if sel else 0.0, "restShare": int(r["r"]) / rest if rest else 0.0,
            }
            for r in rows
        ]  # fmt: skip
        for v in values:
            v["difference"] = v["selectedShare"] - v["restShare"]
        values.sort(key=lambda v: (-v["difference"], v["attribute"], v["value"]))
        return {
            "service": service, "start": start / 1e9, "end": end / 1e9, "slowerThanMs": slower_than / 1e6,
            "selected": sel, "rest": rest, "values": [v for v in values if v["difference"] > 0],
        }  # fmt: skip


def _side(row: dict[str, Any]) -> dict[str, Any]:
    keys, counts = row["buckets"], row["counts"]
    total = max(1, sum(counts))
    return {
        "spans": int(row["n"]),
        "errors": int(row["errors"]),
        "errorRate": row["errors"] / row["n"],
        "p50Ms": row["q"][0] / 1e6, "p95Ms": row["q"][1] / 1e6, "p99Ms": row["q"][2] / 1e6,
        # log2 buckets of the duration: upper bound in ms, share of the release's spans
        "histogram": [{"leMs": 2**k / 1e6, "share": c / total} for k, c in sorted(zip(keys, counts, strict=True))],
    }  # fmt: skip


def _text(request: Request, name: str, required: bool = False) -> str:
    value = request.query_params.get(name, "")
    if required and not value:
        raise BadRequest(f"{name} is required")
    if len(value) > MAX_TEXT:
        raise BadRequest(f"{name} is at most {MAX_TEXT} characters")
    return value


def _releases_args(request: Request) -> dict[str, Any]:
    start, end = time_range_ns(request)
    return {
        "service": _text(request, "service", required=True),
        "attribute": _text(request, "attribute") or "service.version",
        "baseline": _text(request, "baseline"),
        "candidate": _text(request, "candidate"),
        "operation": _text(request, "operation"),
        "start": start, "end": end, "tenant": tenant(request),
    }  # fmt: skip


def _attributes_args(request: Request) -> dict[str, Any]:
    start, end = time_range_ns(request)
    slower = number(request, "slowerThanMs", -1, -1, 10**9)
    return {
        "service": _text(request, "service", required=True),
        "slower_than": None if slower < 0 else int(slower * 1e6),
        "start": start, "end": end, "tenant": tenant(request),
    }  # fmt: skip
