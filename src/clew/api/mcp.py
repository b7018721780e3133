"""An MCP endpoint (`/api/mcp` on the http port, Streamable HTTP, the `mcp` package) for coding and
on-call agents. Its tools disclose a trace step by step instead of dumping it: find traces, then a
summary and topology, then the critical path, the errors or one span's details. Requests pass the
same identity middleware and query limits as the rest of the API; a tool reads the caller's tenant.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry.proto.trace.v1.trace_pb2 import Span, TracesData
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from clew import __version__
from clew.core.errors import BadRequest, ClewError
from clew.core.identity import caller_of
from clew.core.language import parse
from clew.core.model import DEFAULT_TENANT, parse_trace_id
from clew.core.otlp import to_otlp_json, to_traces_data
from clew.store.traces import SearchRequest, TraceReader

if TYPE_CHECKING:  # the SDK is imported when the endpoint is first called (see `LazyMcp`)
    from mcp.server.mcpserver import MCPServer

TENANT: ContextVar[str] = ContextVar("clew_mcp_tenant", default=DEFAULT_TENANT)
MAX_SEARCH = 50
KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
INSTRUCTIONS = (
    "clew stores distributed traces. Start with `services` or `search` (the query language follows "
    'TraceQL: { status = error }, { resource.service.name = "checkout" && duration > 500ms }), then '
    "look into one trace with `trace_summary`, `critical_path`, `trace_errors` and `span_details`. "
    "`service_graph` and `red_metrics` describe services over a time window; `trace_logs` and "
    "`search_logs` read what the services logged."
)


@dataclass(frozen=True, slots=True)
class Sources:
    """What the tools read: the traces, and the service graph and RED timelines of the components."""

    reader: TraceReader
    graph: Callable[[int, int, str], dict[str, Any]]
    red: Callable[[int, int, int, str, str], list[dict[str, Any]]]
    # (service, attribute, baseline, candidate, operation, start, end, tenant) -> the comparison
    releases: Callable[..., dict[str, Any]]
    # (tenant, now) -> the alerts firing, pending or resolved lately
    alerts: Callable[[str, int], list[dict[str, Any]]]
    # (tenant, trace id) -> the trace's log records; (tenant, q, start, end, limit) -> a log search
    trace_logs: Callable[[str, bytes], dict[str, Any]]
    search_logs: Callable[[str, str, int, int, int], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class _Span:
    span: Span
    service: str

    @property
    def id(self) -> str:
        return self.span.span_id.hex()

    @property
    def parent(self) -> str:
        return self.span.parent_span_id.hex()

    @property
    def start(self) -> int:
        return self.span.start_time_unix_nano

    @property
    def end(self) -> int:
        return max(self.span.end_time_unix_nano, self.span.start_time_unix_nano)

    def brief(self) -> dict[str, Any]:
        return {
            "spanId": self.id,
            "service": self.service,
            "name": self.span.name,
            "kind": KINDS.get(self.span.kind, "unspecified"),
            "durationMs": round((self.end - self.start) / 1e6, 3),
            "error": self.span.status.code == 2,
        }


def _window(minutes: float) -> tuple[int, int]:
    if not 0 < minutes <= 60 * 24 * 31:
        raise BadRequest("minutes must be from 1 to 44640 (31 days)")
    end = time.time_ns()
    return end - int(minutes * 60 * 10**9), end


def mcp_server(sources: Sources) -> MCPServer:
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    server: MCPServer = MCPServer(
        name="clew", version=__version__, instructions=INSTRUCTIONS, log_level="WARNING"
    )
    reader = sources.reader

    def tool(fn: Callable[..., Awaitable[dict[str, Any]]]) -> None:
        """A tool whose domain errors reach the agent as tool errors with their reason."""

        @functools.wraps(fn)
        async def guarded(*args: Any, **kwargs: Any) -> dict[str, Any]:
            try:
                return await fn(*args, **kwargs)
            except ClewError as exc:
                raise ToolError(exc.message) from exc

        server.tool()(guarded)

    async def trace_of(trace_id: str) -> TracesData:
        raw = parse_trace_id(trace_id)
        if raw is None:
            raise BadRequest(f"trace id {trace_id!r} is not up to 32 hex characters")
        batch = await asyncio.to_thread(reader.get_trace, raw, TENANT.get())
        if not len(batch):
            raise BadRequest(f"trace {trace_id} not found")
        return to_traces_data(batch)

    def spans_in(data: TracesData) -> list[_Span]:
        out: list[_Span] = []
        for rs in data.resource_spans:
            service = next(
                (a.value.string_value for a in rs.resource.attributes if a.key == "service.name"), ""
            )
            out.extend(_Span(s, service) for ss in rs.scope_spans for s in ss.spans)
        return out

    async def spans_of(trace_id: str) -> list[_Span]:
        return spans_in(await trace_of(trace_id))

    @tool
    async def services() -> dict[str, Any]:
        """Services that sent spans, each with its operations (span names)."""
        names = await asyncio.to_thread(reader.services, TENANT.get())
        out = []
        for name in names[:200]:
            ops = await asyncio.to_thread(reader.operations, name, None, TENANT.get())
            out.append({"service": name, "operations": sorted({op for op, _ in ops})[:100]})
        return {"services": out}

    @tool
    async def search(query: str, minutes: float = 60, limit: int = 20) -> dict[str, Any]:
        """Traces with spans matching `query` (TraceQL-style, e.g. `{ status = error }`) that
        started in the last `minutes`, newest first: root, duration, span and error counts."""
        start, end = _window(minutes)
        request = SearchRequest(parse(query), start, end, max(1, min(limit, MAX_SEARCH)), 3, TENANT.get())
        result = await asyncio.to_thread(reader.search, request)
        return {
            "traces": [
                {
                    "traceId": t.trace_id.hex(),
                    "root": f"{t.root_service}: {t.root_name}",
                    "durationMs": round(t.duration / 1e6, 3),
                    "spans": t.span_count,
                    "errors": t.error_count,
                    "services": sorted(t.services),
                    "matchedSpans": [s.span_id.hex() for s in t.spans],
                }
                for t in result.traces
            ]
        }

    @tool
    async def trace_summary(trace_id: str) -> dict[str, Any]:
        """One trace at a glance: root, duration, spans and errors per service, and which service
        calls which (the topology), without the spans themselves."""
        spans = await spans_of(trace_id)
        by_id = {s.id: s for s in spans}
        roots = [s for s in spans if s.parent not in by_id]
        first, last = min(s.start for s in spans), max(s.end for s in spans)
        per_service: dict[str, Counter[str]] = defaultdict(Counter)
        calls: Counter[tuple[str, str]] = Counter()
        for s in spans:
            per_service[s.service]["spans"] += 1
            per_service[s.service]["errors"] += s.span.status.code == 2
            parent = by_id.get(s.parent)
            if parent is not None and parent.service != s.service:
                calls[(parent.service, s.service)] += 1
        root = min(roots, key=lambda s: s.start)
        return {
            "traceId": trace_id.lower(),
            "root": root.brief(),
            "durationMs": round((last - first) / 1e6, 3),
            "spans": len(spans),
            "errors": sum(s.span.status.code == 2 for s in spans),
            "rootCount": len(roots),
            "services": {name: dict(c) for name, c in sorted(per_service.items())},
            "calls": [{"from": a, "to": b, "count": n} for (a, b), n in calls.most_common()],
        }

    @tool
    async def critical_path(trace_id: str) -> dict[str, Any]:
        """The spans that made the trace as long as it was, in order, each with the time spent in
        it and not in a child on the path (self time)."""
        spans = await spans_of(trace_id)
        children: dict[str, list[_Span]] = defaultdict(list)
        ids = {s.id for s in spans}
        for s in spans:
            children[s.parent].append(s)
        roots = [s for s in spans if s.parent not in ids]
        path: list[dict[str, Any]] = []

        def walk(span: _Span, until: int) -> None:
            # the last child to finish before `until` is on the path; then the one before it, ...
            cursor, on_path = min(span.end, until), []
            for child in sorted(children[span.id], key=lambda c: c.end, reverse=True):
                if child.end <= cursor and child.start >= span.start:
                    on_path.append(child)
                    cursor = child.start
            busy = sum(min(c.end, until) - c.start for c in on_path)
            path.append(
                {**span.brief(), "selfMs": round(max(0, min(span.end, until) - span.start - busy) / 1e6, 3)}
            )
            for child in reversed(on_path):
                walk(child, min(span.end, until))

        walk(max(roots, key=lambda s: s.end - s.start), max(s.end for s in spans))
        return {"traceId": trace_id.lower(), "path": path}

    @tool
    async def trace_errors(trace_id: str) -> dict[str, Any]:
        """Spans of the trace that failed: their status message and exception events."""
        errors = []
        for s in await spans_of(trace_id):
            exceptions = [
                {a.key: a.value.string_value[:2000] for a in e.attributes if a.key.startswith("exception.")}
                for e in s.span.events
                if e.name == "exception"
            ]
            if s.span.status.code == 2 or exceptions:
                errors.append({**s.brief(), "message": s.span.status.message, "exceptions": exceptions})
        return {"traceId": trace_id.lower(), "errors": errors}

    @tool
    async def span_details(trace_id: str, span_id: str) -> dict[str, Any]:
        """Everything about one span (attributes, events, links, status) and its resource, as
        OTLP/JSON."""
        doc = to_otlp_json(await trace_of(trace_id))  # one read: the span is found in it
        for rs in doc["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                for span in ss["spans"]:
                    if span["spanId"] == span_id.lower():
                        return {"resource": rs["resource"], "scope": ss.get("scope", {}), "span": span}
        raise BadRequest(f"span {span_id} not found in trace {trace_id}")

    @tool
    async def compare_traces(trace_a: str, trace_b: str) -> dict[str, Any]:
        """Two traces side by side per service and operation: span counts and total time in each,
        the largest differences first."""
        totals: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0.0, 0, 0.0])
        for side, tid in ((0, trace_a), (2, trace_b)):
            for s in await spans_of(tid):
                row = totals[(s.service, s.span.name)]
                row[side] += 1
                row[side + 1] += (s.end - s.start) / 1e6
        rows: list[dict[str, Any]] = [
            {"service": svc, "operation": op, "countA": a, "msA": round(ma, 3), "countB": b, "msB": round(mb, 3),
             "deltaMs": round(mb - ma, 3)}
            for (svc, op), (a, ma, b, mb) in totals.items()
        ]  # fmt: skip
        rows.sort(key=lambda r: abs(r["deltaMs"]), reverse=True)
        return {"traceA": trace_a.lower(), "traceB": trace_b.lower(), "operations": rows[:200]}

    @tool
    async def service_graph(minutes: float = 60) -> dict[str, Any]:
        """Which services call which over the last `minutes`: calls, errors and latency per edge."""
        start, end = _window(minutes)
        return await asyncio.to_thread(sources.graph, start, end, TENANT.get())

    @tool
    async def red_metrics(service: str, minutes: float = 60) -> dict[str, Any]:
        """Request rate, error rate and latency percentiles of a service per minute (before any
        sampling) over the last `minutes`."""
        start, end = _window(minutes)
        step = 60 * max(1, int(minutes) // 60)
        points = await asyncio.to_thread(sources.red, start, end, step, service, TENANT.get())
        return {"service": service, "step": step, "points": points}

    @tool
    async def compare_releases(
        service: str, baseline: str = "", candidate: str = "", attribute: str = "service.version",
        minutes: float = 360,
    ) -> dict[str, Any]:  # fmt: skip
        """Whether a release of a service regressed: per operation, latency and error changes of
        `candidate` against `baseline` (values of `attribute`), with their tests and example traces
        of each regression. Without baseline and candidate, lists the attribute's values."""
        start, end = _window(minutes)
        return await asyncio.to_thread(
            sources.releases, service, attribute, baseline, candidate, "", start, end, TENANT.get()
        )

    @tool
    async def alerts() -> dict[str, Any]:
        """The alerts firing, pending or resolved in the last day (SLO burn rates, silent services,
        broken traces, clew's own pipeline), each with example trace ids to look into."""
        return {"alerts": sources.alerts(TENANT.get(), time.time_ns())}

    @tool
    async def trace_logs(trace_id: str) -> dict[str, Any]:
        """The log records of a trace, oldest first, each with its span id, severity, service, body
        and attributes: what the services said while serving the request (errors, retries)."""
        trace = parse_trace_id(trace_id)
        if trace is None:
            raise BadRequest(f"trace id {trace_id[:64]!r} is not up to 32 hex characters")
        return await asyncio.to_thread(sources.trace_logs, TENANT.get(), trace)

    @tool
    async def search_logs(query: str = "", minutes: float = 60, limit: int = 50) -> dict[str, Any]:
        """Log records, newest first. `query`: words match the body; `service:NAME`,
        `severity:error`, `severity>=warn`, `trace:ID` and `key=value` on attributes narrow it. Each
        record names its trace id to look into."""
        start, end = _window(minutes)
        limit = max(1, min(limit, 200))
        return await asyncio.to_thread(sources.search_logs, TENANT.get(), query, start, end, limit)

    return server


