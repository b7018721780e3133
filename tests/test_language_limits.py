"""The query language's bounds: RE2's rules for regexes, the limits on size and depth, 64-bit numbers
and durations, and string escapes; each in the parser and through `GET /api/v1/search` on a real
server, where bad input is a 400 with the reason and the position, never a 5xx."""

from __future__ import annotations

import httpx
import pytest

from clew.core.language import (
    INT64_MAX,
    MAX_CONDITIONS,
    MAX_NESTING_DEPTH,
    MAX_PIPELINE_STAGES,
    MAX_QUERY_LENGTH,
    MAX_SPANSETS,
    BoolOp,
    Comparison,
    Condition,
    QuerySyntaxError,
    SpansetFilter,
    parse,
    parse_duration_literal,
)
from tests.conftest import ServerProcess
from tests.shop_data import NOW, A, C, resource, span

WINDOW = {"start": (NOW - 4 * 3600 * 10**9) / 10**9, "end": (NOW + 3600 * 10**9) / 10**9}


def search(server: ServerProcess, q: str) -> httpx.Response:
    return httpx.get(f"{server.http_url}/api/v1/search", params={"q": q, **WINDOW}, timeout=60)


def found(server: ServerProcess, q: str) -> list[str]:
    response = search(server, q)
    assert response.status_code == 200, response.text
    return [t["traceID"] for t in response.json()["traces"]]


def refused(q: str) -> QuerySyntaxError:
    with pytest.raises(QuerySyntaxError) as info:
        parse(q)
    return info.value


def value_of(q: str) -> object:
    query = parse(q)
    assert isinstance(query.spansets, SpansetFilter)
    cond = query.spansets.condition
    assert isinstance(cond, Comparison)
    return cond.value.value


# --- regexes: RE2's rules ---------------------------------------------------------------------------

RE2_REFUSES = [
    "(?=a)a",  # lookahead
    "(?!a)b",
    "(?<=a)b",  # lookbehind
    "(a)\\\\1",  # backreference (written \\1 in a double-quoted string)
    "a++",  # possessive
    "(?>a)",  # atomic group
    "a{2000}",  # over RE2's repetition limit of 1000
    "(a{1000}){2}",
    "[\\\\p{L}\\\\p{N}]{1000}",  # compiles past RE2's memory budget
    "\\\\Z",
    "\\\\Qa",  # fine alone, but it would quote the `)$` the engine anchors it with
    "(",
    "a)|(b",
]


@pytest.mark.parametrize("pattern", RE2_REFUSES)
def test_regexes_follow_re2_and_name_the_position_of_the_string(pattern: str) -> None:
    error = refused(f'{{ .user =~ "{pattern}" }}')
    assert "invalid regular expression" in error.message and "RE2" in error.message
    assert error.position == 12  # where the string starts
    assert "(column 12)" in error.message


@pytest.mark.parametrize(
    "pattern", ["a\nb", "a\x00b", "a\\nb", "a\\x00b", "(?i)get.*", "\\\\pL+", "a{1000}", "(?P<n>x)"]
)
def test_what_re2_takes_parses(pattern: str) -> None:
    assert parse(f'{{ name =~ "{pattern}" }}').filters


def test_the_engine_would_have_failed_on_what_pythons_re_accepted(shop_server: ServerProcess) -> None:
    """`name` exists on every span, so the engine compiles the pattern: it was a 5xx."""
    for pattern in ("(?=G)GET.*", "(G)\\\\1", "GET.*+", "a{2000}"):
        response = search(shop_server, f'{{ name =~ "{pattern}" }}')
        assert response.status_code == 400, response.text
        body = response.json()
        assert "invalid regular expression" in body["error"], body
        assert body["position"] == 11, body
    assert found(shop_server, "{ status = error }") == [A]


def test_newlines_and_nul_in_regexes_work(server: ServerProcess) -> None:
    post(server, [span_with(E, "1", {"multi": "a\nb", "nul": "a\x00b"})])
    assert found(server, '{ .multi =~ "a\\nb" }') == [E]  # the escape
    assert found(server, '{ .multi =~ "a\nb" }') == [E]  # a newline as such
    assert found(server, '{ .multi =~ "a.b" }') == [E]  # the engine's `.` matches a newline too
    assert found(server, '{ .multi =~ "(?-s)a.b" }') == []
    assert found(server, '{ .nul =~ "a\\x00b" }') == [E]
    assert found(server, '{ .nul =~ "a\x00b" }') == [E]
    assert found(server, '{ .nul = "a\\000b" }') == [E]


