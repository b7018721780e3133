"""Redaction of personal data and secrets before anything is stored.

The rules compile to SQL expressions that the insert applies while the engine flattens the OTLP
requests (store/otlp_wire.py), so redaction stays columnar and a secret never reaches a part on disk.
Rules: attribute keys on a deny list (globs) are dropped, masked or hashed; values are scanned by
detectors (e-mail, Luhn-checked card numbers, IP addresses, bearer tokens / JWTs / API keys,
passwords in URLs and query strings) in span, resource, scope, event and link attributes, span and
event names and status messages. Keys on the allow list skip the detectors. docs/privacy.md.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clew.core.errors import ConfigError
from clew.store.sql import quote as _quote
from clew.store.transforms import Transforms

ACTIONS = ("drop", "mask", "hash")
DEFAULT_DENY = (
    "password", "passwd", "pwd", "secret", "*secret*", "*password*", "*token*", "*api_key*", "*apikey*",
    "authorization", "*authorization*", "cookie", "set-cookie", "*.cookie", "*.set_cookie", "*session_id*",
    "*private_key*", "*credit_card*", "*card_number*", "*ssn*",
)  # fmt: skip
DETECTORS = ("url_password", "token", "email", "card", "ip")
DEFAULT_DETECTORS = {"url_password": "mask", "token": "mask", "email": "hash", "card": "mask", "ip": "mask"}

# RE2 (the engine's regex library); non-capturing groups so a match is the whole secret
EMAIL = r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}"
CARD = r"\b(?:\d[ \-]?){12,18}\d\b"
IPV4 = r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b"
IPV6 = r"\b(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}\b|\b(?:[0-9A-Fa-f]{1,4}:){1,6}:(?:[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,5})?\b"
TOKEN = (
    r"(?i:bearer)\s+[A-Za-z0-9\-._~+/]+=*"
    r"|\beyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*"
    r"|\b(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{8,}"
    r"|\bAKIA[0-9A-Z]{16}\b|\bgh[pousr]_[A-Za-z0-9]{30,}|\bxox[abpr]-[A-Za-z0-9\-]{10,}"
)
# values stop at a quote or a backslash: a URL inside JSON text (a log body) ends at its string's end
URL_USERINFO = r"(://[^/\s:@\"\\]+:)[^/\s@\"\\]+@"
QUERY_SECRET = (
    r"(?i)([?&;](?:password|passwd|pwd|secret|token|access_token|api_key|apikey|key|auth)=)[^&#;\s\"\\]*"
)

STRING_TYPE = 1  # the AnyValue field number of string_value, as attribute lists store it


class RedactionError(ConfigError):
    pass


def _glob_regex(patterns: tuple[str, ...]) -> str:
    """Globs (`*token*`) as one case-insensitive, anchored RE2 alternation."""
    parts = [re.escape(p).replace(r"\*", ".*").replace(r"\?", ".") for p in patterns]
    return "(?i)^(?:" + "|".join(parts) + ")$" if parts else "^$a"  # `$a` never matches


@dataclass(frozen=True, slots=True)
class RedactionConfig:
    enabled: bool = True
    deny_keys: tuple[str, ...] = DEFAULT_DENY
    deny_action: str = "drop"
    allow_keys: tuple[str, ...] = ()
    detectors: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_DETECTORS))

    @classmethod
    def from_toml(cls, doc: dict[str, Any]) -> RedactionConfig:
        """The `[redaction]` table of clew.toml; unknown keys and actions are errors that name them."""
        known = {"enabled", "deny_keys", "extra_deny_keys", "deny_action", "allow_keys", "detectors"}
        for key in doc:
            if key not in known:
                raise RedactionError(f"[redaction]: unknown setting {key!r}")
        deny = tuple(doc.get("deny_keys", DEFAULT_DENY)) + tuple(doc.get("extra_deny_keys", ()))
        action = doc.get("deny_action", "drop")
        if action not in ACTIONS:
            raise RedactionError(
                f"[redaction] deny_action must be one of {', '.join(ACTIONS)}, got {action!r}"
            )
        detectors = dict(DEFAULT_DETECTORS)
        for name, value in dict(doc.get("detectors", {})).items():
            if name not in DETECTORS:
                raise RedactionError(
                    f"[redaction.detectors]: unknown detector {name!r}: use {', '.join(DETECTORS)}"
                )
            if value not in ("mask", "hash", "off"):
                raise RedactionError(f"[redaction.detectors] {name} must be mask, hash or off, got {value!r}")
            detectors[name] = value
        return cls(bool(doc.get("enabled", True)), deny, action, tuple(doc.get("allow_keys", ())), detectors)


def hash_key(data_dir: Path) -> tuple[int, int]:
    """The key of keyed hashes: random per data directory, kept so equal values hash equal across restarts."""
    path = Path(data_dir) / "redaction.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(16))
    raw = path.read_bytes()
    if len(raw) != 16:
        raise RedactionError(f"{path} must hold 16 bytes; remove it to make a new key (hashes will change)")
    return int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:], "little")


KEY_PARAMS = "({rk0:UInt64}, {rk1:UInt64})"


def _hashed(label: str, expr: str) -> str:
    return f"concat('[{label}:', lower(hex(sipHash64Keyed({KEY_PARAMS}, {expr}))), ']')"


class Compiler:
    """SQL for one configuration; `scrub(v)` is the value pipeline every string goes through."""

    def __init__(self, config: RedactionConfig) -> None:
        self.config = config
        self.denied_re = _quote(_glob_regex(config.deny_keys))
        self.allowed_re = _quote(_glob_regex(config.allow_keys))

    def denied(self, key: str) -> str:
        return f"match({key}, {self.denied_re})"

    def allowed(self, key: str) -> str:
        return f"match({key}, {self.allowed_re})"

    def _each_match(self, v: str, pattern: str, label: str, action: str, check: str | None = None) -> str:
        """Replace every match of `pattern` in `v`: masked, or hashed one by one (keyed), optionally
        only where `check` (SQL over `m`) holds."""
        pat = _quote(pattern)
        if action == "mask" and not check:
            return f"replaceRegexpAll({v}, {pat}, '[REDACTED:{label}]')"
        replacement = f"'[REDACTED:{label}]'" if action == "mask" else _hashed(label, "m")
        step = f"replaceAll(acc, m, {replacement})"
        if check:
            step = f"if({check}, {step}, acc)"
        return f"if(match({v}, {pat}), arrayFold((acc, m) -> {step}, extractAll({v}, {pat}), {v}), {v})"

    def scrub(self, s: str) -> str:
        """The detectors in a chain over `s`, a lambda variable (it is read more than once). A stage
        that reads its input more than once binds it to a lambda variable
        (`arrayMap(sN -> ..., [input])[1]`), so the SQL grows linearly with the stages instead of
        repeating the input inside every stage."""
        d = self.config.detectors
        stages: list[Any] = []
        if d["url_password"] != "off":
            stages.append(lambda x: f"replaceRegexpAll({x}, {_quote(URL_USERINFO)}, '\\\\1[REDACTED]@')")
            stages.append(lambda x: f"replaceRegexpAll({x}, {_quote(QUERY_SECRET)}, '\\\\1[REDACTED]')")
        if d["token"] != "off":
            stages.append(lambda x: self._each_match(x, TOKEN, "token", d["token"]))
        if d["email"] != "off":
            stages.append(lambda x: self._each_match(x, EMAIL, "email", d["email"]))
        if d["card"] != "off":
            digits = "arrayMap(c -> toUInt8(c), arrayReverse(extractAll(m, '\\\\d')))"
            luhn = (
                f"arraySum(arrayMap((y, i) -> if(i % 2 = 0, if(y * 2 > 9, y * 2 - 9, y * 2), y), "
                f"{digits}, arrayEnumerate({digits}))) % 10 = 0"
            )
            stages.append(lambda x: self._each_match(x, CARD, "card", d["card"], luhn))
        if d["ip"] != "off":
            stages.append(lambda x: self._each_match(x, IPV4, "ip", d["ip"]))
            stages.append(lambda x: self._each_match(x, IPV6, "ip", d["ip"]))
        if not stages:
            return s
        out = s
        for n, stage in enumerate(stages):
            step = stage(f"s{n}")
            out = stage(out) if step.count(f"s{n}") == 1 else f"arrayMap(s{n} -> {step}, [{out}])[1]"
        # one pass of one loose regex first: most values hold nothing to redact and skip the chain
        return f"if({self.suspicious(s)}, {out}, {s})"

    def _any_pattern(self) -> str:
        """A looser pattern than the detectors, without word boundaries (which keep RE2 off its DFA):
        it only decides whether a value goes through the chain at all."""
        d = self.config.detectors
        parts = []
        if d["url_password"] != "off":
            parts += [
                "://[^/\\s:@]+:[^/\\s@]+@",
                "(?i:[?&;](?:password|passwd|pwd|secret|token|access_token|api_key|apikey|key|auth)=)",
            ]
        if d["token"] != "off":
            parts.append("(?i:bearer\\s)|eyJ|(?:sk|pk|rk)_(?:live|test)_|AKIA|gh[pousr]_|xox[abpr]-")
        if d["email"] != "off":
            parts.append("@[A-Za-z0-9.\\-]+\\.[A-Za-z]")
        if d["card"] != "off":
            parts.append("\\d[\\d \\-]{11,}\\d")
        if d["ip"] != "off":
            parts += [
                "\\d{1,3}\\.\\d{1,3}\\.\\d{1,3}\\.\\d{1,3}",
                "[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}",
            ]
        return "|".join(parts)

    def suspicious(self, v: str) -> str:
        """Whether `v` may hold anything a detector would replace (the loose pattern above)."""
        return f"match({v}, {_quote(self._any_pattern())})"

    def _denied_value(self, v: str) -> str:
        return "'[REDACTED]'" if self.config.deny_action == "mask" else _hashed("hash", v)

    def scrub_flag(self, key: str, text_type: str | None = None) -> str:
        """Whether a value goes through the detectors: a string whose key is not on the allow list."""
        parts = [f"{text_type} = {STRING_TYPE}"] if text_type else []
        if self.config.allow_keys:
            parts.append(f"NOT {self.allowed(key)}")
        return " AND ".join(parts) or "true"

    def map_texts(self, column: str) -> str:
        """A string map's values as the detectors see them: '' for allowed keys (restored after)."""
        if not self.config.allow_keys:
            return f"mapValues({column})"
        return (
            f"arrayMap((k, v) -> if({self.scrub_flag('k')}, v, ''), mapKeys({column}), mapValues({column}))"
        )

    def list_texts(self, column: str) -> str:
        """An attribute list's texts as the detectors see them: '' for numbers, booleans, complex
        values (their text must stay parseable) and allowed keys."""
        return f"arrayMap(a -> if({self.scrub_flag('a.1', 'a.2')}, a.3, ''), {column})"

    def string_map(self, column: str, scrubbed: str) -> str:
        """The map rebuilt from its keys and its `scrubbed` values, denied keys dropped or replaced."""
        keys = f"mapKeys({column})"
        if self.config.allow_keys or self.config.deny_action != "drop":
            # `o` the value as sent: allowed keys keep it, denied ones are masked or hashed from it
            value = f"if({self.scrub_flag('k')}, v, o)" if self.config.allow_keys else "v"
            if self.config.deny_action != "drop":
                value = f"if({self.denied('k')}, {self._denied_value('o')}, {value})"
            scrubbed = f"arrayMap((k, o, v) -> {value}, {keys}, mapValues({column}), {scrubbed})"
        rebuilt = f"mapFromArrays({keys}, {scrubbed})"
        if self.config.deny_action == "drop":
            return f"mapFilter((k, v) -> NOT {self.denied('k')}, {rebuilt})"
        return rebuilt

    def other_map(self, column: str) -> str:
        """Numbers, booleans and complex values under a denied key are dropped whatever the action."""
        return f"mapFilter((k, v) -> NOT {self.denied('k')}, {column})"

    def attribute_list(self, column: str, scrubbed: str) -> str:
        """(key, type, text) tuples of scopes, events and links, with their `scrubbed` texts."""
        text = f"if({self.scrub_flag('a.1', 'a.2')}, t, a.3)"
        if self.config.deny_action == "drop":
            rebuilt = f"arrayMap((a, t) -> (a.1, a.2, {text}), {column}, {scrubbed})"
            return f"arrayFilter(a -> NOT {self.denied('a.1')}, {rebuilt})"
        masked = f"if({self.denied('a.1')}, if(a.2 = {STRING_TYPE}, {self._denied_value('a.3')}, ''), {text})"
        return f"arrayMap((a, t) -> (a.1, a.2, {masked}), {column}, {scrubbed})"


