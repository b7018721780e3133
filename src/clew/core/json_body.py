"""JSON with limits, shared by the OTLP/JSON and Zipkin receivers, the file importer and the query
APIs' JSON parameters (Jaeger's `tags`, `query.attributes`).

`load_json` is `json.loads` made safe for whatever a client sends; every refusal is a `BadRequest`:

- **Nesting**: at most `MAX_JSON_DEPTH` (64) levels of arrays and objects, checked by a linear scan
  before the parser recurses (100,000 `[` would otherwise exhaust Python's stack). OTLP's deepest real
  documents are AnyValue arrays/kvlists inside attributes: 64 JSON levels leave room for about 14
  nested AnyValues, and for the protobuf decoding that follows (upb's limit is 100 messages deep).
- **Numbers**: the literals `NaN`, `Infinity` and `-Infinity` (which Python's parser accepts and JSON
  does not) are refused, and so is a number too large for a double (`1e400`).
- **Text**: UTF-8 (or the UTF-16/32 that JSON allows, detected as `json.loads` does). Bytes that are not
  valid in that encoding are refused. Escapes of lone UTF-16 surrogates (`"\\ud800"`, valid JSON
  grammar but no character) become U+FFFD, as a UTF-8 decoder does with a broken sequence and as
  Go's `encoding/json` does, so that every string can be stored as UTF-8; paired surrogate escapes
  (`"\\ud83d\\ude00"`) are the character they encode.
"""

from __future__ import annotations

import json
import math
import re
from array import array
from itertools import accumulate
from typing import Any, NoReturn

from clew.core.errors import BadRequest

__all__ = ["MAX_JSON_DEPTH", "json_depth", "load_json"]

MAX_JSON_DEPTH = 64

# The depth scan works on the UTF-8 bytes in C-speed passes: escape pairs go (so that `\"` is no
# quote), then everything but quotes and brackets; adjacent quotes go too (an empty string, or the end
# of one string and the start of the next with no bracket between: either way the parity of every
# later quote is kept), which leaves quotes only around strings that hold brackets, removed last.
_ESCAPE_PAIR = re.compile(rb"\\.", re.DOTALL)
_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b'"[]{}')
_QUOTED = re.compile(rb'"[^"]*(?:"|\Z)')  # an unterminated string runs to the end: always a match
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")

# Escapes that matter for surrogates, found left to right so that an escaped backslash (`\\`) is
# consumed whole and never read as the start of `\u`.
_ESCAPE = re.compile(
    r"\\(?:\\|u(?:[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|[dD][89a-fA-F][0-9a-fA-F]{2}))"
)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in `text`, brackets inside strings not counted: exact
    for valid JSON, an estimate for invalid JSON (which the parser refuses anyway)."""
    raw = text.encode("utf-8", "surrogatepass")
    if b"\\" in raw:
        raw = _ESCAPE_PAIR.sub(b"", raw)
    kept = raw.translate(None, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in kept:
        kept = _QUOTED.sub(b"", kept)
    return max(0, max(accumulate(array("b", kept.translate(_STEPS))), default=0))


def _lone_to_replacement(match: re.Match[str]) -> str:
    escape = match.group(0)
    # `\\` and a high+low pair are 2 and 12 characters; a lone surrogate escape is 6
    return "\\ufffd" if len(escape) == 6 else escape


def _reject_constant(name: str) -> NoReturn:
    raise BadRequest(f"invalid JSON: {name} is not a JSON number")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):
        raise BadRequest(f"invalid JSON: the number {literal[:40]} is out of range of a double")
    return value


def load_json(body: bytes) -> Any:
    """The document in `body`, or `BadRequest` naming what is wrong or which limit it is over."""
    try:
        text = body.decode(json.detect_encoding(body))
    except UnicodeDecodeError as exc:
        raise BadRequest(f"invalid JSON: not valid {exc.encoding}: {exc.reason}") from exc
    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise BadRequest(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    if _SURROGATE_ESCAPE.search(text):
        text = _ESCAPE.sub(_lone_to_replacement, text)
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except BadRequest:
        raise
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"invalid JSON: {exc}") from exc
