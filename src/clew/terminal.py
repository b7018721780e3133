"""Plain-text views for the terminal: a table of search hits and a trace waterfall within 100
columns, and log records (each body whole), built from the native API's JSON so they work the same
against any server."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

WIDTH = 100


def format_duration(ns: int) -> str:
    if ns == 0:
        return "0"
    if ns < 1_000:
        return f"{ns}ns"
    if ns < 1_000_000:
        return f"{ns / 1_000:.0f}us"
    if ns < 1_000_000_000:
        return f"{ns / 1_000_000:.1f}ms"
    return f"{ns / 1_000_000_000:.2f}s"


def format_time(ns: int) -> str:
    return datetime.fromtimestamp(ns / 10**9, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "~"


def search_table(doc: dict[str, Any], width: int = WIDTH) -> str:
    """One line per trace: id, start (UTC), duration, spans, errors, root service and name."""
    header = f"{'TRACE ID':32} {'START (UTC)':19} {'DURATION':>9} {'SPANS':>5} {'ERR':>3} ROOT"
    root_width = width - len(header) + len("ROOT")
    lines = [header]
    for t in doc.get("traces", []):
        root = f"{t['rootServiceName']}: {t['rootTraceName']}"
        lines.append(
            f"{t['traceID']:32} {format_time(int(t['startTimeUnixNano'])):19} "
            f"{format_duration(int(t['durationNanos'])):>9} {t['spanCount']:>5} "
            f"{t['errorCount'] or '':>3} {_cut(root, root_width)}"
        )
    n = len(doc.get("traces", []))
    lines.append(
        f"{n} trace{'s' if n != 1 else ''}"
        + (
            ""
            if doc.get("metrics", {}).get("completed", True)
            else " (search stopped early: narrow the time range)"
        )
    )
    return "\n".join(lines)


def logs_table(doc: dict[str, Any]) -> str:
    """One line per log record, newest first: time (UTC), severity, service, trace id, then the body
    whole (on one line: a log line is read to its end, as `tail` shows it)."""
    header = f"{'TIME (UTC)':23} {'LEVEL':5} {'SERVICE':14} {'TRACE ID':32} BODY"
    lines = [header]
    for log in doc.get("logs", []):
        ns = int(log["timeUnixNano"])
        when = format_time(ns) + f".{ns // 1_000_000 % 1000:03d}"
        body = log["body"] if isinstance(log["body"], str) else json.dumps(log["body"], separators=(",", ":"))
        body = " ".join(body.split())  # one line a record, whatever the body holds
        lines.append(
            f"{when:23} {_cut(log['severityText'], 5):5} {_cut(log['service'], 14):14} "
            f"{log['traceId'] or '-':32} {body}"
        )
    n = len(doc.get("logs", []))
    more = " (more match: raise --limit or narrow the query)" if doc.get("truncated") else ""
    lines.append(f"{n} log record{'s' if n != 1 else ''}{more}")
    return "\n".join(lines)


@dataclass
class _Span:
    span_id: str
    parent_id: str
    service: str
    name: str
    start: int
    end: int
    error: bool
    children: list[_Span] = field(default_factory=list)


def _spans(doc: dict[str, Any]) -> list[_Span]:
    out = []
    for rs in doc.get("resourceSpans", []):
        service = next(
            (
                a["value"].get("stringValue", "")
                for a in rs.get("resource", {}).get("attributes", [])
                if a["key"] == "service.name"
            ),
            "",
        )
        for ss in rs.get("scopeSpans", []):
            for s in ss.get("spans", []):
                start = int(s["startTimeUnixNano"])
                out.append(
                    _Span(
                        span_id=s["spanId"].lower(),
                        parent_id=s.get("parentSpanId", "").lower(),
                        service=service,
                        name=s.get("name", ""),
                        start=start,
                        end=max(int(s["endTimeUnixNano"]), start),
                        error=s.get("status", {}).get("code") in (2, "STATUS_CODE_ERROR"),
                    )
                )
    return out


def waterfall(doc: dict[str, Any], width: int = WIDTH) -> str:
    """The span tree with offsets and duration bars on one time axis; errors marked with `!`."""
    spans = _spans(doc)
    if not spans:
        return "no spans"
    by_id = {s.span_id: s for s in spans}
    roots = []
    for s in sorted(spans, key=lambda s: (s.start, s.span_id)):
        parent = by_id.get(s.parent_id)
        if parent is not None and parent is not s:
            parent.children.append(s)
        else:
            roots.append(s)
    t0 = min(s.start for s in spans)
    total = max(max(s.end for s in spans) - t0, 1)
    errors = sum(s.error for s in spans)
    services = sorted({s.service for s in spans})
    trace_id = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"].lower()
    first = roots[0]
    lines = [
        f"trace {trace_id}",
        _cut(
            f"root {first.service}: {first.name}  start {format_time(t0)} UTC  duration "
            f"{format_duration(total)}  spans {len(spans)}  errors {errors}",
            width,
        ),
        _cut(f"services {', '.join(services)}", width),
        "",
    ]
    label_w, service_w, num_w = 38, 14, 9
    bar_w = width - label_w - service_w - 2 * num_w - 4
    lines.append(
        f"{'SPAN':{label_w}} {'SERVICE':{service_w}} {'OFFSET':>{num_w}} {'DURATION':>{num_w}} TIMELINE"
    )

    def row(s: _Span, depth: int) -> None:
        mark = "!" if s.error else " "
        label = _cut(f"{mark}{'  ' * min(depth, 8)}{s.name}", label_w)
        begin = int((s.start - t0) / total * bar_w)
        length = max(1, round((s.end - s.start) / total * bar_w))
        begin = min(begin, bar_w - 1)
        bar = " " * begin + ("#" if s.error else "=") * min(length, bar_w - begin)
        lines.append(
            f"{label:{label_w}} {_cut(s.service, service_w):{service_w}} "
            f"{'+' + format_duration(s.start - t0):>{num_w}} {format_duration(s.end - s.start):>{num_w}} "
            f"{bar}".rstrip()
        )
        for child in s.children:
            row(child, depth + 1)

    seen_roots = set()
    for root in roots:
        if root.parent_id and root.parent_id not in seen_roots:
            lines.append(_cut(f"  (parent {root.parent_id} missing: orphan spans below)", width))
            seen_roots.add(root.parent_id)
        row(root, 0)
    return "\n".join(lines)
