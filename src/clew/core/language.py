"""clew's trace query language, modelled on Tempo's TraceQL: a parser to a small AST, and the
structural evaluation that runs on the spans of candidate traces.

Spanset filters (`{ ... }`) compile to SQL in the store (store/search.py); how spansets combine
(`&&`, `||`, `>`, `>>`, `~`) and aggregate pipelines (`| count() > 3`) are evaluated here, per trace,
on the flags the SQL computed. See docs/query-language.md.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, cast

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
?start: pipeline

pipeline: spanset_or (PIPE aggregate)*

?spanset_or: spanset_and (OR spanset_and)*
?spanset_and: structural (AND structural)*
?structural: spanset_atom (STRUCT_OP spanset_atom)*
?spanset_atom: LBRACE [cond_or] RBRACE   -> spanset_filter
             | LPAR spanset_or RPAR      -> group

?cond_or: cond_and (OR cond_and)*
?cond_and: cond_atom (AND cond_atom)*
?cond_atom: field CMP_OP value           -> comparison
          | LPAR cond_or RPAR            -> group

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
STRUCT_OP: ">>" | ">" | "~"
CMP_OP: "=~" | "!~" | "!=" | ">=" | "<=" | "=" | ">" | "<"
AGG_FN.3: /(count|avg|min|max|sum)(?=\s*\()/
ATTRIBUTE.2: /(span|resource)?\.("([^"\\]|\\.)*"|[A-Za-z0-9_][A-Za-z0-9_.\-\/]*)/
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
    "STRUCT_OP": "a structural operator ('>', '>>' or '~')",
    "CMP_OP": "a comparison operator (= != > >= < <= =~ !~)",
    "AGG_FN": "an aggregate (count, avg, min, max, sum)",
    "ATTRIBUTE": "an attribute (span.x, resource.x or .x)",
    "NAME": "a name (an intrinsic such as duration, or a keyword such as error, server, true, nil)",
    "STRING": "a string",
    "RAW_STRING": "a string",
    "DURATION": "a duration such as 250ms",
    "NUMBER": "a number",
    "$END": "the end of the query",
}

Scope = Literal["intrinsic", "span", "resource", "any"]
ValueKind = Literal["string", "int", "float", "bool", "duration", "status", "kind", "nil"]

# intrinsic name -> its type; `span:` forms are Tempo's newer spelling of the same fields
INTRINSICS: dict[str, ValueKind] = {
    "name": "string",
    "status": "status",
    "kind": "kind",
    "duration": "duration",
    "service": "string",
    "statusMessage": "string",
}
_ALIASES = {
    **{f"span:{name}": name for name in ("name", "status", "kind", "duration", "statusMessage")},
    "resource.service.name": "service",
    "rootServiceName": None,  # named so the error can say it is not supported yet
}
_DURATION_UNITS = {
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
        return {"intrinsic": "", "span": "span.", "resource": "resource.", "any": "."}[self.scope] + self.name


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


Condition = Comparison | BoolOp


@dataclass(frozen=True, slots=True)
class SpansetFilter:
    """`{ cond }`; `index` numbers the filters of a query, naming their flag column in SQL."""

    index: int
    condition: Condition | None


@dataclass(frozen=True, slots=True)
class SpansetOp:
    op: Literal["&&", "||", ">", ">>", "~"]
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
class Query:
    spansets: SpansetExpr
    pipeline: tuple[Aggregate, ...] = ()
    filters: tuple[SpansetFilter, ...] = field(default=())

    @property
    def simple(self) -> bool:
        """One spanset filter and nothing else: SQL alone decides which traces match."""
        return isinstance(self.spansets, SpansetFilter) and not self.pipeline

    @property
    def structural(self) -> bool:
        """Whether evaluation needs the parent links of every span in a candidate trace."""

        def walk(e: SpansetExpr) -> bool:
            return isinstance(e, SpansetOp) and (e.op in (">", ">>", "~") or walk(e.left) or walk(e.right))

        return walk(self.spansets)


def _unquote(text: str) -> str:
    if text.startswith("`"):
        return text[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), text[1:-1])


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
    if key.startswith('"'):
        key = _unquote(key)
    scopes: dict[str, Scope] = {"span": "span", "resource": "resource", "": "any"}
    return Field(scopes[scope], key)


def parse_duration_literal(text: str) -> int:
    match = re.fullmatch(r"(-?\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    if not match:
        raise ValueError(text)
    return int(round(float(match.group(1)) * _DURATION_UNITS[match.group(2)]))


def _value(token: Token) -> Value:
    text = str(token)
    if token.type in ("STRING", "RAW_STRING"):
        return Value("string", _unquote(text))
    if token.type == "DURATION":
        return Value("duration", parse_duration_literal(text))
    if token.type == "NUMBER":
        if re.fullmatch(r"-?\d+", text):
            return Value("int", int(text))
        return Value("float", float(text))
    if text in ("true", "false"):
        return Value("bool", text == "true")
    if text == "nil":
        return Value("nil", None)
    if text in STATUS_CODES:
        return Value("status", STATUS_CODES[text])
    if text in KIND_CODES:
        return Value("kind", KIND_CODES[text])
    raise QuerySyntaxError(
        f'unknown value {text!r}: quote strings ("{text}"); keywords are true, false, nil, '
        "ok, error, unset and the span kinds",
        token.start_pos,
    )


def _check(field: Field, op: Token, value: Value) -> Value:
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
        try:
            re.compile(str(value.value))
        except re.error as exc:
            raise QuerySyntaxError(f"invalid regular expression {value.value!r}: {exc}", pos) from None
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
    elif value.kind != "string":
        raise QuerySyntaxError(f"{field.name} compares with a quoted string", pos)
    return value


class _ToAst(Transformer[Token, object]):
    def __init__(self) -> None:
        super().__init__()
        self.filters: list[SpansetFilter] = []

    def field(self, items: list[Token]) -> Token:
        return items[0]

    def value(self, items: list[Token]) -> Token:
        return items[0]

    def comparison(self, items: list[Token]) -> Comparison:
        name, op, raw = items
        f = _field(name)
        return Comparison(f, str(op), _check(f, op, _value(raw)))

    def group(self, items: list[object]) -> object:
        return items[1]

    def cond_and(self, items: list[object]) -> Condition:
        return self._fold(items, BoolOp)  # type: ignore[return-value]  # the grammar folds conditions only

    def cond_or(self, items: list[object]) -> Condition:
        return self._fold(items, BoolOp)  # type: ignore[return-value]  # the grammar folds conditions only

    def spanset_filter(self, items: list[object]) -> SpansetFilter:
        result = SpansetFilter(len(self.filters), items[1])  # type: ignore[arg-type]  # "{" condition "}"
        self.filters.append(result)
        return result

    def spanset_or(self, items: list[object]) -> SpansetExpr:
        return self._fold(items, SpansetOp)  # type: ignore[return-value]  # the grammar folds spansets only

    def spanset_and(self, items: list[object]) -> SpansetExpr:
        return self._fold(items, SpansetOp)  # type: ignore[return-value]  # the grammar folds spansets only

    def structural(self, items: list[object]) -> SpansetExpr:
        return self._fold(items, SpansetOp)  # type: ignore[return-value]  # the grammar folds spansets only

    def aggregate(self, items: list[object]) -> Aggregate:
        fn, _, arg, _, op, raw = items
        assert isinstance(fn, Token) and isinstance(op, Token) and isinstance(raw, Token)
        f = _field(arg) if isinstance(arg, Token) else None
        if str(fn) == "count":
            if f is not None:
                raise QuerySyntaxError("count() takes no argument", getattr(arg, "start_pos", None))
        elif f is None:
            raise QuerySyntaxError(f"{fn}() needs a field, such as {fn}(duration)", fn.start_pos)
        elif f.scope == "intrinsic" and f.name != "duration":
            raise QuerySyntaxError(f"{fn}() needs a number: duration or a numeric attribute", fn.start_pos)
        if str(op) in _REGEX_OPS:
            raise QuerySyntaxError(f"aggregates compare with = != > >= < <=, not {op}", op.start_pos)
        value = _value(raw)
        if value.kind not in ("int", "float", "duration"):
            raise QuerySyntaxError("aggregates compare with a number or a duration", raw.start_pos)
        return Aggregate(str(fn), f, str(op), float(value.value))  # type: ignore[arg-type]  # numeric, checked above

    def pipeline(self, items: list[object]) -> Query:
        stages = tuple(item for item in items[1:] if isinstance(item, Aggregate))
        return Query(items[0], stages, tuple(self.filters))  # type: ignore[arg-type]  # a spanset expression

    @staticmethod
    def _fold(items: list[object], node: type) -> object:
        result = items[0]
        for i in range(1, len(items), 2):
            result = node(str(items[i]), result, items[i + 1])
        return result


_PARSER = Lark(GRAMMAR, parser="lalr", maybe_placeholders=True, propagate_positions=False)


def _expected_text(names: set[str]) -> list[str]:
    return sorted({_TERMINAL_TEXT.get(n, n) for n in names})


def parse(text: str) -> Query:
    """The query as an AST, or a `QuerySyntaxError` with the 1-based column and what could come next."""
    if not text.strip():
        raise QuerySyntaxError("the query is empty: try { } for every span, or { status = error }", 1)
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
            column = exc.column
            message = f"unexpected {str(exc.token)!r} at column {column}"
        raise QuerySyntaxError(f"{message}: expected {' or '.join(expected)}", column, expected) from None
    except UnexpectedCharacters as exc:
        expected = _expected_text(set(exc.allowed or ()))
        raise QuerySyntaxError(
            f"unexpected character {text[exc.pos_in_stream or 0]!r} at column {exc.column}"
            + (f": expected {' or '.join(expected)}" if expected else ""),
            exc.column,
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
                cause.args = (f"{cause.args[0]} (column {cause.position})",)
            raise cause from None
        raise


# --- evaluation on one trace's spans ------------------------------------------------------------


@dataclass(slots=True)
class TraceSpans:
    """The spans of one candidate trace: parent links, a flag per spanset filter, aggregate inputs."""

    span_ids: list[bytes]
    parents: list[bytes]
    flags: list[list[bool]]  # flags[filter index][span]
    values: list[list[float | None]]  # values[aggregate index][span]
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
    if expr.op == ">":
        return {i for i in right if spans.parent_of(i) in left}
    if expr.op == ">>":
        found = set()
        for i in right:
            seen, p = {i}, spans.parent_of(i)
            while p is not None and p not in seen:
                if p in left:
                    found.add(i)
                    break
                seen.add(p)
                p = spans.parent_of(p)
        return found
    # "~": another span with the same (present) parent
    by_parent: dict[bytes, set[int]] = {}
    for i in left:
        if spans.parents[i]:
            by_parent.setdefault(spans.parents[i], set()).add(i)
    return {i for i in right if spans.parents[i] and by_parent.get(spans.parents[i], set()) - {i}}


_COMPARE = {
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
    matched = _eval(query.spansets, spans)
    for n, stage in enumerate(query.pipeline):
        if not matched:
            break
        inputs = (
            [1.0] * len(matched)
            if stage.fn == "count"
            else [v for i in matched if (v := spans.values[n][i]) is not None]
        )
        result = aggregate(stage.fn, inputs)
        if result is None or not _COMPARE[stage.op](result, stage.value):
            matched = set()
    return sorted(matched)
