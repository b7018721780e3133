"""Read endpoints fuzzed by route through a real server, beside tests/test_fuzz_endpoints.py: the
parameter names each route reads (Jaeger v3 `query.*`, Tempo's, the release comparison's), values
shaped for each (Go durations, RFC 3339 times at the edges of 64-bit nanoseconds, numbers of hundreds
of digits, JSON with escaped surrogates or deep nesting, logfmt), repeated parameters and odd path
segments. A longer randomized run of these found eight ways to a 5xx (session 24; the cases are
`@example`s of tests/test_fuzz_endpoints.py and tests/test_jaeger_api.py); here derandomized, so CI
runs the same cases. Never a 5xx, a 4xx says why, and a stored trace reads
back the same after every case."""

from __future__ import annotations

import json
from urllib.parse import quote, urlencode

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ServerProcess
from tests.shop_data import A
from tests.test_fuzz_endpoints import (
    NASTY,
    PARAMETERS,
    PATHS,
    assert_answered,
    assert_store_unchanged,
)

SETTINGS = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

EXTRA_NAMES = [
    "query", "scope", "span_kind", "attribute", "baseline", "candidate", "slowerThanMs",
    "query.service_name", "query.serviceName", "query.start_time_min", "query.startTimeMin",
    "query.start_time_max", "query.startTimeMax", "query.duration_min", "query.durationMin",
    "query.duration_max", "query.num_traces", "query.search_depth", "query.operation_name",
    "query.span_name", "query.attributes", "query.attributes[http.status_code]", "query.attributes[]",
    "query.raw_traces",
]  # fmt: skip
NAMES = st.sampled_from(PARAMETERS + EXTRA_NAMES)

DIGITS = st.one_of(st.integers(1, 40), st.integers(300, 5000)).map(lambda n: "9" * n)
LONG_NUMBERS = st.one_of(
    DIGITS,
    st.tuples(DIGITS, st.sampled_from(["", "s", "ms", "h", "ns", "us", "m", "µs", "d"])).map("".join),
    st.tuples(st.sampled_from(["0.", "1.", "-", "-0.", ".", "+"]), DIGITS).map("".join),
    st.sampled_from(["1e308", "1e309", "-1e309", "4.9e-324", "1_000", "١٢", "0x1p3", "+5", " 5 ", "5s5",
                     "1.5h30m", "1h1h1h", "0s", "-5s", "1.s", ".5s", "9223372036854775807",
                     "9223372036854775808", "18446744073709551616", "-9223372036854775809"]),
)  # fmt: skip
YEARS = st.sampled_from(["0000", "0001", "1969", "1970", "2262", "2263", "9999"])
RFC3339 = st.builds(
    lambda y, mo, d, h, frac, tz: f"{y}-{mo}-{d}T{h}:00:00{frac}{tz}",
    YEARS,
    st.sampled_from(["01", "12", "13", "00", "02"]),
    st.sampled_from(["01", "31", "29", "00", "30"]),
    st.sampled_from(["00", "23", "24", "99"]),
    st.sampled_from(["", ".5", ".123456789", ".1234567890", "." + "9" * 9]),
    st.sampled_from(["Z", "z", "+00:00", "-23:59", "+24:00", "+99:99", "-00:00", "+14:00"]),
)
SURROGATES = ["\\ud800", "\\udfff", "\\ud83d\\ude00", "\\ud83d", "\\u0000", "\\ufffe", "\\\\ud800"]


def _json_value(draw: st.DrawFn) -> str:
    key = draw(
        st.one_of(st.sampled_from(SURROGATES + ["a", "", "resource.x", "span.y"]), st.text(max_size=5))
    )
    value = draw(
        st.one_of(
            st.sampled_from([f'"{s}"' for s in SURROGATES]),
            st.sampled_from(["1e999", "NaN", "-Infinity", "9" * 5000, "[]", "{}", "null", "true", '"x"',
                             "[" * 70 + "]" * 70, '{"a":' * 40 + "1" + "}" * 40]),
            st.text(max_size=5).map(json.dumps),
        )
    )  # fmt: skip
    k = key if key.startswith("\\") else json.dumps(key)[1:-1]
    return draw(st.sampled_from(['{"%s": %s}', "[%s, %s]", '{"%s": %s, "b": 1}'])) % (k, value)


