"""Settings, resolved as defaults < clew.toml < CLEW_* environment variables < command-line flags."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from clew.api.native import DEFAULT_FULL_TRACE_SPANS
from clew.components.alerts import AlertingConfig
from clew.components.enrichment import EnrichConfig, EnrichError
from clew.components.logs import LogsConfig
from clew.components.redaction import RedactionConfig, RedactionError
from clew.components.retention import RetentionConfig
from clew.components.sampling import SamplingConfig
from clew.core.errors import ConfigError
from clew.core.identity import ApiKey
from clew.core.limits import LimitsConfig
from clew.gateway.keys import api_key

__all__ = ["ConfigError", "Settings"]

DEFAULT_CONFIG_FILE = "clew.toml"
# settings that are whole tables of clew.toml (each a component's config), not single values
TABLES = ("redaction", "enrich", "sampling", "retention", "keys", "limits", "alerting", "slos", "logs")
# tables of clew.toml whose keys are plain settings, grouped for readers of the file
GROUPS: dict[str, tuple[str, ...]] = {
    "ingest": (
        "fsync",
        "wal_dir",
        "commit_interval_ms",
        "commit_spans",
        "commit_idle_interval_ms",
        "commit_busy_spans",
        "committers",
        "memory_limit_mib",
        "engine_nice",
        "max_queue_spans",
        "max_batch_spans",
    ),
    "storage": ("url", "cluster", "instance_lease_s"),
}
# keys of a group's table that name a setting of another name
ALIASES = {("storage", "url"): "storage"}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path = Path("./clew-data")
    # where spans are stored: "embedded" (the engine in this process, in data_dir) or a ClickHouse
    # server, clickhouse://user:password@host:8123/database (https:// or clickhouses:// for TLS)
    storage: str = "embedded"
    # with a server: the ClickHouse cluster the tables are replicated and sharded over ("" none)
    cluster: str = ""
    # with a server: an instance that has not renewed its lease for this long is taken for gone,
    # and the oldest live one runs the housekeeping (sampling, retention) for all
    instance_lease_s: int = 15
    host: str = "127.0.0.1"
    otlp_grpc_port: int = 4317
    otlp_http_port: int = 4318
    zipkin_port: int = 9411
    http_port: int = 16686
    tempo_port: int = 3200  # Tempo's HTTP API, for Grafana's Tempo data source
    # the UI opens a trace of more spans from its skeleton and fetches each span's details when shown
    full_trace_spans: int = DEFAULT_FULL_TRACE_SPANS
    max_body_bytes: int = 16 * 1024 * 1024
    # a body that sends nothing for this long is answered 408
    body_timeout_s: int = 30
    # bytes of request bodies received at once, all clients together; past it, 503 + Retry-After
    max_inflight_body_bytes: int = 256 * 1024 * 1024
    # open HTTP connections and requests at once; past it, 503
    max_connections: int = 1024
    # acknowledged spans not yet committed (the log), past which requests get 503: room for the
    # committers' segments in flight and one filling
    max_queue_spans: int = 300_000
    max_batch_spans: int = 100_000
    # the write-ahead log (ingest/wal.py): "auto" a memory-backed directory per data directory;
    # "off" none, a request is answered once its insert returned; or a directory, which must be
    # memory-backed: the log holds requests before redaction
    wal_dir: str = "auto"
    commit_interval_ms: int = 500
    commit_spans: int = 100_000
    # a log holding fewer than commit_busy_spans is committed this often (reads commit it first):
    # each insert costs the engine ~0.13 s of CPU whatever its size, so at the demo's 31 spans/s the
    # server used 5.3% of a core committing every 5 s and 3.3% every 10 s (bench/RESULTS.md)
    commit_idle_interval_ms: int = 10_000
    commit_busy_spans: int = 5000
    # segments of the log inserted at once, each by its own thread and engine session
    committers: int = 2
    # the committers insert side by side only while the server's resident memory leaves room for
    # another insert under this (MiB; 0, the default: no limit); past it they insert one at a time.
    # 1024 held 32 clients x 2 MB requests to 979-1,075 MiB at ~67-70k spans/s (bench/RESULTS.md)
    memory_limit_mib: int = 0
    # with the log: the committers and the embedded engine's threads run at this nice value (Linux;
    # 0: the receivers' own), so acknowledgements queue less behind inserts and merges; at 40,000
    # spans/s with reads on 2 cores, ack p99 under 50 ms in 10 runs of 12, against 1 of 8 (bench/RESULTS.md)
    engine_nice: int = 10
    # power-loss durability: a request is answered once its spans are in a part the engine has
    # fsynced (the spans table itself, redacted, is the log); the memory-backed log is not used
    fsync: bool = False
    # listening beyond loopback without API keys is refused unless this says it is meant
    insecure: bool = False
    # TLS for every port (OTLP/gRPC included) when both are set: PEM certificate chain and key
    tls_cert: str = ""
    tls_key: str = ""
    keys: tuple[ApiKey, ...] = ()
    limits: LimitsConfig = field(
        default_factory=LimitsConfig
    )  # clew.toml [limits] only  # clew.toml [[keys]] only; `clew keys create` adds to keys.json
    redaction: RedactionConfig = field(default_factory=RedactionConfig)  # clew.toml [redaction] only
    enrich: EnrichConfig = field(default_factory=EnrichConfig)  # clew.toml [enrich] only
    sampling: SamplingConfig = field(default_factory=SamplingConfig)  # clew.toml [sampling] only
    retention: RetentionConfig = field(default_factory=RetentionConfig)  # [retention] (and [sampling])
    alerting: AlertingConfig = field(default_factory=AlertingConfig)  # [alerting] and [[slos]]
    logs: LogsConfig = field(default_factory=LogsConfig)  # clew.toml [logs] only

    @classmethod
    def load(cls, config_file: Path | None = None, **flags: Any) -> Settings:
        settings = cls()
        path = config_file or (Path(DEFAULT_CONFIG_FILE) if Path(DEFAULT_CONFIG_FILE).exists() else None)
        if path is not None:
            try:
                doc = tomllib.loads(Path(path).read_text())
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"cannot read config file {path}: {exc}") from exc
            section = doc.get("serve", {k: v for k, v in doc.items() if k not in (*TABLES, *GROUPS)})
            settings = settings._with(section, f"config file {path}")
            for group, names in GROUPS.items():
                table = doc.get(group, {})
                unknown = sorted(set(table) - set(names)) if isinstance(table, dict) else [group]
                if unknown:
                    raise ConfigError(f"config file {path}: unknown setting {group}.{unknown[0]}")
                table = {ALIASES.get((group, k), k): v for k, v in table.items()}
                settings = settings._with(table, f"config file {path} [{group}]")
            try:
                sampling = SamplingConfig.from_toml(doc.get("sampling", {}))
                settings = replace(
                    settings,
                    redaction=RedactionConfig.from_toml(doc.get("redaction", {})),
                    enrich=EnrichConfig.from_toml(doc.get("enrich", {})),
                    sampling=sampling,
                    retention=RetentionConfig.from_toml(
                        doc.get("retention", {}),
                        doc.get("sampling", {}),
                        sampling.full_fidelity if sampling.enabled else None,
                    ),
                    keys=_keys(doc.get("keys", [])),
                    limits=LimitsConfig.from_toml(doc.get("limits", {})),
                    alerting=AlertingConfig.from_toml(doc.get("alerting", {}), doc.get("slos", [])),
                    logs=LogsConfig.from_toml(doc.get("logs", {})),
                )
            except (RedactionError, EnrichError, ConfigError) as exc:
                raise ConfigError(f"config file {path}: {exc}") from exc
        env = {
            f.name: os.environ[f"CLEW_{f.name.upper()}"]
            for f in fields(cls)
            if f"CLEW_{f.name.upper()}" in os.environ and f.name not in TABLES
        }
        settings = settings._with(env, "environment")
        return settings._with({k: v for k, v in flags.items() if v is not None}, "flags")

    def _with(self, values: dict[str, Any], source: str) -> Settings:
        known = {f.name: f for f in fields(self) if f.name not in TABLES}
        changes: dict[str, Any] = {}
        for key, value in values.items():
            name = key.replace("-", "_")
            if name not in known:
                if source.startswith("config"):
                    raise ConfigError(f"{source}: unknown setting {key!r}")
                continue
            default = known[name].default
            try:
                if isinstance(default, Path):
                    changes[name] = Path(value)
                elif isinstance(default, bool):
                    changes[name] = _boolean(value)
                elif isinstance(default, int):
                    changes[name] = int(value)
                else:
                    changes[name] = str(value)
            except (TypeError, ValueError) as exc:
                kind = "true or false" if isinstance(default, bool) else "a number"
                raise ConfigError(f"{source}: {key} must be {kind}, got {value!r}") from exc
        return replace(self, **changes)


def _keys(tables: Any) -> tuple[ApiKey, ...]:
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError("keys must be [[keys]] tables")
    return tuple(api_key(t, f"[[keys]] number {i + 1}") for i, t in enumerate(tables))


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ValueError(value)