NEWLINE = "'\\n'"
STRINGS = "clew_strings"  # every string of a row that the detectors look at
SCRUBBED = "clew_scrubbed"  # ... after them, in one pass
STARTS = "clew_starts"  # where the parts of a span (attributes, resource, scope, ...) start in them


def _lengths(lists: str) -> str:
    return f"arrayMap(l -> length(l), {lists})"


def _nested(column: str, start: str, rebuild: Any) -> str:
    """An array of attribute lists rebuilt from one slice of the scrubbed strings, list by list."""
    lengths = _lengths(column)
    starts = f"arrayMap((c, n) -> {start} + c - n, arrayCumSum({lengths}), {lengths})"
    return f"arrayMap((list, o) -> {rebuild('list', f'arraySlice({SCRUBBED}, o, length(list))')}, {column}, {starts})"


def _scrubbed(c: Compiler, strings: list[str]) -> tuple[str, str]:
    """The row's strings as one array (`STRINGS`), and the SQL of that array scrubbed (`SCRUBBED`)."""
    flat = f"arrayConcat({', '.join(strings)})"
    if all(mode == "off" for mode in c.config.detectors.values()):
        return flat, STRINGS
    # one regex over the row's strings joined decides whether the row needs the chain at all
    # (a match across a joint only sends a row through the chain, which checks each string)
    gate = c.suspicious(f"arrayStringConcat({STRINGS}, {NEWLINE})")
    return flat, f"if({gate}, arrayMap(s -> {c.scrub('s')}, {STRINGS}), {STRINGS})"


