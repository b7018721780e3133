"""Grafana Tempo's HTTP API on its own port (`--tempo-port`, 3200), so that Grafana's Tempo data
source works against clew: search (the query language follows TraceQL; `tags` in logfmt with
`minDuration`/`maxDuration` as the older search form), tag discovery (v1 and v2), traces by id as
OTLP JSON or, for `Accept: application/protobuf` (what Grafana asks for), Tempo's protobuf messages.
Tenants come from `X-Scope-OrgID` as in Tempo (through the same identity middleware as every port).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from clew import __version__
from clew.api.jaeger_v3 import rfc3339_ns
from clew.api.native import search_json, search_request
from clew.components.http import seconds_window, tenant, time_range_ns, trace_id_param
from clew.core.errors import BadRequest, NotFound
from clew.core.json_body import load_json
from clew.core.language import Condition, parse, parse_duration_literal
from clew.core.metrics_query import MetricsQuery, parse_metrics
from clew.core.otlp import to_otlp_json, to_traces_data
from clew.store.metrics import MetricSeries, MetricsResult
from clew.store.otlp_wire import length_delimited
from clew.store.tags import AttributeScope, TagValue
from clew.store.traces import TraceReader

# the Tempo API version whose shapes these answers follow: Grafana picks its requests by it
TEMPO_API_VERSION = "2.8.0"
MAX_TAGS = 1000
PROTOBUF = "application/protobuf"
INTRINSICS = ("duration", "kind", "name", "status", "statusMessage", "span:duration", "span:kind",
              "span:name", "span:status", "span:statusMessage")  # fmt: skip
_LOGFMT = re.compile(r'\s*([^\s=]+)=("(?:[^"\\]|\\.)*"|\S*)')


def metrics_routes(reader: TraceReader, path: str = "/api/metrics/query_range") -> list[Route]:
    """TraceQL metrics over a range, as Tempo answers them (also served on the http port as
    `/api/v1/metrics/query_range`, for the web UI's charts)."""

    async def query_range(request: Request) -> JSONResponse:
        q, start, end, step = _metrics_request(request, instant=False)
        found = await asyncio.to_thread(reader.metrics, q, start, end, step, tenant(request))
        return JSONResponse(
            {"series": [_series_json(s, q.function) for s in found.series], "metrics": _inspected(found)}
        )

    return [Route(path, query_range)]


def tempo_routes(reader: TraceReader) -> list[Route]:
    async def echo(request: Request) -> Response:
        return PlainTextResponse("echo")

    async def ready(request: Request) -> Response:
        return PlainTextResponse("ready")

    async def buildinfo(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "version": TEMPO_API_VERSION,
                "revision": f"clew-{__version__}",
                "branch": "clew",
                "buildUser": "clew",
                "buildDate": "",
                "goVersion": "",
            }
        )

    async def search(request: Request) -> JSONResponse:
        q = request.query_params.get("q") or tags_query(request.query_params.get("tags", ""))
        search_req = search_request(request, q, *_durations(request))
        result = await asyncio.to_thread(reader.search, search_req)
        return JSONResponse(search_json(search_req, q, result))

    async def tags_v1(request: Request) -> JSONResponse:
        start, end, who = _window(request)
        names = set(INTRINSICS[:4])
        for scope in ("span", "resource"):
            names.update(await asyncio.to_thread(reader.tag_names, scope, start, end, who, MAX_TAGS))
        return JSONResponse({"tagNames": sorted(names)[:MAX_TAGS]})

    async def tags_v2(request: Request) -> JSONResponse:
        start, end, who = _window(request)
        wanted = request.query_params.get("scope", "all") or "all"
        if wanted not in ("all", "span", "resource", "intrinsic", "event", "link", "instrumentation"):
            raise BadRequest(f"scope must be one of span, resource, intrinsic or all, got {wanted!r}")
        scopes: list[dict[str, Any]] = []
        for scope in ("resource", "span"):
            if wanted in ("all", scope):
                names = await asyncio.to_thread(reader.tag_names, scope, start, end, who, MAX_TAGS)
                scopes.append({"name": scope, "tags": names})
        if wanted in ("all", "intrinsic"):
            scopes.append({"name": "intrinsic", "tags": list(INTRINSICS)})
        return JSONResponse({"scopes": scopes})

    async def values(request: Request, typed: bool) -> JSONResponse:
        start, end, who = _window(request)
        intrinsic, scopes, key = tag_name(request.path_params["tag"])
        among = _filter(request.query_params.get("q", ""))
        found: list[TagValue]
        if intrinsic is not None:
            found = await asyncio.to_thread(
                reader.intrinsic_values, intrinsic, start, end, who, MAX_TAGS, among
            )
        else:
            found = await asyncio.to_thread(reader.tag_values, scopes, key, start, end, who, MAX_TAGS, among)
        if typed:
            return JSONResponse({"tagValues": [{"type": v.type, "value": v.value} for v in found]})
        return JSONResponse({"tagValues": [v.value for v in found]})

    async def values_v1(request: Request) -> JSONResponse:
        return await values(request, typed=False)

    async def values_v2(request: Request) -> JSONResponse:
        return await values(request, typed=True)

    async def trace(request: Request, v2: bool) -> Response:
        trace_id = trace_id_param(request)
        # Tempo's optional `start` and `end` (Unix seconds): Grafana sends its time range with them
        window = seconds_window(request)
        batch = await asyncio.to_thread(reader.get_trace, trace_id, tenant(request), window)
        if not len(batch):
            raise NotFound(f"trace {trace_id.hex()} not found")
        data = to_traces_data(batch)
        if PROTOBUF in request.headers.get("accept", ""):
            # tempopb.Trace is field 1, repeated ResourceSpans: TracesData byte for byte; v2 wraps it
            # in TraceByIDResponse's field 1
            body = data.SerializeToString()
            if v2:
                body = b"\x0a" + length_delimited([body])
            return Response(body, media_type=PROTOBUF)
        resource_spans = to_otlp_json(data)["resourceSpans"]
        doc = {"trace": {"resourceSpans": resource_spans}} if v2 else {"batches": resource_spans}
        return Response(json.dumps(doc), media_type="application/json")

    async def trace_v1(request: Request) -> Response:
        return await trace(request, v2=False)

    async def trace_v2(request: Request) -> Response:
        return await trace(request, v2=True)

    async def query_instant(request: Request) -> JSONResponse:
        q, start, end, step = _metrics_request(request, instant=True)
        found = await asyncio.to_thread(reader.metrics, q, start, end, step, tenant(request))
        out = []
        for s in found.series:
            doc = _series_json(s, q.function)
            out.append(
                {"labels": doc["labels"], "promLabels": doc["promLabels"], "value": sum(s.samples.values())}
            )
        return JSONResponse({"series": out, "metrics": _inspected(found)})

    return [
        *metrics_routes(reader),
        Route("/api/metrics/query", query_instant),
        Route("/api/echo", echo),
        Route("/ready", ready),
        Route("/api/status/buildinfo", buildinfo),
        Route("/api/search", search),
        Route("/api/search/tags", tags_v1),
        Route("/api/v2/search/tags", tags_v2),
        Route("/api/search/tag/{tag}/values", values_v1),
        Route("/api/v2/search/tag/{tag}/values", values_v2),
        Route("/api/traces/{trace_id}", trace_v1),
        Route("/api/v2/traces/{trace_id}", trace_v2),
    ]