JSON_VALUES = st.composite(_json_value)()
LOGFMT = st.builds(
    lambda k, v: f"{k}={v}",
    st.sampled_from(["name", "service.name", "span.x", ".a", "a b", '"k"', "\\", "", "status"]),
    st.one_of(
        st.sampled_from([f'"{s}"' for s in SURROGATES] + ['"', '"a\\"', "a=b", "1e999"]), st.text(max_size=8)
    ),
)
DEEP = st.builds(
    lambda n, o, tail: o * n + tail,
    st.integers(500, 3000),
    st.sampled_from(["[", '{"a":', '[{"a":']),
    st.sampled_from(["", "1", "]"]),
)
MANY = st.builds(
    lambda n, form: form(n),
    st.integers(50, 400),
    st.sampled_from(
        [
            lambda n: json.dumps({f"k{i}": "v" for i in range(n)}),
            lambda n: " ".join(f"k{i}=v" for i in range(n)),
        ]
    ),
)
VALUES = st.one_of(
    NASTY,
    LONG_NUMBERS,
    DEEP,
    MANY,
    RFC3339,
    JSON_VALUES,
    LOGFMT,
    st.text(max_size=40),
    st.integers().map(str),
)

V3_BASE = [
    ("query.service_name", "frontend"),
    ("query.start_time_min", "2020-01-01T00:00:00Z"),
    ("query.start_time_max", "2100-01-01T00:00:00Z"),
]


def _send(server: ServerProcess, path: str, pairs: list[tuple[str, str]], seg: dict[str, str]) -> None:
    concrete = path.replace("{trace_id}", seg.get("trace", A)).replace(
        "{service}", seg.get("service", "frontend")
    )
    concrete = concrete.replace("{which:str}", seg.get("which", "calls")).replace(
        "{tag}", seg.get("tag", "name")
    )
    concrete = concrete.replace("{span_id}", seg.get("span", "0" * 16))
    base = server.http_url
    if concrete.startswith("tempo:"):
        base, concrete = server.tempo_url, concrete.removeprefix("tempo:")
    url = base + concrete + ("?" + urlencode(pairs) if pairs else "")
    try:
        response = httpx.get(url, timeout=60)
    except (httpx.InvalidURL, UnicodeEncodeError):
        return
    assert_answered(server, base, response, url)


@SETTINGS
@given(
    path=st.sampled_from(PATHS + ["/api/v3/traces", "/api/v3/trace-summaries"] * 4),
    pairs=st.lists(st.tuples(NAMES, VALUES), max_size=5),
    with_v3_base=st.booleans(),
)
def test_more_names_and_values_get_no_server_error(
    fuzzed, path: str, pairs: list, with_v3_base: bool
) -> None:
    server, trace, found = fuzzed
    if with_v3_base:
        names = {n for n, _ in pairs}
        pairs = [p for p in V3_BASE if p[0] not in names] + pairs
    _send(server, path, pairs, {})
    assert_store_unchanged(server, trace, found)


SEGMENTS = st.one_of(
    NASTY, st.text(max_size=30), st.binary(max_size=20).map(bytes.hex), LONG_NUMBERS,
    st.sampled_from(["..", ".", "%2e%2e", "a/b", "%00", "0" * 32, "0" * 33, "f" * 64, "-1", "+1", "0x1"]),
)  # fmt: skip


@SETTINGS
@given(
    path=st.sampled_from([p for p in PATHS if "{" in p] + ["/api/v1/traces/{trace_id}/spans/{span_id}"]),
    seg=st.fixed_dictionaries(
        {}, optional={k: SEGMENTS for k in ("trace", "service", "tag", "which", "span")}
    ),
    pairs=st.lists(st.tuples(NAMES, VALUES), max_size=2),
)
def test_path_segments_get_no_server_error(fuzzed, path: str, seg: dict, pairs: list) -> None:
    server, _, _ = fuzzed
    seg = {k: quote(v, safe="") for k, v in seg.items()}
    _send(server, path, pairs, seg)


# --- per route: the names each route reads, values shaped for each name ------------------------------

