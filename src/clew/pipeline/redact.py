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
URL_USERINFO = r"(://[^/\s:@]+:)[^/\s@]+@"
QUERY_SECRET = (
    r"(?i)([?&;](?:password|passwd|pwd|secret|token|access_token|api_key|apikey|key|auth)=)[^&#;\s]*"
)

STRING_TYPE = 1  # the AnyValue field number of string_value, as attribute lists store it


class RedactionError(ValueError):
    pass


def _glob_regex(patterns: tuple[str, ...]) -> str:
    """Globs (`*token*`) as one case-insensitive, anchored RE2 alternation."""
    parts = [re.escape(p).replace(r"\*", ".*").replace(r"\?", ".") for p in patterns]
    return "(?i)^(?:" + "|".join(parts) + ")$" if parts else "^$a"  # `$a` never matches


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


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
        replacement = f"'[REDACTED:{label}]'" if action == "mask" else _hashed(label, "m")
        step = f"replaceAll(acc, m, {replacement})"
        if check:
            step = f"if({check}, {step}, acc)"
        pat = _quote(pattern)
        return f"if(match({v}, {pat}), arrayFold((acc, m) -> {step}, extractAll({v}, {pat}), {v}), {v})"

    def scrub(self, v: str) -> str:
        """Detectors in a chain. Each stage binds its input to a lambda variable
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
            return v
        out = "s"
        for n, stage in enumerate(stages):
            out = f"arrayMap(s{n} -> {stage(f's{n}')}, [{out}])[1]"
        # one pass of one loose regex first: most values hold nothing to redact and skip the chain
        return f"arrayMap(s -> if(match(s, {_quote(self._any_pattern())}), {out}, s), [{v}])[1]"

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

    def _denied_value(self, v: str) -> str:
        return "'[REDACTED]'" if self.config.deny_action == "mask" else _hashed("hash", v)

    def _any(self, v: str) -> str:
        return f"match({v}, {_quote(self._any_pattern())})"

    def string_map(self, column: str) -> str:
        body = f"if({self.allowed('k')}, v, {self.scrub('v')})"
        if self.config.deny_action != "drop":
            body = f"if({self.denied('k')}, {self._denied_value('v')}, {body})"
            rebuilt = f"mapApply((k, v) -> (k, {body}), {column})"
        else:
            rebuilt = (
                f"mapApply((k, v) -> (k, {body}), mapFilter((k, v) -> NOT {self.denied('k')}, {column}))"
            )
        # rebuilding a map costs more than looking at it: most maps need no change at all
        needed = (
            f"arrayExists(k -> {self.denied('k')}, mapKeys({column})) "
            f"OR arrayExists(v -> {self._any('v')}, mapValues({column}))"
        )
        return f"if({needed}, {rebuilt}, {column})"

    def other_map(self, column: str) -> str:
        """Numbers, booleans and complex values under a denied key are dropped whatever the action."""
        filtered = f"mapFilter((k, v) -> NOT {self.denied('k')}, {column})"
        return f"if(arrayExists(k -> {self.denied('k')}, mapKeys({column})), {filtered}, {column})"

    def attribute_list(self, column: str) -> str:
        """(key, type, text) tuples of scopes, events and links."""
        value = f"if(a.2 = {STRING_TYPE} AND NOT {self.allowed('a.1')}, {self.scrub('a.3')}, a.3)"
        if self.config.deny_action == "drop":
            return f"arrayMap(a -> (a.1, a.2, {value}), arrayFilter(a -> NOT {self.denied('a.1')}, {column}))"
        masked = (
            f"if({self.denied('a.1')}, if(a.2 = {STRING_TYPE}, {self._denied_value('a.3')}, ''), {value})"
        )
        return f"arrayMap(a -> (a.1, a.2, {masked}), {column})"


def transforms(config: RedactionConfig) -> dict[str, str]:
    """Column -> SQL over the unredacted column of the same name (`{col}` in the expression)."""
    if not config.enabled:
        return {}
    c = Compiler(config)
    out: dict[str, str] = {"name": c.scrub("{col}"), "status_message": c.scrub("{col}")}
    for prefix in ("attributes", "resource"):
        out[f"{prefix}_string"] = c.string_map("{col}")
        for suffix in ("int", "float", "bool", "complex"):
            out[f"{prefix}_{suffix}"] = c.other_map("{col}")
    out["scope_attributes"] = c.attribute_list("{col}")
    out["events_name"] = f"arrayMap(n -> {c.scrub('n')}, {{col}})"
    for column in ("events_attributes", "links_attributes"):
        out[column] = f"arrayMap(list -> {c.attribute_list('list')}, {{col}})"
    return out
