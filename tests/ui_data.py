"""Traces for the browser tests: the shop, plus hostile text, events and links, an orphan, a big trace."""

from __future__ import annotations

from tests.shop_data import MS, NOW, A, attr, resource, shop, span

XSS = "<img src=x onerror=alert(1)>"
E, F, G = "e" * 32, "f" * 32, "1" * 32  # events + links, orphan, big
H = "2" * 32  # an error deep in the tree, with an exception event
J = "4" * 32  # a span following from another of its trace (a link within the trace)
STACK = 'Traceback (most recent call last):\n  File "ledger.py", line 12, in write\n    raise ValueError(x)\nValueError: <b>no</b>'


def extras() -> dict:
    start = NOW - 2 * 60 * 10**9
    linked = span(E, "a", None, "consume order", 5, start, 80, {"note": XSS})
    linked["events"] = [
        {"timeUnixNano": str(start + 10 * MS), "name": "cache miss", "attributes": [attr("key", "order:42")]},
        {"timeUnixNano": str(start + 40 * MS), "name": XSS},
    ]
    linked["links"] = [
        {"traceId": A, "spanId": "7" * 16, "attributes": [attr("why", "produced by")]},
        {"traceId": "9" * 32, "spanId": "9" * 16},
    ]
    child = span(E, "b", "a", "write", 3, start + 20 * MS, 30)
    parallel = span(E, "d", "a", "read", 3, start + 25 * MS, 10)  # inside write's time: off the critical path
    orphan_root = span(F, "c", None, "GET /orphans", 2, start, 50)
    orphan = span(F, "d", "8", "lost child", 1, start + 5 * MS, 10)
    skewed = span(F, "f", "c", "skewed", 1, start + 40 * MS, 130)  # ends 120 ms after its parent
    # ends 15 ms after its parent, within 25 ms + 10%: how a server span ends after its client's
    late = span(F, "e", "c", "late server", 2, start + 10 * MS, 55)
    ledger = [
        span(H, "1", None, "POST /ledger", 2, start, 40),
        span(H, "2", "1", "validate", 1, start + 2 * MS, 5),
        span(H, "3", "1", "write ledger", 1, start + 10 * MS, 20, error="write failed"),
    ]
    ledger[2]["events"] = [
        {
            "timeUnixNano": str(start + 25 * MS),
            "name": "exception",
            "attributes": [
                attr("exception.type", "ValueError"),
                attr("exception.message", "balance below zero"),
                attr("exception.stacktrace", STACK),
            ],
        }
    ]
    orders = [
        span(J, "1", None, "POST /orders", 2, start, 100),
        span(J, "2", "1", "publish order", 4, start + 5 * MS, 3),
        span(J, "3", "1", "process order", 5, start + 40 * MS, 20),
    ]
    orders[2]["links"] = [{"traceId": J, "spanId": "2" * 16}]
    return {
        "resourceSpans": [
            resource("orders", orders),
            resource("worker", [linked, child, parallel]),
            resource("orphans", [orphan_root, orphan, skewed, late]),
            resource("ledger", ledger),
        ]
    }


def big(count: int = 10_000) -> dict:
    """One trace of `count` spans: a ternary call tree, a service per level, children inside parents."""
    start = NOW - 3 * 60 * 10**9
    times: dict[int, tuple[int, int, int]] = {1: (start, 5000 * MS, 0)}  # id -> (start, duration, depth)
    by_service: dict[str, list[dict]] = {}
    for i in range(1, count + 1):
        parent = i // 3 if i >= 3 else (None if i == 1 else 1)
        if parent is not None:
            p_start, p_duration, p_depth = times[parent]
            duration = max(p_duration // 4, 1000)
            times[i] = (p_start + (i % 3 + 1) * p_duration // 5, duration, p_depth + 1)
        begin, duration, depth = times[i]
        s = {
            "traceId": G,
            "spanId": f"{i:016x}",
            "name": "GET /big" if i == 1 else f"op-{i % 50}",
            "kind": 2 if i == 1 else 1,
            "startTimeUnixNano": str(begin),
            "endTimeUnixNano": str(begin + duration),
        }
        if parent is not None:
            s["parentSpanId"] = f"{parent:016x}"
        by_service.setdefault(f"big-{depth}", []).append(s)
    return {"resourceSpans": [resource(service, items) for service, items in by_service.items()]}


def all_docs() -> list[dict]:
    return [shop(), extras(), big()]