V3 = [
    "query.service_name",
    "query.start_time_min",
    "query.start_time_max",
    "query.duration_min",
    "query.duration_max",
    "query.num_traces",
    "query.search_depth",
    "query.operation_name",
    "query.attributes",
    "query.attributes[k]",
    "query.attributes[http.status_code]",
]
WINDOW = ["start", "end"]
ROUTE_NAMES = {
    "/api/v3/traces": V3, "/api/v3/trace-summaries": V3,
    "tempo:/api/search": ["q", "tags", "limit", "spss", "minDuration", "maxDuration", *WINDOW],
    "tempo:/api/metrics/query_range": ["q", "query", "step", *WINDOW],
    "tempo:/api/metrics/query": ["q", "query", "step", *WINDOW],
    "/api/v1/metrics/query_range": ["q", "query", "step", *WINDOW],
    "/api/traces": ["service", "operation", "tags", "tag", "lookback", "limit", "minDuration", "maxDuration",
                    "traceID", *WINDOW],
    "/api/dependencies": ["endTs", "lookback"],
    "/api/metrics/{which:str}": ["service", "endTs", "lookback", "step", "quantile", "groupByOperation",
                                 "spanKind"],
    "/api/v1/compare/releases": ["service", "attribute", "baseline", "candidate", "operation", *WINDOW],
    "/api/v1/compare/attributes": ["service", "slowerThanMs", *WINDOW],
    "/api/v1/logs": ["q", "limit", *WINDOW], "/api/v1/logs/volume": ["q", "step", *WINDOW],
    "tempo:/api/v2/search/tag/{tag}/values": ["q", "scope", *WINDOW],
    "tempo:/api/search/tag/{tag}/values": ["q", *WINDOW],
    "tempo:/api/v2/search/tags": ["scope", *WINDOW],
    "/api/v1/search": ["q", "limit", "spss", *WINDOW],
    "/api/v1/traces/{trace_id}/linked-from": WINDOW,
    # trace by id with its time hint, on each API
    "/api/v1/traces/{trace_id}": WINDOW, "/api/traces/{trace_id}": WINDOW,
    "/api/v3/traces/{trace_id}": ["start_time", "end_time"],
    "tempo:/api/traces/{trace_id}": WINDOW, "tempo:/api/v2/traces/{trace_id}": WINDOW,
    "/api/operations": ["service", "spanKind"], "/api/v3/operations": ["service", "spanKind", "span_kind"],
    "/api/v1/servicegraph": WINDOW, "/api/v1/completeness": WINDOW,
}  # fmt: skip
REQUIRED = {
    "/api/v3/traces": V3_BASE, "/api/v3/trace-summaries": V3_BASE,
    "/api/traces": [("service", "frontend")], "/api/metrics/{which:str}": [("service", "frontend")],
    "/api/v1/compare/releases": [("service", "frontend")], "/api/v1/compare/attributes": [("service", "frontend")],
    "/api/v1/search": [("q", "{ }")], "tempo:/api/metrics/query_range": [("q", "{ } | rate()")],
    "/api/v1/metrics/query_range": [("q", "{ } | rate()")], "tempo:/api/metrics/query": [("q", "{ } | rate()")],
    "/api/operations": [("service", "frontend")], "/api/v3/operations": [("service", "frontend")],
}  # fmt: skip
GO_DURATIONS = st.lists(
    st.tuples(
        st.one_of(LONG_NUMBERS, st.integers(0, 10**6).map(str)),
        st.sampled_from(["ns", "us", "µs", "μs", "ms", "s", "m", "h", ""]),
    ).map("".join),
    min_size=1,
    max_size=3,
).map("".join)
BY_NAME = {
    "duration": st.one_of(GO_DURATIONS, LONG_NUMBERS),
    "time": st.one_of(RFC3339, LONG_NUMBERS),
    "json": JSON_VALUES,
    "logfmt": st.lists(LOGFMT, min_size=1, max_size=3).map(" ".join),
}


def _kind(name: str) -> str | None:
    if "duration" in name.lower() or name in ("lookback", "step"):
        return "duration"
    if "time" in name or name in ("start", "end", "endTs"):
        return "time"
    if name in ("query.attributes",) or name == "tags":
        return "json"
    return None


@st.composite
def route_requests(draw: st.DrawFn) -> tuple[str, list[tuple[str, str]]]:
    path = draw(st.sampled_from(sorted(ROUTE_NAMES)))
    names = ROUTE_NAMES[path]
    pairs = []
    for _ in range(draw(st.integers(1, 4))):
        name = draw(st.sampled_from(names))
        kind = _kind(name)
        if path == "tempo:/api/search" and name == "tags":
            kind = "logfmt"
        strategy = st.one_of(BY_NAME[kind], VALUES) if kind else VALUES
        pairs.append((name, draw(strategy)))
    given_names = {n for n, _ in pairs}
    base = [p for p in REQUIRED.get(path, []) if p[0] not in given_names]
    return path, base + pairs


@SETTINGS
@given(request=route_requests())
def test_route_shaped_parameters_get_no_server_error(fuzzed, request) -> None:
    server, trace, found = fuzzed
    path, pairs = request
    _send(server, path, pairs, {})
    assert_store_unchanged(server, trace, found)