def transforms(config: RedactionConfig, key: tuple[int, int] = (0, 0)) -> Transforms:
    """Every string a span carries (name, status message, string attributes of span, resource, scope,
    events and links, event names) is gathered into one array and scrubbed by one detector chain,
    then sliced back into its columns: the chain is large SQL, and the engine analyses it once per
    insert instead of once per column (bench/RESULTS.md)."""
    if not config.enabled:
        return Transforms({})
    c = Compiler(config)
    events, links = "arrayFlatten({in:events_attributes})", "arrayFlatten({in:links_attributes})"
    strings = [
        "[{in:name}, {in:status_message}]",
        c.map_texts("{in:attributes_string}"),
        c.map_texts("{in:resource_string}"),
        c.list_texts("{in:scope_attributes}"),
        "{in:events_name}",
        c.list_texts(events),
        c.list_texts(links),
    ]
    flat, chain = _scrubbed(c, strings)
    # where each part starts in the scrubbed array (1-based)
    sizes = [
        "length({in:attributes_string})",
        "length({in:resource_string})",
        "length({in:scope_attributes})",
        "length({in:events_name})",
        f"arraySum({_lengths('{in:events_attributes}')})",
    ]
    offsets = f"arrayCumSum([3, {', '.join(sizes)}])"
    attrs, res, scope, names, event_attrs, link_attrs = (f"{STARTS}[{i}]" for i in range(1, 7))

    def part(start: str, size: str) -> str:
        return f"arraySlice({SCRUBBED}, {start}, {size})"

    out: dict[str, str] = {
        "name": f"{SCRUBBED}[1]",
        "status_message": f"{SCRUBBED}[2]",
        "attributes_string": c.string_map("{in:attributes_string}", part(attrs, sizes[0])),
        "resource_string": c.string_map("{in:resource_string}", part(res, sizes[1])),
        "scope_attributes": c.attribute_list("{in:scope_attributes}", part(scope, sizes[2])),
        "events_name": part(names, sizes[3]),
        "events_attributes": _nested("{in:events_attributes}", event_attrs, c.attribute_list),
        "links_attributes": _nested("{in:links_attributes}", link_attrs, c.attribute_list),
    }
    for prefix in ("attributes", "resource"):
        for suffix in ("int", "float", "bool", "complex"):
            out[f"{prefix}_{suffix}"] = c.other_map(f"{{in:{prefix}_{suffix}}}")
    return Transforms(out, {STRINGS: flat, SCRUBBED: chain, STARTS: offsets}, {"rk0": key[0], "rk1": key[1]})


