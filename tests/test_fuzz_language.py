"""Fuzz of the query language: whatever text a client sends as `q`, the parser answers a query or a
`QuerySyntaxError` (a 400 with a reason), the store compiles what parses, and a real server answers
below 500 and keeps answering the next query correctly. Cases found are kept as `@example`s.

Text is generated two ways: arbitrary Unicode, and "near-valid" queries from a recursive grammar of
fields, operators, values (strings with good and bad escapes, RE2-hostile regexes, numbers and
durations at and past 64 bits), conditions, spansets, structural operators and pipelines, with junk
spliced in and the limits' worth of repetition."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from clew.core.errors import BadRequest
from clew.core.language import (
    MAX_CONDITIONS,
    MAX_NESTING_DEPTH,
    MAX_QUERY_LENGTH,
    MAX_SPANSETS,
    Query,
    QuerySyntaxError,
    TraceSpans,
    evaluate,
    parse,
)
from clew.core.metrics_query import parse_metrics
from clew.store.search import Searcher, SearchRequest
from tests.conftest import ServerProcess
from tests.shop_data import NOW, A, shop

FUZZ = settings(derandomize=True, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# --- the grammar-shaped strategy --------------------------------------------------------------------

FIELDS = st.sampled_from(
    [
        "name",
        "status",
        "kind",
        "duration",
        "service",
        "statusMessage",
        "span:name",
        "span:duration",
        "span:status",
        "rootServiceName",
        "colour",
        "span.http.status_code",
        "resource.service.name",
        "resource.deployment.environment",
        ".db.system",
        "span.ratio",
        ".user.vip",
        ".n",
        'span."a b"',
        '."we\\"ird\\\\key"',
        '."\\q"',
        '.""',
        "span.",
        "event.x",
    ]
)
OPS = st.sampled_from(["=", "!=", ">", ">=", "<", "<=", "=~", "!~"])
# what goes between double quotes as written: escapes good and bad, and regexes RE2 refuses
STRING_BODIES = st.one_of(
    st.sampled_from(
        [
            "GET /check.*",
            "checkout",
            "(?=a)a",
            "(?!a).*",
            "(?<=a)b",
            "(a)\\\\1",
            "a++",
            "a*+",
            "a{2000}",
            "a{1000}",
            "(a{1000}){2}",
            "[\\\\p{L}\\\\p{N}]{1000}",
            "\\\\Qa",
            "a\\\\E",
            "(",
            ")",
            "[",
            "a)|(b",
            "\\\\",
            "\\q",
            "\\n",
            "\\t",
            '\\"',
            "\\x41",
            "\\xff",
            "\\101",
            "\\8",
            "\\u00e9",
            "\\ud800",
            "\\uDFFF",
            "\\U0001F600",
            "\\U00110000",
            "\\u12",
            "\\x4",
            "a\nb",
            "a\x00b",
            "\\\\pL+",
            "(?i)get.*",
            "(?P<n>x)",
            "\\\\C",
            "\\\\z",
            "\\\\Z",
            "x{,3}",
            "C:\\\\temp\\\\x",
        ]
    ),
    st.text(max_size=12).map(lambda s: s.replace("\\", "\\\\").replace('"', '\\"')),
)
STRINGS = st.one_of(
    STRING_BODIES.map(lambda b: f'"{b}"'),
    st.text(max_size=10).map(lambda s: "`" + s.replace("`", "") + "`"),
)
DURATIONS = st.one_of(
    st.tuples(
        st.one_of(
            st.integers(-(10**25), 10**25).map(str), st.sampled_from(["2562047", "2562048", "0.5", "1.5"])
        ),
        st.sampled_from(["ns", "us", "µs", "ms", "s", "m", "h"]),
    ).map("".join),
    st.sampled_from(["2562048h", "9223372036854775807ns", "9223372036854775808ns", "1." + "0" * 80 + "1s"]),
)
NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["1e999", "-1e999", ".5", "1.", "0.25", "99999999999999999999", "9" * 5000]),
)
KEYWORDS = st.sampled_from(
    ["true", "false", "nil", "ok", "error", "unset", "server", "client", "internal", "foo"]
)
VALUES = st.one_of(STRINGS, DURATIONS, NUMBERS, KEYWORDS)

COMPARISONS = st.one_of(
    st.tuples(FIELDS, OPS, VALUES).map(" ".join),
    # the well-typed ones, so that regexes and escapes reach RE2 and the engine often
    st.tuples(
        st.sampled_from(["name", "service", ".db.system", 'span."a b"', "resource.deployment.environment"]),
        st.sampled_from(["=~", "!~", "=", "!="]),
        STRINGS,
    ).map(" ".join),
)
CONDITIONS = st.recursive(
    COMPARISONS,
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["&&", "||"]), inner).map(" ".join),
        inner.map(lambda c: f"({c})"),
    ),
    max_leaves=6,
)
SPANSET = st.one_of(st.just("{ }"), CONDITIONS.map(lambda c: "{ " + c + " }"))
SPANSETS = st.recursive(
    SPANSET,
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["&&", "||", ">", ">>", "~"]), inner).map(" ".join),
        inner.map(lambda s: f"({s})"),
    ),
    max_leaves=4,
)
AGGREGATES = st.tuples(
    st.one_of(
        st.just("count()"),
        st.tuples(st.sampled_from(["avg", "min", "max", "sum", "count"]), FIELDS).map(
            lambda t: f"{t[0]}({t[1]})"
        ),
        st.sampled_from(["avg()", "count(duration)"]),
    ),
    OPS,
    st.one_of(NUMBERS, DURATIONS, KEYWORDS),
).map(" ".join)
PIPELINES = st.tuples(SPANSETS, st.lists(AGGREGATES, max_size=3)).map(lambda t: " | ".join([t[0], *t[1]]))
# queries at and just past each limit, as repetition
REPEATED = st.one_of(
    st.integers(1, 3 * MAX_NESTING_DEPTH).map(lambda n: "{ " + "(" * n + 'name = "a"' + ")" * n + " }"),
    st.integers(1, 3 * MAX_NESTING_DEPTH).map(lambda n: "(" * n + "{ }" + ")" * n),
    st.integers(1, 3 * MAX_CONDITIONS).map(
        lambda n: "{ " + " && ".join(f".a{i} = {i}" for i in range(n)) + " }"
    ),
    st.integers(1, 3 * MAX_SPANSETS).map(lambda n: " && ".join(["{ }"] * n)),
    st.integers(1, 3 * MAX_SPANSETS).map(lambda n: " >> ".join(["{ }"] * n)),
    st.integers(1, 40).map(lambda n: "{ }" + " | count() > 0" * n),
    st.integers(MAX_QUERY_LENGTH - 20, MAX_QUERY_LENGTH + 20).map(
        lambda n: '{ name = "' + "x" * (n - 14) + '" }'
    ),
)
JUNK = st.one_of(
    st.sampled_from(
        [
            "{",
            "}",
            "(",
            ")",
            '"',
            "`",
            "\\",
            "&&",
            "||",
            "|",
            ">",
            "~",
            "=~",
            ".",
            "\x00",
            "\n",
            "\t",
            " ",
            "🙂",
        ]
    ),
    st.text(max_size=3),
)


@st.composite
def spliced(draw: st.DrawFn, base: st.SearchStrategy[str]) -> str:
    """A generated query with some junk inserted or a piece cut out."""
    text = draw(base)
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(text)))
        if draw(st.booleans()):
            text = text[:at] + draw(JUNK) + text[at:]
        else:
            text = text[:at] + text[at + draw(st.integers(1, 4)) :]
    return text


NEAR_VALID = st.one_of(PIPELINES, spliced(PIPELINES), REPEATED, spliced(REPEATED))

# --- the parser and the compiler ----------------------------------------------------------------


class _NoCandidates:
    """A `Connection` that records the SQL it is given and finds no trace."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    def query(self, sql: str, params: dict[str, object] | None = None) -> pa.Table:
        self.statements.append(sql)
        return pa.table({"trace_id": pa.array([], pa.binary())})


