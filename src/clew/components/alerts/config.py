"""`[alerting]` and `[[slos]]` of clew.toml, and SLOs as `PUT /api/v1/slos` takes them (JSON)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import httpx

from clew.core.durations import DurationError, parse_duration
from clew.core.errors import BadRequest, ConfigError
from clew.core.model import DEFAULT_TENANT

S = 10**9
SPAN_KINDS = {"any": None, "internal": 1, "server": 2, "client": 3, "producer": 4, "consumer": 5}
MAX_SLOS = 100
MAX_THRESHOLD_MS = 10_000  # the RED minutes' largest bucket bound: beyond it every span is "fast"
FORMATS = ("json", "alertmanager", "slack")


class AlertingError(ConfigError):
    pass


@dataclass(frozen=True, slots=True)
class Slo:
    """An objective on the spans of a service (an operation, a span kind): `availability` (the
    share without error) or `latency` (the share at most `threshold_ms`), over `window` ns."""

    name: str
    service: str
    objective: float  # percent, 99.5
    window: int = 30 * 86400 * S
    sli: str = "availability"
    operation: str = ""
    span_kind: str = "server"
    threshold_ms: float = 0.0
    tenant: str = DEFAULT_TENANT

    @property
    def budget(self) -> float:
        """The share of bad events the objective allows."""
        return 1 - self.objective / 100

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["window"] = f"{self.window // S}s"
        del doc["tenant"]
        return doc


@dataclass(frozen=True, slots=True)
class BurnWindow:
    """Google's SRE workbook: alert when the error budget burns `burn_rate` times too fast over
    both the long and the short window (the short one makes the alert stop soon after the burn)."""

    severity: str
    long: int
    short: int
    burn_rate: float


DEFAULT_WINDOWS = (
    BurnWindow("page", 3600 * S, 300 * S, 14.4),
    BurnWindow("ticket", 6 * 3600 * S, 1800 * S, 6.0),
)


@dataclass(frozen=True, slots=True)
class Webhook:
    url: str
    format: str = "json"  # json, alertmanager or slack
    timeout_s: float = 5.0
    retries: int = 3


@dataclass(frozen=True, slots=True)
class AlertingConfig:
    slos: tuple[Slo, ...] = ()
    windows: tuple[BurnWindow, ...] = DEFAULT_WINDOWS
    webhooks: tuple[Webhook, ...] = ()
    silent_after: int = 600 * S  # a service that sent spans and then none for this long; 0: off
    evaluate_every: int = 30 * S
    pending_for: int = 0  # a condition holds this long before the alert fires
    resolve_after: int = 120 * S  # and is false this long before it resolves (no flapping)
    max_commit_lag: int = 30 * S  # acknowledged spans waiting longer for their commit: an alert
    broken_share: float = 0.2  # a service whose traces are broken this often (completeness); 0: off
    broken_window: int = 900 * S
    broken_min_traces: int = 20
    external_url: str = "http://127.0.0.1:16686"  # where notifications link traces to

    @classmethod
    def from_toml(cls, alerting: dict[str, Any], slos: list[Any]) -> AlertingConfig:
        known = {"windows", "webhooks", "silent_after", "evaluate_every", "pending_for", "resolve_after",
                 "external_url", "max_commit_lag", "broken_share", "broken_window", "broken_min_traces"}  # fmt: skip
        if not isinstance(alerting, dict):
            raise AlertingError("[alerting] must be a table")
        for key in alerting:
            if key not in known:
                raise AlertingError(f"[alerting]: unknown setting {key!r}")
        values: dict[str, Any] = {}
        for key in (
            "silent_after",
            "evaluate_every",
            "pending_for",
            "resolve_after",
            "max_commit_lag",
            "broken_window",
        ):
            if key in alerting:
                values[key] = _duration(alerting[key], f"[alerting] {key}")
        if values.get("evaluate_every", 1) <= 0:
            raise AlertingError("[alerting] evaluate_every must be positive")
        share = alerting.get("broken_share", 0.2)
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
            raise AlertingError("[alerting] broken_share is a share from 0 (off) to 1")
        values["broken_share"] = float(share)
        least = alerting.get("broken_min_traces", 20)
        if isinstance(least, bool) or not isinstance(least, int) or least < 1:
            raise AlertingError("[alerting] broken_min_traces is a whole number from 1")
        values["broken_min_traces"] = least
        if "external_url" in alerting:
            values["external_url"] = str(alerting["external_url"]).rstrip("/")
        if "windows" in alerting:
            values["windows"] = tuple(
                _window(w, i) for i, w in enumerate(_tables(alerting["windows"], "windows"))
            )
            severities = [w.severity for w in values["windows"]]
            if len(set(severities)) != len(severities):
                raise AlertingError("[[alerting.windows]]: each severity once (it names the alert)")
        if "webhooks" in alerting:
            values["webhooks"] = tuple(
                _webhook(w, i) for i, w in enumerate(_tables(alerting["webhooks"], "webhooks"))
            )
        if not isinstance(slos, list):
            raise AlertingError("slos must be [[slos]] tables")
        try:
            values["slos"] = parse_slos(slos, DEFAULT_TENANT, tenant_key=True)
        except BadRequest as exc:
            raise AlertingError(f"[[slos]]: {exc.message}") from exc
        return cls(**values)


def parse_slos(docs: list[Any], tenant: str, tenant_key: bool = False) -> tuple[Slo, ...]:
    """SLOs from tables or JSON objects; BadRequest names what is wrong. `tenant_key`: a `tenant`
    field may say whose spans an SLO is about (clew.toml; the API takes the caller's)."""
    if not isinstance(docs, list) or len(docs) > MAX_SLOS:
        raise BadRequest(f"SLOs are a list of at most {MAX_SLOS} objects")
    out: list[Slo] = []
    for i, doc in enumerate(docs):
        where = f"SLO number {i + 1}"
        if not isinstance(doc, dict):
            raise BadRequest(f"{where} is not an object")
        allowed = {"name", "service", "objective", "window", "sli", "operation", "span_kind", "threshold_ms"}
        allowed |= {"tenant"} if tenant_key else set()
        unknown = sorted(set(doc) - allowed)
        if unknown:
            raise BadRequest(f"{where}: unknown field {unknown[0]!r}")
        name, service = doc.get("name"), doc.get("service")
        if not isinstance(name, str) or not 0 < len(name) <= 200:
            raise BadRequest(f"{where}: name is a string of 1 to 200 characters")
        if not isinstance(service, str) or not 0 < len(service) <= 1024:
            raise BadRequest(f"{where} ({name}): service is a string of 1 to 1024 characters")
        objective = doc.get("objective")
        if isinstance(objective, bool) or not isinstance(objective, int | float) or not 0 < objective < 100:
            raise BadRequest(f"{where} ({name}): objective is a percentage between 0 and 100, such as 99.5")
        sli = doc.get("sli", "availability")
        if sli not in ("availability", "latency"):
            raise BadRequest(f"{where} ({name}): sli is availability or latency")
        threshold = doc.get("threshold_ms", 0.0)
        # `abs(x) < 1e9` refuses NaN, infinities and integers too large for a float (OverflowError)
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not abs(threshold) < 1e9:
            raise BadRequest(f"{where} ({name}): threshold_ms is a number (milliseconds)")
        if sli == "availability":
            threshold = 0.0  # only a latency SLO has one
        if sli == "latency" and not 0 < threshold <= MAX_THRESHOLD_MS:
            raise BadRequest(
                f"{where} ({name}): a latency SLO needs threshold_ms from 0 to {MAX_THRESHOLD_MS}, such as 500"
            )
        span_kind = doc.get("span_kind", "server")
        if not isinstance(span_kind, str) or span_kind not in SPAN_KINDS:
            raise BadRequest(f"{where} ({name}): span_kind is one of {', '.join(SPAN_KINDS)}")
        operation = doc.get("operation", "")
        if not isinstance(operation, str) or len(operation) > 1024:
            raise BadRequest(f"{where} ({name}): operation is a string of at most 1024 characters")
        window = _duration(doc.get("window", "30d"), f"{where} ({name}) window", BadRequest)
        if window < 60 * S:
            raise BadRequest(f"{where} ({name}): the window is at least a minute")
        owner = doc.get("tenant", tenant) if tenant_key else tenant
        if not isinstance(owner, str) or not owner:
            raise BadRequest(f"{where} ({name}): tenant is a name")
        if any(s.name == name and s.tenant == owner for s in out):
            raise BadRequest(f"{where}: the name {name!r} is taken")
        out.append(
            Slo(name, service, float(objective), window, sli, operation, span_kind, float(threshold), owner)
        )
    return tuple(out)


def _tables(value: Any, name: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise AlertingError(f"[alerting] {name} must be [[alerting.{name}]] tables")
    return value


def _window(doc: dict[str, Any], i: int) -> BurnWindow:
    where = f"[[alerting.windows]] number {i + 1}"
    if set(doc) - {"severity", "long", "short", "burn_rate"} or not {"long", "short", "burn_rate"} <= set(
        doc
    ):
        raise AlertingError(f"{where}: takes severity, long, short and burn_rate")
    rate = doc["burn_rate"]
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate < 1e6:
        raise AlertingError(f"{where}: burn_rate is a positive number")
    long, short = _duration(doc["long"], f"{where} long"), _duration(doc["short"], f"{where} short")
    if not 0 < short <= long:
        raise AlertingError(f"{where}: short is positive and at most long")
    return BurnWindow(str(doc.get("severity", "page")), long, short, float(rate))


def _webhook(doc: dict[str, Any], i: int) -> Webhook:
    where = f"[[alerting.webhooks]] number {i + 1}"
    if set(doc) - {"url", "format", "timeout_s", "retries"} or "url" not in doc:
        raise AlertingError(f"{where}: takes url, format, timeout_s and retries")
    url = str(doc["url"])
    if not url.startswith(("http://", "https://")):
        raise AlertingError(f"{where}: url is http:// or https://")
    try:
        httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise AlertingError(f"{where}: url {url[:100]!r} is not a URL ({exc})") from None
    fmt = doc.get("format", "json")
    if fmt not in FORMATS:
        raise AlertingError(f"{where}: format is one of {', '.join(FORMATS)}")
    timeout, retries = doc.get("timeout_s", 5.0), doc.get("retries", 3)
    if not isinstance(timeout, int | float) or not 0 < timeout <= 60:
        raise AlertingError(f"{where}: timeout_s is from 0 to 60")
    if not isinstance(retries, int) or not 0 <= retries <= 10:
        raise AlertingError(f"{where}: retries is from 0 to 10")
    return Webhook(url, fmt, float(timeout), retries)


def _duration(value: Any, where: str, error: type[Exception] = AlertingError) -> int:
    try:
        return parse_duration(str(value), allow_days=True)
    except DurationError as exc:
        raise error(f"{where}: {exc.message}") from exc