# body types (AnyValue field numbers) whose text is a number or a boolean: not scrubbed, so it still
# reads as what it was
_SCALAR_BODIES = "(2, 3, 4)"


def log_transforms(config: RedactionConfig, key: tuple[int, int] = (0, 0)) -> Transforms:
    """The same detectors over a log record: its body (text, or the JSON a structured body became),
    its string attributes and its resource's, its scope's attributes; denied keys go as in spans."""
    if not config.enabled:
        return Transforms({})
    c = Compiler(config)
    body = f"if({{in:body_type}} IN {_SCALAR_BODIES}, '', {{in:body}})"
    strings = [
        f"[{body}]",
        c.map_texts("{in:attributes_string}"),
        c.map_texts("{in:resource_string}"),
        c.list_texts("{in:scope_attributes}"),
    ]
    flat, chain = _scrubbed(c, strings)
    sizes = [
        "length({in:attributes_string})",
        "length({in:resource_string})",
        "length({in:scope_attributes})",
    ]
    offsets = f"arrayCumSum([2, {', '.join(sizes)}])"
    attrs, res, scope = (f"{STARTS}[{i}]" for i in range(1, 4))

    def part(start: str, size: str) -> str:
        return f"arraySlice({SCRUBBED}, {start}, {size})"

    out: dict[str, str] = {
        "body": f"if({{in:body_type}} IN {_SCALAR_BODIES}, {{in:body}}, {SCRUBBED}[1])",
        "attributes_string": c.string_map("{in:attributes_string}", part(attrs, sizes[0])),
        "resource_string": c.string_map("{in:resource_string}", part(res, sizes[1])),
        "scope_attributes": c.attribute_list("{in:scope_attributes}", part(scope, sizes[2])),
    }
    for prefix in ("attributes", "resource"):
        for suffix in ("int", "float", "bool", "complex"):
            out[f"{prefix}_{suffix}"] = c.other_map(f"{{in:{prefix}_{suffix}}}")
    return Transforms(out, {STRINGS: flat, SCRUBBED: chain, STARTS: offsets}, {"rk0": key[0], "rk1": key[1]})
