"""A trace lookup's optional time hint on every API that takes one: Tempo's `start`/`end` (Unix
seconds, as Grafana sends its time range), Jaeger's `start`/`end` (microseconds, as its search takes
them), the Jaeger gateway's `start_time`/`end_time` (RFC 3339) and the native API's `start`/`end`
(Unix seconds). With a hint the store reads only the spans starting within an hour of it (the hours
and parts it needs); without, the whole trace. Trace A's spans start at a, a+10, a+20, a+30 and a+90 ms (a: ten minutes ago)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import pytest

from tests.conftest import ServerProcess
from tests.shop_data import NOW, A

MS = 10**6
HOUR = 3600 * 10**9
FIRST = NOW - 10 * 60 * 10**9  # trace A's root span starts then


def _rfc3339(ns: int) -> str:
    return datetime.fromtimestamp(ns // 10**9, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ns % 10**9:09d}Z"


def _names(doc: dict) -> list[str]:
    """Span names of an OTLP/JSON document (`resourceSpans` or Tempo's `batches`), in start order."""
    spans = [
        span
        for rs in doc.get("resourceSpans", doc.get("batches", []))
        for ss in rs["scopeSpans"]
        for span in ss["spans"]
    ]
    return [s["name"] for s in sorted(spans, key=lambda s: int(s["startTimeUnixNano"]))]


def _jaeger_names(doc: dict) -> list[str]:
    [trace] = doc["data"]
    return [s["operationName"] for s in sorted(trace["spans"], key=lambda s: s["startTime"])]


# per API: the base URL's attribute, the path, the hint's parameters from bounds in ns (None: left
# out), and the names in the answer
Api = tuple[str, str, Callable[[int | None, int | None], dict[str, str]], Callable[[dict], list[str]]]


def _bounds(
    start: str, end: str, unit: Callable[[int], str]
) -> Callable[[int | None, int | None], dict[str, str]]:
    def params(low: int | None, high: int | None) -> dict[str, str]:
        return {k: unit(v) for k, v in ((start, low), (end, high)) if v is not None}

    return params


def _seconds(ns: int) -> str:
    return f"{ns / 10**9:.6f}"


APIS: dict[str, Api] = {
    "tempo": ("tempo_url", f"/api/traces/{A}", _bounds("start", "end", _seconds), _names),
    "tempo v2": (
        "tempo_url",
        f"/api/v2/traces/{A}",
        _bounds("start", "end", _seconds),
        lambda doc: _names(doc["trace"]),
    ),
    "jaeger": (
        "http_url",
        f"/api/traces/{A}",
        _bounds("start", "end", lambda ns: str(ns // 1000)),
        _jaeger_names,
    ),
    "jaeger v3": (
        "http_url",
        f"/api/v3/traces/{A}",
        _bounds("start_time", "end_time", _rfc3339),
        lambda doc: _names(doc["result"]),
    ),
    "native": ("http_url", f"/api/v1/traces/{A}", _bounds("start", "end", _seconds), _names),
}


@pytest.fixture(params=sorted(APIS))
def api(request: pytest.FixtureRequest, shop_server: ServerProcess) -> tuple[ServerProcess, Api]:
    return shop_server, APIS[request.param]


def _get(server: ServerProcess, api: Api, params: dict[str, str]) -> httpx.Response:
    base, path, _, _ = api
    return httpx.get(f"{getattr(server, base)}{path}", params=params, timeout=30)


def test_a_hint_finds_the_spans_starting_within_an_hour_of_it(api: tuple[ServerProcess, Api]) -> None:
    """The hint says where to look (`HINT_MARGIN_NS`: an hour each side), not where to cut: a trace
    that began just before a dashboard's range stays whole."""
    server, spec = api
    _, _, hint, names = spec
    whole = _get(server, spec, {})
    assert whole.status_code == 200, whole.text
    everything = ["GET /checkout", "HTTP POST", "POST /pay", "db.query", "cache.get"]
    assert names(whole.json()) == everything
    # a range that ends half an hour before the trace began, or starts as it ends: all of it
    assert names(_get(server, spec, hint(FIRST - 2 * HOUR, FIRST - HOUR // 2)).json()) == everything
    assert names(_get(server, spec, hint(FIRST + 90 * MS, None)).json()) == everything
    # at an hour's distance, the spans starting within it: the edges are exact
    assert names(_get(server, spec, hint(FIRST - 2 * HOUR, FIRST - HOUR + 15 * MS)).json()) == [
        "GET /checkout",
        "HTTP POST",
    ]
    assert names(_get(server, spec, hint(FIRST + HOUR + 25 * MS, None)).json()) == ["db.query", "cache.get"]
    # a range more than an hour from the trace: nothing
    assert _get(server, spec, hint(FIRST - 3 * HOUR, FIRST - HOUR - MS)).status_code == 404
    assert _get(server, spec, hint(None, FIRST - HOUR - MS)).status_code == 404
    assert _get(server, spec, hint(FIRST + HOUR + 91 * MS, NOW + HOUR)).status_code == 404


def test_a_hint_that_cannot_be_read_is_refused_with_its_reason(api: tuple[ServerProcess, Api]) -> None:
    server, spec = api
    _, _, hint, _ = spec
    backwards = _get(server, spec, hint(FIRST + 100 * MS, FIRST))
    assert backwards.status_code == 400 and "starts after it ends" in backwards.text
    [start_name, _] = hint(FIRST, FIRST)
    for bad in ("soon", "1e400", "-5"):
        answer = _get(server, spec, {start_name: bad})
        assert answer.status_code == 400 and start_name in answer.text, (bad, answer.text)
