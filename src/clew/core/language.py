"""clew's trace query language, modelled on Tempo's TraceQL: a parser to a small AST, and the
structural evaluation that runs on the spans of candidate traces.

Spanset filters (`{ ... }`) compile to SQL in the store (store/search.py); how spansets combine
(`&&`, `||`, `>`, `>>`, `~`) and aggregate pipelines (`| count() > 3`) are evaluated here, per trace,
on the flags the SQL computed. See docs/query-language.md.

Strings in double quotes (values and quoted attribute names such as `span."my key"`) decode Go-style
escapes as TraceQL does; any other backslash sequence is refused with its position. Backquoted
strings are raw. Input is bounded before it can recurse anywhere (`MAX_*` below): each limit answers
a 400 that names it, and the largest accepted query stays inside the engine's parser and AST limits.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import Literal, cast

import re2  # type: ignore[import-untyped]  # google-re2 ships no type information
from lark import Lark, Token, Transformer
from lark.exceptions import (
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
)

from clew.core.errors import BadRequest
from clew.core.model import KIND_CODES, STATUS_CODES

GRAMMAR = r"""
?start: pipeline | bare

pipeline: spanset_or (PIPE (aggregate | selection | grouping | merge | stage_filter))* [hints]
grouping: BY LPAR field RPAR
bare: aggregate (PIPE (aggregate | selection | grouping | merge | stage_filter))* [hints]
merge: COALESCE LPAR RPAR
stage_filter: LBRACE [cond_or] RBRACE
selection: SELECT LPAR field ("," field)* RPAR
hints: WITH LPAR [hint ("," hint)*] RPAR
hint: NAME "=" value

?spanset_or: spanset_and (OR spanset_and)*
?spanset_and: structural (AND structural)*
?structural: spanset_atom (STRUCT_OP spanset_atom)*
?spanset_atom: LBRACE [cond_or] RBRACE   -> spanset_filter
             | LPAR spanset_or RPAR      -> group

?cond_or: cond_and (OR cond_and)*
?cond_and: cond_atom (AND cond_atom)*
?cond_atom: field CMP_OP value_expr      -> comparison
          | LPAR cond_or RPAR            -> group
          | NOT LPAR cond_or RPAR        -> negation
          | field                        -> exists
          | NOT field                    -> missing
          | static_expr CMP_OP value_expr -> static_comparison

?static_expr: static_term (SUM_OP static_term)*  -> arithmetic
?static_term: static_value (MUL_OP value)*       -> arithmetic
static_value: STRING | RAW_STRING | DURATION | NUMBER

?value_expr: value_term (SUM_OP value_term)*   -> arithmetic
?value_term: value (MUL_OP value)*             -> arithmetic

aggregate: AGG_FN LPAR [field] RPAR CMP_OP value

field: ATTRIBUTE | NAME
value: STRING | RAW_STRING | DURATION | NUMBER | NAME