def _quoted(raw: str, tags: str) -> str:
    """A logfmt value in double quotes, with JSON's escapes."""
    try:
        value = load_json(raw.encode("utf-8", "surrogatepass"))
    except BadRequest as exc:
        raise BadRequest(f"tags: a quoted value is not a JSON string ({exc}): {tags[:100]!r}") from exc
    if not isinstance(value, str):
        raise BadRequest(f"tags: a quoted value is not a JSON string: {tags[:100]!r}")
    return value


def tags_query(tags: str) -> str:
    """Tempo's older search form, `tags` in logfmt (`service.name=shop http.status_code=500`), as a
    query: every tag on one span (span or resource attribute; `name` and `status` are the span's)."""
    conditions = []
    rest = tags.strip()
    while rest:
        m = _LOGFMT.match(rest)
        if m is None:
            raise BadRequest(f"tags must be logfmt, key=value pairs separated by spaces: {tags!r}")
        key, raw = m.group(1), m.group(2)
        value = _quoted(raw, tags) if raw.startswith('"') else raw
        rest = rest[m.end() :].strip()
        text = json.dumps(value)
        if key in ("name", "status") or key.startswith("span:"):
            conditions.append(f"{key} = {value if key.endswith('status') else text}")
        elif key == "service.name":
            conditions.append(f"resource.service.name = {text}")
        else:
            attr = (
                "." + json.dumps(key)
                if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.\-/]*", key)
                else "." + key
            )
            numeric = re.fullmatch(r"-?\d+(\.\d+)?", value) is not None
            conditions.append(f"({attr} = {text} || {attr} = {value})" if numeric else f"{attr} = {text}")
    return "{ " + " && ".join(conditions) + " }" if conditions else "{ }"


MAX_STEPS = 11_000  # Tempo's limit of points a series
MAX_STEP_SECONDS = (2**63 - 1) // 10**9  # what a step in nanoseconds holds