def _sql_depth(sql: str) -> int:
    depth = deepest = 0
    for ch in sql:
        depth += (ch == "(") - (ch == ")")
        deepest = max(deepest, depth)
    return deepest


def parses_or_refuses(text: str) -> Query | None:
    """The property: a query, or a `BadRequest` with a reason and a position inside the text; a query
    compiles to SQL within the engine's limits and evaluates on a trace."""
    try:
        query = parse(text)
    except BadRequest as exc:
        assert exc.message
        if isinstance(exc, QuerySyntaxError) and exc.position is not None:
            assert 1 <= exc.position <= len(text) + 1, (exc.position, exc.message)
        return None
    conn = _NoCandidates()
    searcher = Searcher(conn, "clew", SearchRequest(query, 0, 1))
    searcher.run()
    for sql in conn.statements:
        assert len(sql) < 262_144  # the engine's max_query_size
        assert _sql_depth(sql) < 100  # far from max_parser_depth (1000), ~3 levels per parenthesis
    # four spans: a root, its child, and two grandchildren (siblings); every filter flags some
    spans = TraceSpans(
        span_ids=[b"1", b"2", b"3", b"4"],
        parents=[b"", b"1", b"2", b"2"],
        flags=[[(j + f) % (1 + f % 3) == 0 for j in range(4)] for f in range(len(query.filters))],
        values=[[float(j) for j in range(4)] for _ in query.pipeline],
    )
    evaluate(query, spans)
    return query


@settings(FUZZ, max_examples=600)
@given(st.text(max_size=80))
@example("\x00")
@example('{ name = "\ud800" }')  # a lone surrogate: only Python can hold it, unencodable downstream
def test_arbitrary_text_parses_or_is_refused_with_a_reason(text: str) -> None:
    parses_or_refuses(text)