class _CallerTenant:
    """Hands the tenant the identity middleware resolved to the tools (a context variable, which
    the tool's task inherits)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = TENANT.set(caller_of(scope).tenant)
        try:
            await self.app(scope, receive, send)
        finally:
            TENANT.reset(token)


def mcp_routes(sources: Sources) -> tuple[list[Route], LazyMcp]:
    """The `/api/mcp` route and what the server must run while it serves (`LazyMcp.run`)."""
    endpoint = LazyMcp(sources)
    return [Route("/api/mcp", endpoint=_CallerTenant(endpoint), methods=["GET", "POST", "DELETE"])], endpoint


class LazyMcp:
    """The MCP endpoint, built on its first request: the SDK and what it imports are ~40 MiB of a
    server's memory that most deployments never use. Stateless, JSON answers: no session state to
    keep per client, so any instance can answer."""

    def __init__(self, sources: Sources) -> None:
        self.sources = sources
        self._app: ASGIApp | None = None
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._serving: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self._app or await self._build()
        await app(scope, receive, send)

    async def _build(self) -> ASGIApp:
        async with self._lock:
            if self._app is not None:
                return self._app
            # imported off the event loop: other requests go on meanwhile
            await asyncio.to_thread(importlib.import_module, "mcp.server.mcpserver")
            from mcp.server.transport_security import TransportSecuritySettings

            server = mcp_server(self.sources)
            app = server.streamable_http_app(
                streamable_http_path="/api/mcp",
                stateless_http=True,
                json_response=True,
                # the gateway checks Host already (gateway/hosts.py), on loopback and beyond with keys
                transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
            )
            endpoint = next(r.endpoint for r in app.routes if isinstance(r, Route) and r.path == "/api/mcp")
            ready = asyncio.Event()

            async def serve() -> None:  # the session manager's task group lives in one task
                async with server.session_manager.run():
                    ready.set()
                    await self._stop.wait()

            serving = asyncio.create_task(serve())
            started = asyncio.ensure_future(ready.wait())
            await asyncio.wait([serving, started], return_when=asyncio.FIRST_COMPLETED)
            started.cancel()
            if not ready.is_set():
                serving.result()  # raises what stopped it; the next request tries again
            self._serving = serving
            self._app = endpoint
            return endpoint

    @asynccontextmanager
    async def run(self) -> AsyncIterator[None]:
        """While the server serves: on the way out, the session manager (if started) stops."""
        try:
            yield
        finally:
            self._stop.set()
            if self._serving is not None:
                await self._serving