def _metrics_request(request: Request, instant: bool) -> tuple[MetricsQuery, int, int, int]:
    """`q`, `start`, `end` (Unix seconds, nanoseconds or RFC 3339; the last hour by default) and
    `step` (a duration such as 30s, or seconds; about 100 points by default)."""
    params = request.query_params
    q = params.get("q") or params.get("query")
    if not q:
        raise BadRequest("q is required, such as q={ status = error } | rate()")
    given_end, given_start = (
        _instant(params.get("end", ""), "end"),
        _instant(params.get("start", ""), "start"),
    )
    end = time.time_ns() if given_end is None else given_end
    start = end - 3600 * 10**9 if given_start is None else given_start
    if not 0 <= start < end:
        raise BadRequest("start must be before end")
    text = params.get("step", "")
    if instant:
        step = end - start
    elif text:
        try:
            step = (
                parse_duration_literal(text)
                if not re.fullmatch(r"\d+(\.\d+)?", text)
                else int(float(text) * 10**9)
            )
        except ValueError as exc:
            raise BadRequest(f"step: {exc}") from exc
        except OverflowError as exc:  # a number of hundreds of digits
            raise BadRequest(f"step must be at most {MAX_STEP_SECONDS:,} seconds, got {text[:40]!r}") from exc
    else:
        step = max(10**9, -(-(end - start) // 100) // 10**9 * 10**9)
    if step <= 0 or (end - start) // step > MAX_STEPS:
        raise BadRequest(f"step must be positive and give at most {MAX_STEPS} points over start..end")
    return parse_metrics(q), start, end, step


def _instant(text: str, name: str) -> int | None:
    if not text:
        return None
    if re.fullmatch(r"\d{13,19}", text):
        return int(text)  # nanoseconds
    if re.fullmatch(r"\d{1,12}(\.\d+)?", text):
        return int(float(text) * 10**9)
    if "T" in text:
        return rfc3339_ns(text, name)
    raise BadRequest(f"{name} must be Unix seconds, nanoseconds or an RFC 3339 time, got {text[:40]!r}")


def _inspected(result: MetricsResult) -> dict[str, Any]:
    """How much a structural query evaluated: it stops after the search's inspection limit."""
    if result.inspected_traces is None:
        return {}
    return {"inspectedTraces": result.inspected_traces, "completed": result.complete}


def _series_json(s: MetricSeries, function: str) -> dict[str, Any]:
    """A series as Tempo answers it, with Prometheus-style labels for Grafana."""
    flagged = any(k.startswith("__meta") for k, _ in s.labels)  # compare(): a nil names the attribute
    labels = [(k, v) for k, v in s.labels if v is not None or flagged] or [("__name__", function)]
    return {
        "labels": [{"key": k, "value": {} if v is None else {"stringValue": v}} for k, v in labels],
        "promLabels": "{"
        + ", ".join(f"{k}={'<nil>' if v is None else json.dumps(v)}" for k, v in labels)
        + "}",
        "samples": [{"timestampMs": str(at // 10**6), "value": v} for at, v in sorted(s.samples.items())],
        "exemplars": [
            {
                "labels": [{"key": "trace:id", "value": {"stringValue": trace.hex()}}],
                "value": value,
                "timestampMs": str(at // 10**6),
            }
            for at, (trace, value) in sorted(s.exemplars.items())[:100]
        ],
    }


def tag_name(tag: str) -> tuple[str | None, tuple[AttributeScope, ...], str]:
    """A tag as Tempo's APIs name it: an intrinsic (`name`, `span:status`, `resource.service.name`),
    or an attribute with its scopes (`span.x`, `resource.x`, and `.x` or plain `x` for both)."""
    bare = tag.removeprefix("span:")
    if bare in ("name", "status", "kind", "statusMessage") and (tag == bare or tag.startswith("span:")):
        return bare, (), ""
    if tag in ("resource.service.name", "service.name", ".service.name", "rootServiceName"):
        return "service", (), ""
    for prefix, scopes in (("span.", ("span",)), ("resource.", ("resource",)), (".", ("span", "resource"))):
        if tag.startswith(prefix) and len(tag) > len(prefix):
            return None, scopes, tag[len(prefix) :]  # type: ignore[return-value]  # literal tuples
    if not tag or len(tag) > 1024:
        raise BadRequest("a tag name is 1 to 1024 characters")
    return None, ("span", "resource"), tag


def _durations(request: Request) -> tuple[int | None, int | None]:
    """`minDuration`/`maxDuration` (`100ms`, `1.5s`): the trace's duration, as Tempo filters them."""
    out: list[int | None] = []
    for name in ("minDuration", "maxDuration"):
        text = request.query_params.get(name, "")
        try:
            out.append(parse_duration_literal(text) if text else None)
        except ValueError as exc:
            raise BadRequest(f"{name}: {exc}") from exc
    return out[0], out[1]


def _window(request: Request) -> tuple[int, int, str]:
    start, end = time_range_ns(request)
    return start, end, tenant(request)


def _filter(q: str) -> Condition | None:
    """The spans whose values to list: `q` when it is one spanset filter (what Grafana sends, such
    as `{ resource.service.name = "shop" }`); anything more is refused."""
    if not q.strip() or q.strip() == "{}":
        return None
    query = parse(q)
    if not query.simple:
        raise BadRequest("q of a tag values request must be one spanset filter, such as { .a = 1 && .b = 2 }")
    return query.filters[0].condition