PIPE: "|"
OR: "||"
AND: "&&"
LBRACE: "{"
RBRACE: "}"
LPAR: "("
RPAR: ")"
STRUCT_OP: "&>>" | "&>" | "&<<" | "&<" | "&~" | "!>>" | "!>" | "!<<" | "!<" | "!~" | ">>" | ">" | "<<" | "<" | "~"
NOT: "!"
WITH.3: /with(?=\s*\()/
SUM_OP: "+" | "-"
MUL_OP: "*" | "/"
CMP_OP: "=~" | "!~" | "!=" | ">=" | "<=" | "=" | ">" | "<"
AGG_FN.3: /(count|avg|min|max|sum)(?=\s*\()/
SELECT.3: /select(?=\s*\()/
BY.3: /by(?=\s*\()/
COALESCE.3: /coalesce(?=\s*\()/
ATTRIBUTE.2: /(span|resource|event|link|instrumentation)?\.("([^"\\]|\\.)*"|[A-Za-z0-9_][A-Za-z0-9_\-\/]*)(\.("([^"\\]|\\.)*"|[A-Za-z0-9_][A-Za-z0-9_\-\/]*))*/
DURATION.2: /-?\d+(\.\d+)?(ns|us|µs|ms|s|m|h)(?![A-Za-z0-9_])/
NUMBER: /-?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?/
NAME: /[A-Za-z_][A-Za-z0-9_]*(:[A-Za-z_][A-Za-z0-9_]*)?/
STRING: /"([^"\\]|\\.)*"/
RAW_STRING: /`[^`]*`/

%import common.WS
%ignore WS
"""

# How terminals read in an error message: "expected a value", not "expected __ANON_3".
_TERMINAL_TEXT = {
    "PIPE": "'|'",
    "OR": "'||'",
    "AND": "'&&'",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "LPAR": "'('",
    "RPAR": "')'",
    "STRUCT_OP": "a structural operator (> >> < << ~, negated !> ..., union &> ...)",
    "NOT": "'!'",
    "WITH": "'with'",
    "SUM_OP": "'+' or '-'",
    "MUL_OP": "'*' or '/'",
    "CMP_OP": "a comparison operator (= != > >= < <= =~ !~)",
    "AGG_FN": "an aggregate (count, avg, min, max, sum)",
    "SELECT": "'select'",
    "BY": "'by'",
    "COALESCE": "'coalesce'",
    "ATTRIBUTE": "an attribute (span.x, resource.x or .x)",
    "NAME": "a name (an intrinsic such as duration, or a keyword such as error, server, true, nil)",
    "STRING": "a string",
    "RAW_STRING": "a string",
    "DURATION": "a duration such as 250ms",
    "NUMBER": "a number",
    "$END": "the end of the query",
}

Scope = Literal["intrinsic", "span", "resource", "any", "event", "link", "instrumentation"]
ValueKind = Literal["string", "int", "float", "bool", "duration", "status", "kind", "nil"]

# intrinsic name -> its type; `span:` forms are Tempo's newer spelling of the same fields
INTRINSICS: dict[str, ValueKind] = {
    "name": "string",
    "status": "status",
    "kind": "kind",
    "duration": "duration",
    "service": "string",
    "statusMessage": "string",
    # scoped intrinsics of Tempo's that have no unscoped form
    "span:id": "string",
    "span:parentID": "string",
    "trace:id": "string",
    "instrumentation:name": "string",
    "instrumentation:version": "string",
    "event:name": "string",
    "event:timeSinceStart": "duration",
    "link:traceID": "string",
    "link:spanID": "string",
    "span:childCount": "int",
    "trace:duration": "duration",
    "trace:rootName": "string",
    "trace:rootService": "string",
}
_ALIASES = {
    **{f"span:{name}": name for name in ("name", "status", "kind", "duration", "statusMessage")},
    "resource.service.name": "service",
    "rootServiceName": None,  # named so the error can say it is not supported yet
}
DURATION_UNITS = {
    "ns": 1,
    "us": 10**3,
    "µs": 10**3,
    "ms": 10**6,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}
_ORDERING_OPS = {">", ">=", "<", "<="}
_REGEX_OPS = {"=~", "!~"}

# Limits on a query, each checked before anything can recurse on it (the text is scanned for its
# nesting before it is parsed; the counts are checked as the parse tree becomes the AST, which folds
# `&&` and `||` chains into balanced trees). With all of them at once the SQL of a search stays far
# inside the engine's max_parser_depth (1000), max_ast_depth (1000) and max_ast_elements (50,000):
# tests/test_language_limits.py runs the largest accepted query through a real server.
MAX_QUERY_LENGTH = 16_384  # characters
MAX_NESTING_DEPTH = 32  # open `{` and `(` at once
MAX_CONDITIONS = 128  # comparisons in all the spanset filters of a query
MAX_SPANSETS = 32  # spanset filters `{ ... }` in a query
MAX_PIPELINE_STAGES = 16  # `| aggregate` stages
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # integers and durations (nanoseconds) are 64-bit

# Go's escapes in double-quoted strings (strconv.Unquote, as TraceQL reads them)
_ESCAPES = {
    '"': '"',
    "\\": "\\",
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "v": "\v",
}
_ESCAPES_TEXT = r"\" \\ \n \t \r \a \b \f \v, \xHH and \OOO (ASCII), \uHHHH, \UHHHHHHHH"
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # the error is the client's, answered with a 400; no engine log line
_RE2_RULES = (
    "regular expressions are RE2: no lookaround, backreferences or possessive quantifiers, "
    "repetition counts up to 1000"
)


class QuerySyntaxError(BadRequest):
    """The query does not parse or does not type-check; carries where and what was expected."""

    def __init__(self, message: str, position: int | None = None, expected: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.position = position
        self.expected = list(expected)


@dataclass(frozen=True, slots=True)
class Field:
    scope: Scope
    name: str  # the intrinsic's canonical name, or the attribute key

    def __str__(self) -> str:
        if self.scope == "intrinsic":
            return self.name
        return ("" if self.scope == "any" else self.scope) + "." + self.name


@dataclass(frozen=True, slots=True)
class Value:
    kind: ValueKind
    value: str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class Comparison:
    field: Field
    op: str
    value: Value


@dataclass(frozen=True, slots=True)
class BoolOp:
    op: Literal["&&", "||"]
    left: Condition
    right: Condition


@dataclass(frozen=True, slots=True)
class Not:
    """`!( cond )`."""

    condition: Condition


@dataclass(frozen=True, slots=True)
class Static:
    """`true` or `false` where a condition goes (`{ true }`)."""

    value: bool


Condition = Comparison | BoolOp | Not | Static


@dataclass(frozen=True, slots=True)
class SpansetFilter:
    """`{ cond }`; `index` numbers the filters of a query, naming their flag column in SQL."""

    index: int
    condition: Condition | None


# attribute scopes held as lists per span (scope, events, links): filters only, not aggregates
LISTED_SCOPES = ("event", "link", "instrumentation")
STRUCTURAL = (">", ">>", "<", "<<", "~", "!>", "!>>", "!<", "!<<", "!~", "&>", "&>>", "&<", "&<<", "&~")


@dataclass(frozen=True, slots=True)
class SpansetOp:
    op: str  # "&&", "||" or one of STRUCTURAL
    left: SpansetExpr
    right: SpansetExpr


SpansetExpr = SpansetFilter | SpansetOp


@dataclass(frozen=True, slots=True)
class Aggregate:
    """`| fn(field) op value`: keeps a trace's spanset only when the aggregate over it passes."""

    fn: Literal["count", "avg", "min", "max", "sum"]
    field: Field | None
    op: str
    value: float


@dataclass(frozen=True, slots=True)
class GroupBy:
    """`| by(field)`: the spanset split into one per value of the field; later stages apply to each."""

    field: Field


@dataclass(frozen=True, slots=True)
class Coalesce:
    """`| coalesce()`: the spansets that by() made, one again."""


@dataclass(frozen=True, slots=True)
class FilterStage:
    """`| { cond }` after other stages: keeps, in each spanset, the spans the filter matches."""

    filter: SpansetFilter


Stage = Aggregate | GroupBy | Coalesce | FilterStage


@dataclass(frozen=True, slots=True)
class Selection:
    fields: tuple[tuple[Field, str], ...]


@dataclass(frozen=True, slots=True)
class Query:
    spansets: SpansetExpr
    pipeline: tuple[Stage, ...] = ()
    filters: tuple[SpansetFilter, ...] = field(default=())
    # `| select(a, b)`: fields reported with each matching span, as (the field, its name as written)
    select: tuple[tuple[Field, str], ...] = ()

    @property
    def simple(self) -> bool:
        """One spanset filter and nothing else: SQL alone decides which traces match."""
        return isinstance(self.spansets, SpansetFilter) and not self.pipeline

    @property
    def structural(self) -> bool:
        """Whether evaluation needs the parent links of every span in a candidate trace."""

        def walk(e: SpansetExpr) -> bool:
            return isinstance(e, SpansetOp) and (e.op in STRUCTURAL or walk(e.left) or walk(e.right))

        return walk(self.spansets)


def _unquote(text: str, offset: int = 0) -> str:
    """A string literal's value: backquoted strings are raw; double-quoted ones decode Go's escapes
    (`_ESCAPES`, `\\xHH`, `\\OOO`, `\\uHHHH`, `\\UHHHHHHHH`). `offset` is where `text` starts in the
    query (0-based), for the position of a bad escape."""
    if text.startswith("`"):
        return text[1:-1]
    body, out, i = text[1:-1], [], 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        at = offset + 1 + i  # the backslash
        kind = body[i + 1] if i + 1 < len(body) else ""
        if kind in _ESCAPES:
            out.append(_ESCAPES[kind])
            i += 2
            continue
        if kind in _HEX_ESCAPES:
            width, base, start = _HEX_ESCAPES[kind], 16, i + 2
        elif kind and kind in "01234567":
            width, base, start = 3, 8, i + 1
        else:
            raise QuerySyntaxError(
                f"unknown escape sequence {body[i : i + 2]} in a string: the escapes are {_ESCAPES_TEXT}; "
                "write \\\\ for a backslash, or use a `raw string` (handy for regular expressions)",
                at,
            )
        digits, written = body[start : start + width], body[i : start + width]
        allowed = "0123456789abcdefABCDEF" if base == 16 else "01234567"
        if len(digits) != width or any(d not in allowed for d in digits):
            raise QuerySyntaxError(
                f"escape sequence {written} needs {width} {'hex' if base == 16 else 'octal'} digits", at
            )
        code = int(digits, base)
        if kind not in "uU" and code > 0x7F:
            raise QuerySyntaxError(
                f"escape sequence {written} is past ASCII: write \\u{code:04X} for that character", at
            )
        if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
            raise QuerySyntaxError(f"escape sequence {written} is not a Unicode character", at)
        out.append(chr(code))
        i = start + width
    return "".join(out)


def anchored(pattern: str) -> str:
    """A TraceQL regex as the engine runs it: matching the whole value (store/search.py)."""
    return f"^(?:{pattern})$"


def _check_regex(pattern: str, at: int) -> None:
    """Refuse what the engine's RE2 would refuse: by RE2 itself, on the pattern alone (balanced, so
    anchoring cannot change its meaning) and anchored as the engine receives it."""
    for text in (pattern, anchored(pattern)):
        try:
            re2.compile(text, _RE2_OPTIONS)
        except re2.error as exc:
            reason = exc.args[0] if exc.args else "rejected"
            if isinstance(reason, bytes):
                reason = reason.decode("utf-8", "replace")
            raise QuerySyntaxError(
                f"invalid regular expression {_shown(pattern)}: {str(reason)[:200]} ({_RE2_RULES})", at
            ) from None


_SEGMENT = re.compile(r'"(?:[^"\\]|\\.)*"|[^."]+')


def field_of(token: Token) -> Field:
    """A field as a query names it (`duration`, `span.x`, `resource.x`, `.x`)."""
    return _field(token)


def _field(token: Token) -> Field:
    text = str(token)
    if text in _ALIASES:
        target = _ALIASES[text]
        if target is None:
            raise QuerySyntaxError(f"intrinsic {text!r} is not supported", token.start_pos)
        return Field("intrinsic", target)
    if token.type == "NAME":
        if text not in INTRINSICS:
            known = ", ".join(INTRINSICS)
            raise QuerySyntaxError(
                f"unknown intrinsic {text!r}: use one of {known}, or an attribute such as span.{text}",
                token.start_pos,
            )
        return Field("intrinsic", text)
    scope, _, key = text.partition(".")
    if '"' in key:  # quoted segments (`span.a."b c"`): each unquoted, joined by dots
        at = (token.start_pos or 0) + len(scope) + 1
        parts = [m.group(0) for m in _SEGMENT.finditer(key)]
        offsets = [m.start() for m in _SEGMENT.finditer(key)]
        key = ".".join(
            _unquote(p, at + o) if p.startswith('"') else p for p, o in zip(parts, offsets, strict=True)
        )
    scopes: dict[str, Scope] = {
        "span": "span", "resource": "resource", "": "any", "event": "event", "link": "link",
        "instrumentation": "instrumentation",
    }  # fmt: skip
    return Field(scopes[scope], key)


def parse_duration_literal(text: str) -> int:
    """Nanoseconds, exactly (decimal arithmetic, rounding half to even); a `ValueError` saying so when
    the text is not a duration or is beyond 64-bit nanoseconds (about 106,751 days)."""
    match = re.fullmatch(r"(-?\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    if not match:
        raise ValueError(f"{text!r} is not a duration")
    with localcontext() as ctx:
        ctx.prec = 60  # above the 19 digits of int64 nanoseconds and any unit's factor
        nanos = (Decimal(match.group(1)) * DURATION_UNITS[match.group(2)]).to_integral_value(ROUND_HALF_EVEN)
    if not INT64_MIN <= nanos <= INT64_MAX:
        raise ValueError(
            f"duration {text} is out of range: durations are 64-bit nanoseconds, "
            f"at most {INT64_MAX // DURATION_UNITS['h']}h ({INT64_MAX}ns)"
        )
    return int(nanos)


def _number(text: str, at: int) -> Value:
    if re.fullmatch(r"-?\d+", text):
        digits = text.lstrip("-").lstrip("0") or "0"
        # compared as text first: int() of thousands of digits is slow and refused by Python
        value = int(digits) if len(digits) <= 19 else INT64_MAX + 1
        value = -value if text.startswith("-") else value
        if not INT64_MIN <= value <= INT64_MAX:
            raise QuerySyntaxError(
                f"integer {text if len(text) <= 40 else text[:40] + '...'} is out of range: integers are "
                f"64-bit, from {INT64_MIN} to {INT64_MAX}",
                at,
            )
        return Value("int", value)
    number = float(text)
    if not math.isfinite(number):
        raise QuerySyntaxError(
            f"number {text if len(text) <= 40 else text[:40] + '...'} is out of range of 64-bit floating "
            "point (at most about 1.8e308)",
            at,
        )
    return Value("float", number)


def _value(token: Token) -> Value:
    text = str(token)
    if token.type in ("STRING", "RAW_STRING"):
        return Value("string", _unquote(text, token.start_pos or 0))
    if token.type == "DURATION":
        try:
            return Value("duration", parse_duration_literal(text))
        except ValueError as exc:
            raise QuerySyntaxError(str(exc), token.start_pos) from None
    if token.type == "NUMBER":
        return _number(text, token.start_pos or 0)
    if text in ("true", "false"):
        return Value("bool", text == "true")
    if text == "nil":
        return Value("nil", None)
    if text in ("minInt", "maxInt"):
        return Value("int", INT64_MIN if text == "minInt" else INT64_MAX)
    if text in STATUS_CODES:
        return Value("status", STATUS_CODES[text])
    if text in KIND_CODES:
        return Value("kind", KIND_CODES[text])
    raise QuerySyntaxError(
        f'unknown value {text!r}: quote strings ("{text}"); keywords are true, false, nil, '
        "ok, error, unset and the span kinds",
        token.start_pos,
    )


_ARITHMETIC = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def _apply(left: Value, op: str, right: Value, at: int | None) -> Value:
    numeric = ("int", "float", "duration")
    if left.kind not in numeric or right.kind not in numeric:
        raise QuerySyntaxError(f"arithmetic ({op}) applies to numbers and durations", at)
    a, b = left.value, right.value
    assert isinstance(a, int | float) and isinstance(b, int | float)
    if op == "/":
        if b == 0:
            raise QuerySyntaxError("division by zero", at)
        result: float = a / b
    else:
        result = _ARITHMETIC[op](a, b)
    kind: ValueKind = "duration" if "duration" in (left.kind, right.kind) else "float"
    if kind == "float" and left.kind == right.kind == "int" and op != "/":
        kind = "int"
    if kind in ("int", "duration"):
        if not INT64_MIN <= result <= INT64_MAX:
            raise QuerySyntaxError("the arithmetic overflows 64-bit integers", at)
        return Value(kind, int(result))
    if not math.isfinite(result):
        raise QuerySyntaxError("the arithmetic overflows 64-bit floating point", at)
    return Value("float", result)


def _check(field: Field, op: Token, value: Value, value_pos: int) -> Value:
    """Type rules, so a query that cannot mean anything says so instead of matching nothing."""
    pos = op.start_pos
    operator = str(op)
    if value.kind == "nil":
        if operator not in ("=", "!="):
            raise QuerySyntaxError(f"nil compares only with = or !=, not {operator}", pos)
        if field.scope == "intrinsic":
            raise QuerySyntaxError(f"intrinsic {field} is always present; nil applies to attributes", pos)
        return value
    if operator in _REGEX_OPS and value.kind != "string":
        raise QuerySyntaxError(f"{operator} needs a string pattern", pos)
    if operator in _REGEX_OPS:
        _check_regex(str(value.value), value_pos)
    if field.scope != "intrinsic":
        if value.kind in ("status", "kind"):
            raise QuerySyntaxError(f"attribute {field} cannot be compared with keyword {value.value}", pos)
        if value.kind == "bool" and operator not in ("=", "!="):
            raise QuerySyntaxError(f"booleans compare only with = or !=, not {operator}", pos)
        if value.kind == "duration":
            return Value("int", value.value)
        return value
    expected = INTRINSICS[field.name]
    if expected in ("status", "kind"):
        if value.kind != expected or operator not in ("=", "!="):
            choices = ", ".join(STATUS_CODES if expected == "status" else KIND_CODES)
            raise QuerySyntaxError(f"{field.name} compares with = or != to one of {choices}", pos)
    elif expected == "duration":
        if value.kind != "duration" or operator in _REGEX_OPS:
            raise QuerySyntaxError(f"{field.name} compares with a duration such as 250ms or 1.5s", pos)
    elif expected == "int":
        if value.kind != "int" or operator in _REGEX_OPS:
            raise QuerySyntaxError(f"{field.name} compares with a whole number", pos)
    elif value.kind != "string":
        raise QuerySyntaxError(f"{field.name} compares with a quoted string", pos)
    return value


class _ToAst(Transformer[Token, object]):
    def __init__(self) -> None:
        super().__init__()
        self.filters: list[SpansetFilter] = []
        self.conditions = 0
        self.stages = 0

    def field(self, items: list[Token]) -> Token:
        return items[0]

    def value(self, items: list[Token]) -> Token:
        return items[0]

    def static_value(self, items: list[Token]) -> Token:
        return items[0]

    def static_comparison(self, items: list[object]) -> Static:
        """A comparison of literals (`{ 1 + 1 = 2 }`), decided here."""
        left, op, right = items
        assert isinstance(op, Token)
        a = left if isinstance(left, Value) else _value(left)  # type: ignore[arg-type]
        b = right if isinstance(right, Value) else _value(right)  # type: ignore[arg-type]
        numeric = ("int", "float", "duration")
        same = (a.kind in numeric and b.kind in numeric) or a.kind == b.kind
        operator = str(op)
        if not same or operator in _REGEX_OPS and a.kind != "string":
            raise QuerySyntaxError(
                f"cannot compare {a.kind} {a.value!r} with {b.kind} {b.value!r}", op.start_pos
            )
        if operator in _REGEX_OPS:
            _check_regex(str(b.value), op.start_pos or 0)
            hit = re2.fullmatch(str(b.value), str(a.value)) is not None
            return Static(hit if operator == "=~" else not hit)
        return Static(bool(COMPARE[operator](a.value, b.value)))

    def comparison(self, items: list[object]) -> Comparison:
        name, op, raw = items
        assert isinstance(name, Token) and isinstance(op, Token)
        self._count(name)
        f = _field(name)
        if isinstance(raw, Value):  # folded arithmetic
            value, at = raw, op.start_pos or 0
        else:
            assert isinstance(raw, Token)
            value, at = _value(raw), raw.start_pos or 0
        return Comparison(f, str(op), _check(f, op, value, at))

    def _count(self, token: Token) -> None:
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            raise QuerySyntaxError(
                f"the query has more than {MAX_CONDITIONS} conditions (MAX_CONDITIONS, comparisons in all "
                "its spanset filters): split it, or match many values with one regular expression",
                token.start_pos,
            )

    def arithmetic(self, items: list[object]) -> object:
        """Arithmetic over literals (`10 * 1024 * 1024`), folded to one value here; a lone literal
        stays a token (its position is where an error about it points)."""
        first = items[0]
        if len(items) == 1:
            return first
        result = first if isinstance(first, Value) else _value(first)  # type: ignore[arg-type]
        for op, raw in zip(items[1::2], items[2::2], strict=True):
            operand = raw if isinstance(raw, Value) else _value(raw)  # type: ignore[arg-type]
            result = _apply(result, str(op), operand, getattr(op, "start_pos", None))
        return result

    def negation(self, items: list[object]) -> Not:
        return Not(items[2])  # type: ignore[arg-type]  # "!" "(" condition ")"

    def exists(self, items: list[Token]) -> Condition:
        """A field alone: `true`/`false`, or a boolean attribute compared with true (as Tempo reads
        an attribute used as an operand of && and ||)."""
        (name,) = items
        if str(name) in ("true", "false"):
            return Static(str(name) == "true")
        self._count(name)
        f = _field(name)
        if f.scope == "intrinsic":
            raise QuerySyntaxError(f"intrinsic {f} needs a comparison, such as {f} = ...", name.start_pos)
        return Comparison(f, "=", Value("bool", True))

    def missing(self, items: list[Token]) -> Condition:
        return Not(self.exists(items[1:]))

    def hints(self, items: list[object]) -> None:
        """`with(name = value, ...)`: accepted; clew's search returns the most recent traces already."""
        return None

    def hint(self, items: list[object]) -> None:
        return None

    def group(self, items: list[object]) -> object:
        return items[1]

    def cond_and(self, items: list[object]) -> Condition:
        return self._balanced(items, BoolOp)  # type: ignore[return-value]  # the grammar folds conditions only

    def cond_or(self, items: list[object]) -> Condition:
        return self._balanced(items, BoolOp)  # type: ignore[return-value]  # the grammar folds conditions only

    def spanset_filter(self, items: list[object]) -> SpansetFilter:
        if len(self.filters) == MAX_SPANSETS:
            brace = items[0]
            raise QuerySyntaxError(
                f"the query has more than {MAX_SPANSETS} spanset filters {{ ... }} (MAX_SPANSETS)",
                brace.start_pos if isinstance(brace, Token) else None,
            )
        result = SpansetFilter(len(self.filters), items[1])  # type: ignore[arg-type]  # "{" condition "}"
        self.filters.append(result)
        return result

    def spanset_or(self, items: list[object]) -> SpansetExpr:
        return self._balanced(items, SpansetOp)  # type: ignore[return-value]  # the grammar folds spansets only

    def spanset_and(self, items: list[object]) -> SpansetExpr:
        return self._balanced(items, SpansetOp)  # type: ignore[return-value]  # the grammar folds spansets only

    def structural(self, items: list[object]) -> SpansetExpr:
        return self._fold(items, SpansetOp)  # type: ignore[return-value]  # the grammar folds spansets only

    def aggregate(self, items: list[object]) -> Aggregate:
        fn, _, arg, _, op, raw = items
        assert isinstance(fn, Token) and isinstance(op, Token) and isinstance(raw, Token)
        self._stage(fn)
        f = _field(arg) if isinstance(arg, Token) else None
        if str(fn) == "count":
            if f is not None:
                raise QuerySyntaxError("count() takes no argument", getattr(arg, "start_pos", None))
        elif f is None:
            raise QuerySyntaxError(f"{fn}() needs a field, such as {fn}(duration)", fn.start_pos)
        elif f.scope == "intrinsic" and f.name != "duration":
            raise QuerySyntaxError(f"{fn}() needs a number: duration or a numeric attribute", fn.start_pos)
        elif f.scope in LISTED_SCOPES:
            raise QuerySyntaxError(f"{fn}() reads span or resource attributes, not {f}", fn.start_pos)
        if str(op) in _REGEX_OPS:
            raise QuerySyntaxError(f"aggregates compare with = != > >= < <=, not {op}", op.start_pos)
        value = _value(raw)
        if value.kind not in ("int", "float", "duration"):
            raise QuerySyntaxError("aggregates compare with a number or a duration", raw.start_pos)
        return Aggregate(str(fn), f, str(op), float(value.value))  # type: ignore[arg-type]  # numeric, checked above

    def pipeline(self, items: list[object]) -> Query:
        stages = tuple(
            item for item in items[1:] if isinstance(item, Aggregate | GroupBy | Coalesce | FilterStage)
        )
        selected = tuple(f for item in items[1:] if isinstance(item, Selection) for f in item.fields)
        return Query(items[0], stages, tuple(self.filters), selected)  # type: ignore[arg-type]  # a spanset expression

    def merge(self, items: list[object]) -> Coalesce:
        self._stage(items[0])
        return Coalesce()

    def stage_filter(self, items: list[object]) -> FilterStage:
        self._stage(items[0])
        return FilterStage(self.spanset_filter(items))

    def _stage(self, token: object) -> None:
        self.stages += 1
        if self.stages > MAX_PIPELINE_STAGES:
            raise QuerySyntaxError(
                f"the query has more than {MAX_PIPELINE_STAGES} pipeline stages (MAX_PIPELINE_STAGES)",
                getattr(token, "start_pos", None),
            )

    def bare(self, items: list[object]) -> Query:
        """A pipeline with no spanset before it (`count() > 10`): over every span, as `{ } | ...`."""
        everything = SpansetFilter(len(self.filters), None)
        self.filters.append(everything)
        return self.pipeline([everything, *items])

    def grouping(self, items: list[object]) -> GroupBy:
        token = next(t for t in items if isinstance(t, Token) and t.type in ("ATTRIBUTE", "NAME"))
        self._stage(token)
        f = _field(token)
        if f.scope in LISTED_SCOPES:
            raise QuerySyntaxError(f"by() groups by span and resource fields, not {f}", token.start_pos)
        return GroupBy(f)

    def selection(self, items: list[object]) -> Selection:
        tokens = [t for t in items if isinstance(t, Token) and t.type in ("ATTRIBUTE", "NAME")]
        fields = []
        for token in tokens:
            f = _field(token)
            if f.scope in LISTED_SCOPES:
                raise QuerySyntaxError(f"select() reads span and resource fields, not {f}", token.start_pos)
            fields.append((f, str(token)))
        return Selection(tuple(fields))

    @staticmethod
    def _fold(items: list[object], node: type) -> object:
        """`a op b op c` as ((a op b) op c): structural operators associate to the left."""
        result = items[0]
        for i in range(1, len(items), 2):
            result = node(str(items[i]), result, items[i + 1])
        return result

    @staticmethod
    def _balanced(items: list[object], node: type) -> object:
        """A chain of one associative operator (`&&` or `||`, which the grammar never mixes in one
        chain) as a balanced tree: its depth, in Python and in the SQL it becomes, grows as log2."""
        operands, op = items[0::2], str(items[1]) if len(items) > 1 else ""
        assert all(str(o) == op for o in items[1::2])

        def build(lo: int, hi: int) -> object:
            if hi - lo == 1:
                return operands[lo]
            mid = (lo + hi) // 2
            return node(op, build(lo, mid), build(mid, hi))

        return build(0, len(operands))


_PARSER = Lark(GRAMMAR, parser="lalr", maybe_placeholders=True, propagate_positions=False)


def _expected_text(names: set[str]) -> list[str]:
    return sorted({_TERMINAL_TEXT.get(n, n) for n in names})


def _check_bounds(text: str) -> None:
    """The limits that hold before parsing: the length, text that is Unicode, and the nesting of
    `{` and `(` outside strings (so neither the parse tree nor the AST can be deep)."""
    if len(text) > MAX_QUERY_LENGTH:
        raise QuerySyntaxError(
            f"the query is {len(text)} characters long: the limit is {MAX_QUERY_LENGTH} (MAX_QUERY_LENGTH)",
            MAX_QUERY_LENGTH + 1,
        )
    surrogate = re.search("[\ud800-\udfff]", text)
    if surrogate:
        column = surrogate.start() + 1
        raise QuerySyntaxError(f"the query is not Unicode text: a lone surrogate at column {column}", column)
    depth, i, n = 0, 0, len(text)
    while i < n:
        ch = text[i]
        if ch == '"':  # a string or a quoted attribute name, as the lexer reads them
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif ch == "`":
            end = text.find("`", i + 1)
            i = n if end < 0 else end
        elif ch in "({":
            depth += 1
            if depth > MAX_NESTING_DEPTH:
                raise QuerySyntaxError(
                    f"the query nests {{ and ( deeper than {MAX_NESTING_DEPTH} (MAX_NESTING_DEPTH) at "
                    f"column {i + 1}",
                    i + 1,
                )
        elif ch in ")}":
            depth = max(0, depth - 1)
        i += 1


def parse(text: str) -> Query:
    """The query as an AST, or a `QuerySyntaxError` with the 1-based position (the column of a one-line
    query) and what could come next; queries beyond a `MAX_*` limit are refused naming the limit."""
    if not text.strip():
        raise QuerySyntaxError("the query is empty: try { } for every span, or { status = error }", 1)
    _check_bounds(text)
    try:
        tree = _PARSER.parse(text)
    except UnexpectedEOF as exc:
        expected = _expected_text(set(exc.expected))
        raise QuerySyntaxError(
            f"the query ends too early at column {len(text) + 1}: expected {' or '.join(expected)}",
            len(text) + 1,
            expected,
        ) from None
    except UnexpectedToken as exc:
        expected = _expected_text(set(exc.expected))
        if exc.token.type == "$END":
            column = len(text.rstrip()) + 1
            message = f"the query ends too early at column {column}"
        else:
            column = (exc.token.start_pos or 0) + 1  # lark's own column restarts on each line
            message = f"unexpected {_shown(str(exc.token))} at column {column}"
        raise QuerySyntaxError(f"{message}: expected {' or '.join(expected)}", column, expected) from None
    except UnexpectedCharacters as exc:
        expected = _expected_text(set(exc.allowed or ()))
        column = (exc.pos_in_stream or 0) + 1
        raise QuerySyntaxError(
            f"unexpected character {text[column - 1]!r} at column {column}"
            + (f": expected {' or '.join(expected)}" if expected else ""),
            column,
            expected,
        ) from None
    except UnexpectedInput as exc:  # pragma: no cover - lark's remaining cases
        raise QuerySyntaxError(f"syntax error at column {exc.column}", exc.column) from None
    try:
        return cast(Query, _ToAst().transform(tree))  # the grammar's start rule makes a Query
    except VisitError as exc:
        cause = exc.orig_exc
        if isinstance(cause, QuerySyntaxError):
            if cause.position is not None:
                cause.position += 1  # token offsets are 0-based; columns are 1-based
                cause.message = f"{cause.message} (column {cause.position})"
                cause.args = (cause.message,)
            raise cause from None
        raise


def _shown(token: str) -> str:
    """A token as an error message quotes it: long ones (a string of thousands of characters) cut."""
    return repr(token if len(token) <= 60 else token[:60] + "...")


# --- evaluation on one trace's spans ------------------------------------------------------------


@dataclass(slots=True)
class TraceSpans:
    """The spans of one candidate trace: parent links, a flag per spanset filter, aggregate inputs."""

    span_ids: list[bytes]
    parents: list[bytes]
    flags: list[list[bool]]  # flags[filter index][span]
    values: list[list[float | str | None]]  # values[stage index][span]: numbers, or by()'s text
    _index: dict[bytes, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._index = {sid: i for i, sid in enumerate(self.span_ids)}

    def parent_of(self, i: int) -> int | None:
        return self._index.get(self.parents[i])


def _eval(expr: SpansetExpr, spans: TraceSpans) -> set[int]:
    if isinstance(expr, SpansetFilter):
        return {i for i, hit in enumerate(spans.flags[expr.index]) if hit}
    left, right = _eval(expr.left, spans), _eval(expr.right, spans)
    if expr.op == "||":
        return left | right
    if expr.op == "&&":
        return left | right if left and right else set()
    # structural: spans of the right side related to one of the left side's; `!` those that are
    # not, `&` also the left side's spans they relate to
    related = _RELATIONS[expr.op.lstrip("!&")]
    out: set[int] = set()
    for i in right:
        partners = related(spans, i) & left
        if expr.op.startswith("!"):
            if not partners:
                out.add(i)
        elif partners:
            out.add(i)
            if expr.op.startswith("&"):
                out |= partners
    return out


def _ancestors(spans: TraceSpans, i: int) -> set[int]:
    seen, out, p = {i}, set(), spans.parent_of(i)
    while p is not None and p not in seen:
        out.add(p)
        seen.add(p)
        p = spans.parent_of(p)
    return out


def _children(spans: TraceSpans, i: int) -> set[int]:
    return {j for j in range(len(spans.span_ids)) if j != i and spans.parent_of(j) == i}


def _descendants(spans: TraceSpans, i: int) -> set[int]:
    return {j for j in range(len(spans.span_ids)) if i in _ancestors(spans, j)}


def _siblings(spans: TraceSpans, i: int) -> set[int]:
    parent = spans.parents[i]
    return {j for j in range(len(spans.span_ids)) if j != i and parent and spans.parents[j] == parent}


def _parent(spans: TraceSpans, i: int) -> set[int]:
    p = spans.parent_of(i)
    return set() if p is None else {p}


# what a right-hand span must have on the left: `{A} > {B}` B spans whose parent is an A span, ...
_RELATIONS = {">": _parent, ">>": _ancestors, "<": _children, "<<": _descendants, "~": _siblings}


COMPARE = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}


def aggregate(fn: str, values: list[float]) -> float | None:
    if fn == "count":
        return float(len(values))
    if not values:
        return None
    if fn == "sum":
        return math.fsum(values)
    if fn == "avg":
        return math.fsum(values) / len(values)
    return min(values) if fn == "min" else max(values)


def evaluate(query: Query, spans: TraceSpans) -> list[int]:
    """Indexes of the spans the query returns for this trace; empty when the trace does not match."""
    groups = [_eval(query.spansets, spans)]
    for n, stage in enumerate(query.pipeline):
        groups = [g for g in groups if g]
        if not groups:
            break
        if isinstance(stage, Coalesce):
            groups = [set().union(*groups)]
            continue
        if isinstance(stage, FilterStage):
            flags = spans.flags[stage.filter.index]
            groups = [{i for i in g if flags[i]} for g in groups]
            continue
        if isinstance(stage, GroupBy):  # spans without the field form no group
            split: dict[object, set[int]] = {}
            for g in groups:
                for i in g:
                    if (key := spans.values[n][i]) is not None:
                        split.setdefault((id(g), key), set()).add(i)
            groups = list(split.values())
            continue
        kept = []
        for g in groups:
            inputs = (
                [1.0] * len(g)
                if stage.fn == "count"
                else [float(v) for i in g if (v := spans.values[n][i]) is not None]
            )
            result = aggregate(stage.fn, inputs)
            if result is not None and COMPARE[stage.op](result, stage.value):
                kept.append(g)
        groups = kept
    return sorted(set().union(*groups)) if groups else []
