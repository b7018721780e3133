"""TraceQL metrics queries: a spanset filter followed by a metrics function,
`{ resource.service.name = "shop" } | quantile_over_time(duration, .5, .99) by (span.http.route)`,
optionally ranked with `| topk(5)` or `| bottomk(5)`.

The filter is the query language's (`language.parse`); what follows it is parsed here with its own
small grammar. Before the function comes any search query (spanset filters, structural operators,
aggregate pipelines); `rate`,
`count_over_time`, `sum_over_time`, `avg_over_time`, `min_over_time`, `max_over_time`,
`quantile_over_time` and `histogram_over_time` over `duration` or a numeric attribute; `by(...)`
over intrinsics and attributes; `topk`/`bottomk`. Anything else is a 400 that says so
(docs/query-language.md)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from lark import Lark, Token
from lark.exceptions import UnexpectedInput

from clew.core.language import LISTED_SCOPES, Condition, Field, Query, QuerySyntaxError, field_of, parse

FUNCTIONS = (
    "rate", "count_over_time", "sum_over_time", "avg_over_time", "min_over_time", "max_over_time",
    "quantile_over_time", "histogram_over_time",
)  # fmt: skip
NEEDS_FIELD = {"sum_over_time", "avg_over_time", "min_over_time", "max_over_time", "quantile_over_time",
               "histogram_over_time"}  # fmt: skip
MAX_BY = 5
MAX_QUANTILES = 10
Function = Literal[
    "compare",
    "rate", "count_over_time", "sum_over_time", "avg_over_time", "min_over_time", "max_over_time",
    "quantile_over_time", "histogram_over_time",
]  # fmt: skip

_GRAMMAR = r"""
start: FN "(" [args] ")" [BY "(" field ("," field)* ")"] [PIPE RANK "(" INT ")"]
args: field ("," NUMBER)*
field: ATTRIBUTE | NAME
FN.3: /(rate|count_over_time|sum_over_time|avg_over_time|min_over_time|max_over_time|quantile_over_time|histogram_over_time)(?=\s*\()/
BY.3: /by(?=\s*\()/
RANK.3: /(topk|bottomk)(?=\s*\()/
PIPE: "|"
INT: /\d{1,4}/
ATTRIBUTE.2: /(span|resource)?\.("([^"\\]|\\.)*"|[A-Za-z0-9_][A-Za-z0-9_.\-\/]*)/
NAME: /[A-Za-z_][A-Za-z0-9_]*(:[A-Za-z_][A-Za-z0-9_]*)?/
NUMBER: /(\d+(\.\d*)?|\.\d+)/
%import common.WS
%ignore WS
"""
_PARSER = Lark(_GRAMMAR, parser="lalr")
_STAGE = re.compile(r"\|\s*(" + "|".join((*FUNCTIONS, "compare")) + r")\s*\(")
DEFAULT_TOP = 10
MAX_TOP = 1000


@dataclass(frozen=True, slots=True)
class MetricsQuery:
    filter: Query
    function: Function
    field: Field | None  # what the *_over_time functions read (duration, or a numeric attribute)
    quantiles: tuple[float, ...]
    by: tuple[Field, ...]
    rank: tuple[Literal["topk", "bottomk"], int] | None = None
    labels: tuple[str, ...] = ()  # the `by` fields as the query wrote them: the series' label keys
    # compare({selection}, topN, start, end): the selection's condition, the values kept per
    # attribute, and the time window of the selection (ns) if given
    selection: Condition | None = None
    top: int = DEFAULT_TOP
    selection_window: tuple[int, int] | None = None


def parse_metrics(text: str) -> MetricsQuery:
    at = _metrics_stage(text)
    if at is None:
        raise QuerySyntaxError(
            f"a metrics query ends in a metrics function ({', '.join(FUNCTIONS)}), "
            "such as { status = error } | rate()",
            len(text),
        )
    query = parse(text[:at])
    if _STAGE.match(text, at).group(1) == "compare":  # type: ignore[union-attr]  # found by _metrics_stage
        return _compare(query, text, at)
    tail = text[at + 1 :]
    try:
        tree = _PARSER.parse(tail)
    except UnexpectedInput as exc:
        raise QuerySyntaxError(
            f"cannot read the metrics stage at {tail[exc.pos_in_stream or 0 :][:20]!r}: expected "
            "fn(args) [by (fields)] [| topk(n)]",
            at + 1 + (exc.pos_in_stream or 0),
        ) from None
    tokens = [t for t in tree.scan_values(lambda v: isinstance(v, Token))]
    function = str(tokens[0])
    fields = [field_of(t) for t in tokens if t.type in ("ATTRIBUTE", "NAME")]
    numbers = [float(t) for t in tokens if t.type == "NUMBER"]
    after_by = next((i for i, t in enumerate(tokens) if t.type == "BY"), None)
    arg_fields = (
        fields
        if after_by is None
        else [field_of(t) for t in tokens[:after_by] if t.type in ("ATTRIBUTE", "NAME")]
    )
    by = tuple(fields[len(arg_fields) :])
    field_tokens = [str(t) for t in tokens if t.type in ("ATTRIBUTE", "NAME")]
    labels = tuple(field_tokens[len(arg_fields) :])
    rank_at = next((i for i, t in enumerate(tokens) if t.type == "RANK"), None)
    rank = (str(tokens[rank_at]), int(str(tokens[rank_at + 1]))) if rank_at is not None else None
    if function in NEEDS_FIELD and len(arg_fields) != 1:
        raise QuerySyntaxError(f"{function} takes a field, such as {function}(duration)", at + 1)
    if function not in NEEDS_FIELD and (arg_fields or numbers):
        raise QuerySyntaxError(f"{function}() takes no arguments", at + 1)
    field = arg_fields[0] if arg_fields else None
    if field is not None and field.scope == "intrinsic" and field.name != "duration":
        raise QuerySyntaxError(
            f"{function} reads a number: duration or a numeric attribute, not {field}", at + 1
        )
    if function == "quantile_over_time":
        if not 1 <= len(numbers) <= MAX_QUANTILES or not all(0 <= q <= 1 for q in numbers):
            raise QuerySyntaxError(
                f"quantile_over_time takes 1 to {MAX_QUANTILES} quantiles from 0 to 1", at + 1
            )
    elif numbers:
        raise QuerySyntaxError(f"{function} takes no numbers", at + 1)
    if any(f.scope in LISTED_SCOPES for f in (*arg_fields, *by)):
        raise QuerySyntaxError(
            "metrics read span and resource attributes and intrinsics, not event., link. or instrumentation.",
            at + 1,
        )
    if any(
        f.scope == "intrinsic"
        and f.name
        not in (
            "name",
            "service",
            "status",
            "kind",
            "statusMessage",
            "duration",
            "instrumentation:name",
            "instrumentation:version",
        )
        for f in by
    ):
        raise QuerySyntaxError(
            "by() takes name, status, kind, statusMessage, resource.service.name or attributes", at + 1
        )
    if len(by) > MAX_BY:
        raise QuerySyntaxError(f"by() takes at most {MAX_BY} fields", at + 1)
    if rank is not None and not 1 <= rank[1] <= 1000:
        raise QuerySyntaxError(f"{rank[0]} takes a count from 1 to 1000", at + 1)
    return MetricsQuery(query, function, field, tuple(numbers), by, rank, labels)  # type: ignore[arg-type]  # checked above


def _outside_strings(text: str, start: int = 0) -> Iterator[tuple[int, str]]:
    """The characters of `text` from `start` that are not inside a string ("..." or `...`)."""
    i, quote = start, ""
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\" and quote == '"':
                i += 2
                continue
            if ch == quote:
                quote = ""
        elif ch in ('"', "`"):
            quote = ch
        else:
            yield i, ch
        i += 1


def _metrics_stage(text: str) -> int | None:
    """Where the metrics stage's `|` is: the first one outside strings followed by a function."""
    return next((i for i, ch in _outside_strings(text) if ch == "|" and _STAGE.match(text, i)), None)


def _compare(query: Query, text: str, at: int) -> MetricsQuery:
    """`| compare({selection}, topN, start, end)`: its arguments, split at top-level commas."""
    open_at = text.index("(", at)
    args: list[str] = []
    depth, start, end = 0, open_at + 1, None
    for i, ch in _outside_strings(text, open_at + 1):
        if ch in "({":
            depth += 1
        elif ch in ")}":
            if depth == 0 and ch == ")":
                args.append(text[start:i])
                end = i
                break
            depth -= 1
        elif ch == "," and depth == 0:
            args.append(text[start:i])
            start = i + 1
    if end is None:
        raise QuerySyntaxError("compare( is not closed", len(text))
    i = end
    if text[i + 1 :].strip():
        raise QuerySyntaxError("nothing may follow compare(...)", i + 2)
    if not args or not args[0].strip().startswith("{"):
        raise QuerySyntaxError(
            "compare() takes a spanset filter first, such as compare({ status = error })", open_at + 1
        )
    selection = parse(args[0])
    if not selection.simple:
        raise QuerySyntaxError(
            "compare()'s selection is one spanset filter, such as { status = error }", open_at + 1
        )
    numbers = []
    for arg in args[1:]:
        if not re.fullmatch(r"\s*\d{1,19}\s*", arg):
            raise QuerySyntaxError(
                f"compare() takes whole numbers after the filter, not {arg.strip()[:20]!r}", open_at + 1
            )
        numbers.append(int(arg))
    if len(numbers) not in (0, 1, 3):
        raise QuerySyntaxError(
            "compare({filter}, topN, start, end): start and end come together", open_at + 1
        )
    top = numbers[0] if numbers else DEFAULT_TOP
    if not 1 <= top <= MAX_TOP:
        raise QuerySyntaxError(f"compare()'s topN is from 1 to {MAX_TOP}", open_at + 1)
    window = (numbers[1], numbers[2]) if len(numbers) == 3 else None
    return MetricsQuery(query, "compare", None, (), (), None, (), selection.filters[0].condition, top, window)