@settings(FUZZ, max_examples=1500)
@given(NEAR_VALID)
@example('{ .user =~ "(?=a)a" }')  # RE2 has no lookaround: passed Python's re, 500 in the engine
@example('{ name =~ "\\\\Qa" }')  # valid alone, broken by the anchoring ^(?:...)$
@example("{ " + "(" * 500 + 'name = "a"' + ")" * 500 + " }")  # RecursionError
@example("{ " + " && ".join(f".a{i} = {i}" for i in range(1000)) + " }")  # hung the engine's parser
@example(" && ".join(["{ }"] * 1000))  # RecursionError
@example("{ duration > 2562048h }")  # overflowed int64 nanoseconds
@example("{ " + " && ".join(f".a{i} = {i}" for i in range(45)) + " }")  # array lookups: SQL over 256 kB
@example("{ " + " && ".join(f".a{i} > {i}" for i in range(12)) + ' } >> { .b =~ "x" }')
@example("{ .n = " + "9" * 5000 + " }")  # int() refuses more than 4300 digits
@example('{ .x = "\\ud800" }')  # a lone surrogate, unencodable downstream
@example("{ } | count() > 1e999")
@example("{ } | avg(event.x) = 0")  # event attributes are lists: no aggregate reads them
def test_near_valid_queries_parse_or_are_refused_with_a_reason(text: str) -> None:
    parses_or_refuses(text)


# --- through a real server ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(Path(tmp_path_factory.mktemp("fuzz-language")) / "data").start()
    try:
        posted = httpx.post(f"{server.otlp_http_url}/v1/traces", json=shop(), timeout=30)
        assert posted.status_code == 200, posted.text
        yield server
    finally:
        server.stop()


WINDOW = {"start": (NOW - 4 * 3600 * 10**9) / 10**9, "end": (NOW + 3600 * 10**9) / 10**9}


def _search(server: ServerProcess, q: str) -> httpx.Response:
    return httpx.get(f"{server.http_url}/api/v1/search", params={"q": q, **WINDOW}, timeout=60)


@settings(FUZZ, max_examples=60)
@given(st.one_of(NEAR_VALID, NEAR_VALID, st.text(max_size=40)))
@example('{ name =~ "(?=a)a" }')
@example('{ name =~ "a{2000}" }')
@example("{ " + " && ".join(f".a{i} = {i}" for i in range(1000)) + " }")
@example('{ name =~ "a\nb" || name =~ "a\\x00b" }')
def test_a_server_answers_any_query_below_500_and_the_next_query_correctly(
    fuzz_server: ServerProcess, q: str
) -> None:
    response = _search(fuzz_server, q)
    assert response.status_code < 500, (q, response.status_code, response.text)
    if response.status_code >= 400:
        assert response.json()["error"], response.text
    # a failing query must never break the next query
    known = _search(fuzz_server, "{ status = error }")
    assert known.status_code == 200, known.text
    assert [t["traceID"] for t in known.json()["traces"]] == [A]


# --- TraceQL metrics ------------------------------------------------------------------------------

METRICS_TAILS = st.sampled_from(
    ["rate()", "count_over_time()", "quantile_over_time(duration, .5, .99)", "histogram_over_time(span.ratio)",
     "avg_over_time(.n) by (name, resource.service.name)", "rate() by (status) | topk(2)", "sum_over_time(",
     "rate() by ()", "max_over_time(duration, 1)", "quantile_over_time(duration, 9)", "min_over_time(name)",
     "count_over_time() by (" + ", ".join(f".a{i}" for i in range(8)) + ")", "rate() | bottomk(99999)",
     "compare({ status = error })", "compare({ duration > 1s }, 3)", "compare({ .a = \")\" }, 1, 2, 3)",
     "compare(", "compare({ } >> { })", "compare({ }, 99999999999999999999)"]
)  # fmt: skip
JUNK = st.sampled_from(["", " ", ")", " | topk(0)", " by (x)", " |", '"', "`", " | rate()"])
METRICS = st.builds(lambda q, tail, junk: f"{q} | {tail}{junk}", NEAR_VALID, METRICS_TAILS, JUNK)


@settings(FUZZ, max_examples=400)
@given(st.one_of(METRICS, st.text(max_size=60)))
@example('{ .a = "| rate()" } | rate()')  # a pipe inside a string is not the metrics stage
def test_metrics_queries_parse_or_are_refused_with_a_reason(text: str) -> None:
    try:
        query = parse_metrics(text)
    except QuerySyntaxError as exc:
        assert exc.message
        return
    assert query.function in text


@settings(FUZZ, max_examples=40)
@given(st.one_of(METRICS, st.text(max_size=40)))
def test_a_server_answers_any_metrics_query_below_500(fuzz_server: ServerProcess, text: str) -> None:
    params = {"q": text, **WINDOW, "step": "600s"}
    response = httpx.get(f"{fuzz_server.tempo_url}/api/metrics/query_range", params=params, timeout=60)
    assert response.status_code < 500, (text, response.text[:300])
    assert response.status_code == 200 or response.text.strip()
