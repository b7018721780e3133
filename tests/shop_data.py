"""A small shop of known traces for query tests: structure, attributes and times chosen by hand."""

from __future__ import annotations

import time

MS = 10**6
NOW = time.time_ns()
A, B, C, D = "a" * 32, "b" * 32, "c" * 32, "d" * 32


def attr(key: str, value: object) -> dict:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    return {"key": key, "value": {"stringValue": value}}


def span(
    trace: str,
    span_id: str,
    parent: str | None,
    name: str,
    kind: int,
    start: int,
    duration_ms: float,
    attrs: dict | None = None,
    error: str | None = None,
) -> dict:
    out = {
        "traceId": trace,
        "spanId": span_id * 16 if len(span_id) == 1 else span_id,
        "name": name,
        "kind": kind,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(start + int(duration_ms * MS)),
        "attributes": [attr(k, v) for k, v in (attrs or {}).items()],
    }
    if parent:
        out["parentSpanId"] = parent * 16
    if error:
        out["status"] = {"code": 2, "message": error}
    return out


def resource(service: str, spans: list[dict], **attrs: object) -> dict:
    return {
        "resource": {"attributes": [attr("service.name", service), *(attr(k, v) for k, v in attrs.items())]},
        "scopeSpans": [{"scope": {"name": "shop"}, "spans": spans}],
    }


def shop() -> dict:
    """Four traces: A a failed checkout (5 spans), B a quick page, C a slow checkout, D three hours old."""
    a, b, c, d = (NOW - m * 60 * 10**9 for m in (10, 20, 5, 180))
    frontend = [
        span(A, "1", None, "GET /checkout", 2, a, 300),
        span(A, "2", "1", "HTTP POST", 3, a + 10 * MS, 250),
        span(B, "3", None, "GET /home", 2, b, 20, {"ratio": 0.5}),
        span(B, "4", "3", "render", 1, b + 5 * MS, 10, {"user.vip": True}),
        span(C, "5", None, "GET /checkout", 2, c, 1200),
        span(D, "6", None, "GET /old", 2, d, 30),
    ]
    checkout = [
        span(A, "7", "2", "POST /pay", 2, a + 20 * MS, 240, {"http.status_code": 500}, "card declined"),
        span(A, "8", "7", "db.query", 3, a + 30 * MS, 50, {"db.system": "postgres"}),
        span(A, "9", "7", "cache.get", 3, a + 90 * MS, 5),
    ]
    checkout_prod = [span(C, "e", "5", "POST /pay", 2, c + 10 * MS, 1100, {"http.status_code": 200})]
    return {
        "resourceSpans": [
            resource("frontend", frontend),
            resource("checkout", checkout),
            resource("checkout", checkout_prod, **{"deployment.environment": "prod"}),
        ]
    }