# --- size and depth ---------------------------------------------------------------------------------


def test_deep_or_long_input_is_refused_naming_the_limit_before_anything_recurses() -> None:
    error = refused("{ " + "(" * 500 + 'name = "a"' + ")" * 500 + " }")
    assert "MAX_NESTING_DEPTH" in error.message and str(MAX_NESTING_DEPTH) in error.message
    assert error.position == 3 + MAX_NESTING_DEPTH - 1  # the first `(` past the limit
    error = refused("{ " + " && ".join(f".a{i} = {i}" for i in range(1000)) + " }")
    assert "MAX_CONDITIONS" in error.message and str(MAX_CONDITIONS) in error.message
    assert error.position == 3 + len(" && ".join(f".a{i} = {i}" for i in range(MAX_CONDITIONS))) + 4
    error = refused(" && ".join(["{ }"] * 1000))
    assert "MAX_SPANSETS" in error.message and error.position == 7 * MAX_SPANSETS + 1
    error = refused("{ }" + " | count() > 0" * 1000)
    assert "MAX_PIPELINE_STAGES" in error.message
    error = refused('{ name = "' + "x" * MAX_QUERY_LENGTH + '" }')
    assert "MAX_QUERY_LENGTH" in error.message and error.position == MAX_QUERY_LENGTH + 1


@pytest.mark.parametrize(
    ("make", "limit"),
    [
        (lambda n: "{ " + "(" * (n - 1) + 'name = "a"' + ")" * (n - 1) + " }", MAX_NESTING_DEPTH),
        (lambda n: "(" * (n - 1) + "{ }" + ")" * (n - 1), MAX_NESTING_DEPTH),
        (lambda n: "{ " + " || ".join(f".a{i} = {i}" for i in range(n)) + " }", MAX_CONDITIONS),
        (lambda n: " >> ".join(["{ }"] * n), MAX_SPANSETS),
        (lambda n: "{ }" + " | count() > 0" * n, MAX_PIPELINE_STAGES),
        (lambda n: '{ name = "' + "x" * (n - 13) + '" }', MAX_QUERY_LENGTH),
    ],
)
def test_each_limit_takes_its_number_and_refuses_one_more(make, limit: int) -> None:
    parse(make(limit))
    assert "MAX_" in refused(make(limit + 1)).message


def test_nesting_in_strings_does_not_count() -> None:
    parse('{ name = "' + "((((" * 100 + '" && .x = `{{{{' + "{" * 100 + "` }")


def _depth(cond: Condition | None) -> int:
    return 1 + max(_depth(cond.left), _depth(cond.right)) if isinstance(cond, BoolOp) else 0


def test_chains_of_and_or_become_balanced_trees() -> None:
    query = parse("{ " + " && ".join(f".a{i} = {i}" for i in range(MAX_CONDITIONS)) + " }")
    assert isinstance(query.spansets, SpansetFilter)
    assert _depth(query.spansets.condition) == 7  # log2(128)


def largest_query() -> str:
    """Every limit at once: 32 spansets combined with every operator and nested 32 deep (30
    parentheses, a brace, the filters' own parentheses), 128
    conditions of the kinds with the most SQL (an attribute of either scope compared with a number:
    four typed lookups; `!= nil`: ten), 16 pipeline stages; it matches trace A of the shop (each
    filter holds on every span through `duration >= 0ns`)."""
    filters = []
    for s in range(MAX_SPANSETS):
        k = 4 * s
        filters.append(f'{{ (.k{k} = {k} && .k{k + 1} != nil) || .k{k + 2} =~ "x{k}.*" || duration >= 0ns }}')
    ops = ["||", ">>", "&&", ">", "~"]  # an order that keeps spans of trace A at every step
    expr = filters[0]
    for i, f in enumerate(filters[1:]):
        expr = f"{expr} {ops[i % len(ops)]} {f}"
        if i < MAX_NESTING_DEPTH - 2:
            expr = f"({expr})"
    stages = ["count() > 0", "avg(duration) >= 0", "min(duration) >= 0ns", "sum(duration) > 0"]
    return " | ".join([expr, *(stages[i % 4] for i in range(MAX_PIPELINE_STAGES))])


def _nesting(text: str) -> int:
    depth = deepest = 0
    for ch in text:
        depth += (ch in "({") - (ch in ")}")
        deepest = max(deepest, depth)
    return deepest


def _comparisons(cond: Condition | None) -> int:
    if isinstance(cond, BoolOp):
        return _comparisons(cond.left) + _comparisons(cond.right)
    return int(cond is not None)


def test_the_largest_accepted_query_is_at_every_limit() -> None:
    text = largest_query()
    query = parse(text)
    assert len(query.filters) == MAX_SPANSETS and len(query.pipeline) == MAX_PIPELINE_STAGES
    assert sum(_comparisons(f.condition) for f in query.filters) == MAX_CONDITIONS
    assert _nesting(text) == MAX_NESTING_DEPTH
    assert "MAX_" in refused("(" + text.replace(" |", ") |", 1)).message  # one more level


def test_the_largest_accepted_query_runs_and_past_the_limits_is_400(shop_server: ServerProcess) -> None:
    """The SQL of the largest query stays inside the engine's parser depth and AST limits."""
    response = search(shop_server, largest_query())
    assert response.status_code == 200, response.text
    assert A in [t["traceID"] for t in response.json()["traces"]]
    assert response.json()["metrics"]["inspectedTraces"] > 0
    prefix, suffix = '{ name =~ "GET /checkout', '" }'
    pad = MAX_QUERY_LENGTH - len(prefix) - len(suffix)
    longest = prefix + ("|GET /x" * pad)[:pad] + suffix
    assert len(longest) == MAX_QUERY_LENGTH
    assert found(shop_server, longest) == [C, A]
    for q, limit in [
        ("{ " + "(" * 500 + 'name = "a"' + ")" * 500 + " }", "MAX_NESTING_DEPTH"),
        ("{ " + " && ".join(f".a{i} = {i}" for i in range(1000)) + " }", "MAX_CONDITIONS"),
        (" && ".join(["{ }"] * 1000), "MAX_SPANSETS"),
        ("{ }" + " | count() > 0" * 1000, "MAX_PIPELINE_STAGES"),
        ('{ name = "' + "x" * MAX_QUERY_LENGTH + '" }', "MAX_QUERY_LENGTH"),
    ]:
        response = search(shop_server, q)
        assert response.status_code == 400, response.text
        assert limit in response.json()["error"] and response.json()["position"] >= 1
    assert found(shop_server, "{ status = error }") == [A]  # and the next query is answered


# --- numbers and durations --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("q", "fragment", "position"),
    [
        ("{ duration > 2562048h }", "durations are 64-bit nanoseconds, at most 2562047h", 14),
        ("{ duration > 9223372036854775808ns }", "out of range", 14),
        ("{ .n = 99999999999999999999 }", "integers are 64-bit, from -9223372036854775808", 8),
        ("{ .n = -9223372036854775809 }", "out of range", 8),
        ("{ .n = " + "9" * 5000 + " }", "out of range", 8),  # int() refuses over 4300 digits
        ("{ .n > 1e999 }", "out of range of 64-bit floating point", 8),
        ("{ } | count() > 1e999", "out of range", 17),
        ("{ .n > 2562048h }", "out of range", 8),
    ],
)
def test_numbers_past_64_bits_are_refused(q: str, fragment: str, position: int) -> None:
    error = refused(q)
    assert fragment in error.message and error.position == position


def test_durations_are_exact() -> None:
    assert parse_duration_literal("2562047h") == 2562047 * 3600 * 10**9
    assert parse_duration_literal("9223372036854775807ns") == INT64_MAX
    assert parse_duration_literal("1.000000001s") == 1_000_000_001
    assert parse_duration_literal("0.1ms") == 100_000
    assert parse_duration_literal("1.5ns") == 2 and parse_duration_literal("2.5ns") == 2  # half to even
    assert parse_duration_literal("9007199254740993ns") == 9007199254740993  # past a float's 53 bits
    assert value_of("{ .n = -9223372036854775808 }") == -(2**63)
    assert value_of("{ .n = 0009 }") == 9


BIG = 9223372036854775807


def test_numbers_at_the_edges_compare_right(server: ServerProcess) -> None:
    post(server, [span_with(E, "1", {"n": BIG}), span_with(F, "2", {"n": -BIG - 1})])
    assert found(server, f"{{ .n = {BIG} }}") == [E]
    assert found(server, f"{{ .n > {BIG - 1} }}") == [E]
    assert found(server, f"{{ .n = {-BIG - 1} }}") == [F]
    assert found(server, "{ .n > 0 }") == [E]
    assert found(server, "{ duration < 2562047h }") == [E, F]
    assert found(server, "{ duration > 2562047h }") == []  # the longest duration there is
    # 2562048h wrapped around int64 and matched every span; an integer past int64 reached the engine
    for q in ("{ .n = 99999999999999999999 }", "{ duration > 2562048h }"):
        response = search(server, q)
        assert response.status_code == 400 and "out of range" in response.json()["error"], response.text


# --- string escapes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        ('"C:\\\\temp\\\\x"', "C:\\temp\\x"),
        ('"say \\"hi\\""', 'say "hi"'),
        ('"a\\nb\\tc\\rd"', "a\nb\tc\rd"),
        ('"\\a\\b\\f\\v"', "\a\b\f\v"),
        ('"\\x41\\101\\u00e9\\U0001F600"', "AAé😀"),
        ('"a\nb"', "a\nb"),  # a newline as such stays
        ("`C:\\temp\\x`", "C:\\temp\\x"),  # raw: no escapes
        ('`a "quoted" \\n`', 'a "quoted" \\n'),
    ],
)
def test_double_quoted_strings_decode_go_escapes(literal: str, value: str) -> None:
    assert value_of(f"{{ .path = {literal} }}") == value


@pytest.mark.parametrize(
    ("q", "position", "fragment"),
    [
        ('{ .p = "\\q" }', 9, "unknown escape sequence \\q"),
        ('{ .p = "ok\\." }', 11, "unknown escape sequence \\."),  # a regex escape, written \\. or raw
        ('{ .p = "\\x4" }', 9, "needs 2 hex digits"),
        ('{ .p = "\\xff" }', 9, "past ASCII"),
        ('{ .p = "\\ud800" }', 9, "not a Unicode character"),
        ('{ .p = "\\U00110000" }', 9, "not a Unicode character"),
        ('{ .p = "\\8" }', 9, "unknown escape sequence"),
        ('{ span."a\\qb" = 1 }', 10, "unknown escape sequence \\q"),
    ],
)
def test_unknown_escapes_are_refused_with_their_position(q: str, position: int, fragment: str) -> None:
    error = refused(q)
    assert fragment in error.message and error.position == position, error.message
    assert f"(column {position})" in error.message


def test_quoted_attribute_names_decode_the_same_escapes() -> None:
    query = parse('{ span."we\\"ird\\\\key" = 1 && ."a b" = 2 }')
    assert isinstance(query.spansets, SpansetFilter)
    cond = query.spansets.condition
    assert (
        isinstance(cond, BoolOp) and isinstance(cond.left, Comparison) and isinstance(cond.right, Comparison)
    )
    assert (cond.left.field.scope, cond.left.field.name) == ("span", 'we"ird\\key')
    assert (cond.right.field.scope, cond.right.field.name) == ("any", "a b")


def test_positions_count_characters_across_lines() -> None:
    assert refused('{ name = "a" }\n{ }').position == 16
    assert refused('{\n .p = "\\q"\n}').position == 10


def test_escapes_find_exactly_the_stored_text(server: ServerProcess) -> None:
    post(
        server,
        [
            span_with(E, "1", {"path": "C:\\temp\\x", 'we"ird\\key': "v"}),
            span_with(F, "2", {"path": "C:\\temp\\y"}),
        ],
    )
    assert found(server, '{ .path = "C:\\\\temp\\\\x" }') == [E]
    assert found(server, "{ .path = `C:\\temp\\x` }") == [E]
    assert found(server, '{ .path =~ "C:\\\\\\\\temp\\\\\\\\." }') == [E, F]  # regex \\ for one backslash
    assert found(server, "{ .path =~ `C:\\\\temp\\\\x` }") == [E]
    assert found(server, '{ span."we\\"ird\\\\key" = "v" }') == [E]
    assert found(server, '{ ."we\\"ird\\\\key" != nil }') == [E]
    for q, position in [('{ .path = "C:\\Temp" }', 14), ('{ span."\\q" = 1 }', 9)]:
        response = search(server, q)
        assert response.status_code == 400, response.text
        assert response.json()["position"] == position and "escape" in response.json()["error"]


# --- data for the server tests ----------------------------------------------------------------------

E, F = "e" * 32, "f" * 32


def span_with(trace: str, span_id: str, attrs: dict[str, object]) -> dict:
    start = NOW - (5 if trace == E else 6) * 60 * 10**9
    return span(trace, span_id, None, "odd", 1, start, 1, attrs)


def post(server: ServerProcess, spans: list[dict]) -> None:
    doc = {"resourceSpans": [resource("odd", spans)]}
    response = httpx.post(f"{server.otlp_http_url}/v1/traces", json=doc, timeout=30)
    assert response.status_code == 200, response.text
    assert not response.json().get("partialSuccess"), response.text
