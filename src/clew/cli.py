"""The `clew` command line."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
import httpx
from click.decorators import FC

from clew.config import Settings
from clew.core.errors import ConfigError, StoreError

if TYPE_CHECKING:
    from clew.assembly import Assembly
    from clew.gateway.keys import FileKeyRing


def _fail(message: str) -> NoReturn:
    raise click.ClickException(message)


@click.group()
@click.version_option(package_name="clew")
def main() -> None:
    """clew: a distributed tracing backend (OTLP and Zipkin in, ClickHouse's engine underneath)."""


def _port(name: str, default: int) -> Callable[[FC], FC]:
    return click.option(
        f"--{name}",
        type=click.IntRange(0, 65535),
        default=None,
        help=f"port (default {default}; 0 picks a free one)",
    )


def _as_caller(f: FC) -> FC:
    """`--tenant` and `--key`: whose data a command reads, as the API takes them."""
    f = click.option("--tenant", help="the tenant to read (X-Scope-OrgID; default: the key's, or 'default')")(
        f
    )
    return click.option(
        "--key", "api_key", envvar="CLEW_API_KEY", help="API key when the server has keys (or CLEW_API_KEY)"
    )(f)


def _storage(f: FC) -> FC:
    """`--storage` and `--cluster`: the store, when it is not the embedded engine in --data-dir."""
    f = click.option(
        "--cluster",
        help="with a ClickHouse server: replicate and shard the tables over this cluster (CLEW_CLUSTER)",
    )(f)
    return click.option(
        "--storage",
        help="'embedded' (default: the engine in --data-dir) or clickhouse://user:pass@host:8123/db "
        "(https://... for TLS; or CLEW_STORAGE, [storage] url in clew.toml)",
    )(f)


@main.command()
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="clew.toml to read")
@click.option("--data-dir", type=click.Path(path_type=Path), help="the embedded store's data directory")
@_storage
def migrate(config_file: Path | None, **flags: object) -> None:
    """Bring the store's schema to this clew's version and exit (`clew serve` does it at start too;
    with several instances on one server, run this once before starting them)."""
    from clew.assembly import assemble

    try:
        settings = Settings.load(config_file, **flags)
        store = assemble(settings)
    except (ConfigError, StoreError) as exc:
        _fail(str(exc))
    try:
        versions = store.schema_versions()
    finally:
        store.close()
    from clew.store.server_connection import shown_url

    shown = settings.data_dir if settings.storage == "embedded" else shown_url(settings.storage)
    click.echo(f"schema of {shown}: " + ", ".join(f"{o} {v}" for o, v in sorted(versions.items())))


@main.command()
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="clew.toml to read")
@click.option(
    "--data-dir", type=click.Path(path_type=Path), help="where spans are stored (default ./clew-data)"
)
@_storage
@click.option("--host", help="address to listen on (default 127.0.0.1)")
@_port("otlp-grpc-port", 4317)
@_port("otlp-http-port", 4318)
@_port("zipkin-port", 9411)
@_port("http-port", 16686)
@_port("tempo-port", 3200)
@click.option("--max-body-bytes", type=click.IntRange(1024), help="largest request body after decompression")
@click.option("--max-queue-spans", type=click.IntRange(1), help="spans waiting for commit before 503s")
@click.option(
    "--fsync",
    is_flag=True,
    default=None,
    help="answer only once spans are flushed to stable storage (survives a power loss; slower)",
)
@click.option(
    "--insecure",
    is_flag=True,
    default=None,
    help="allow --host beyond loopback without API keys (anyone who reaches it may write and read)",
)
@click.option("--tls-cert", help="PEM certificate (chain) for TLS on every port, with --tls-key")
@click.option("--tls-key", help="PEM private key for --tls-cert")
@click.option(
    "--demo", is_flag=True, help="also run the demo shop and its load (`clew demo`), stopped with the server"
)
def serve(config_file: Path | None, demo: bool, **flags: object) -> None:
    """Receive spans (OTLP gRPC/HTTP, Zipkin) and store them under --data-dir."""
    import logging

    from clew.server import Ports
    from clew.server import serve as run

    # warnings and errors of every part, one line each (before any library configures its own)
    logging.basicConfig(level=logging.WARNING, format="clew %(levelname)s %(name)s: %(message)s")

    try:
        settings = Settings.load(config_file, **flags)
    except ConfigError as exc:
        _fail(str(exc))
    if settings.host not in ("127.0.0.1", "localhost", "::1") and settings.insecure:
        click.echo(
            f"warning: --insecure: {settings.host} serves anyone who reaches it, without API keys",
            err=True,
        )
    children: list[subprocess.Popen[bytes]] = []

    def start_demo(ports: Ports) -> None:
        endpoint = f"http://127.0.0.1:{ports.otlp_http}"
        cmd = [sys.executable, "-m", "clew.cli", "demo", "--endpoint", endpoint, "--duration", "0"]
        # no preexec_fn here (a fork would run gRPC's fork handlers); the demo sets its own death signal
        env = {**os.environ, "CLEW_DIE_WITH_PARENT": str(os.getpid())}
        # its own output: holding the server's stdout would keep readers of it waiting after a stop
        children.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        click.echo(f"clew demo started: spans to {endpoint}", err=True)

    try:
        asyncio.run(run(settings, start_demo if demo else None))
    except (StoreError, ConfigError) as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot listen: {exc}")
    finally:
        for child in children:
            child.terminate()
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()


def _configured_data_dir() -> Path:
    """The data directory `clew serve` would use here (clew.toml, CLEW_DATA_DIR, default)."""
    try:
        return Settings.load().data_dir
    except ConfigError as exc:
        _fail(str(exc))


def _embedded() -> bool:
    """Whether the configured store is the embedded engine (not a ClickHouse server)."""
    try:
        return Settings.load().storage == "embedded"
    except ConfigError as exc:
        _fail(str(exc))


def _store(data_dir: Path) -> Assembly:
    from clew.assembly import open_embedded

    try:
        settings = Settings.load()  # `clew import` processes spans as the server would
    except ConfigError as exc:
        _fail(str(exc))
    # no sampler runs without the server to decide these spans: they are stored settled, as kept
    offline = dataclasses.replace(settings.sampling, enabled=False)
    try:
        store = open_embedded(data_dir, settings, sampling=offline)
    except StoreError as exc:
        _fail(str(exc))
    from clew.server import replay_log

    # spans a killed server acknowledged and had not committed: into the store first, as its next
    # start would, so that `import` and `export` see the store the server would have had
    replay_log(dataclasses.replace(settings, data_dir=data_dir), store)
    return store


@main.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--data-dir", type=click.Path(path_type=Path), help="store into this data directory (server stopped)"
)
@click.option("--url", help="send to a running server's OTLP/HTTP endpoint, e.g. http://127.0.0.1:4318")
def import_files(files: tuple[Path, ...], data_dir: Path | None, url: str | None) -> None:
    """Import OTLP/JSON, Jaeger JSON or Zipkin v2 JSON files (detected from their content).

    Every file is read and checked before anything is written, so a bad file stores nothing.
    """
    from clew.receivers.files import read_file
    from clew.receivers.otlp import BadRequest, accept_request

    if data_dir and url:
        _fail("give --data-dir or --url, not both")
    accepted = []
    for path in files:
        try:
            decoded = accept_request(read_file(path))
        except BadRequest as exc:
            _fail(f"{path}: {exc}")
        if decoded.rejected:
            click.echo(
                f"{path}: skipped {decoded.rejected} invalid span(s): {decoded.error_message}", err=True
            )
        accepted.append((path, decoded.batch))
    if url:
        endpoint = url.rstrip("/") + ("" if url.rstrip("/").endswith("/v1/traces") else "/v1/traces")
        for path, batch in accepted:
            for payload in batch.payloads:
                try:
                    response = httpx.post(
                        endpoint,
                        content=bytes(payload),
                        headers={"Content-Type": "application/x-protobuf"},
                        timeout=60,
                    )
                except httpx.HTTPError as exc:
                    _fail(f"cannot reach {endpoint}: {exc}")
                if response.status_code != 200:
                    _fail(f"{path}: {endpoint} answered {response.status_code}: {response.text[:200]}")
            click.echo(f"{path}: {len(batch)} spans sent")
        return
    store = _store(data_dir or _configured_data_dir())
    try:
        for path, batch in accepted:
            store.writer.write(batch)
            click.echo(f"{path}: {len(batch)} spans imported")
    finally:
        store.close()


def _query_since(
    url: str | None, path: str, query: str, since: str, limit: int, tenant: str | None, api_key: str | None
) -> dict[str, Any]:
    """`path`'s answer for `query` over the last `since`; a 400 names the reason (and where, in a
    query the server could point into) and stops the command."""
    import time

    from clew.core.durations import DurationError, parse_duration

    try:
        window = parse_duration(since, allow_days=True)
    except DurationError as exc:
        _fail(f"--since: {exc}")
    end = time.time()
    url = url or _default_url()
    params: dict[str, str | int | float] = {
        "q": query,
        "start": end - window / 10**9,
        "end": end,
        "limit": limit,
    }
    response = _get(url, path, params, tenant, api_key)
    if response.status_code == 400:
        body = response.json()
        position = body.get("position")
        pointer = (
            f"\n  {query}\n  {' ' * (position - 1)}^" if isinstance(position, int) and position > 0 else ""
        )
        _fail(f"{body.get('error', response.text)}{pointer}")
    if response.status_code != 200:
        _fail(f"{url} answered {response.status_code}: {response.text[:200]}")
    doc: dict[str, Any] = response.json()
    return doc


@main.command()
@click.argument("query", default="")
@click.option("--since", default="1h", show_default=True, help="how far back to look: 15m, 6h, 7d")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--url", help="the server's http port (default http://127.0.0.1:16686, or clew.toml's)")
@click.option("--json", "as_json", is_flag=True, help="print the API's JSON instead of a table")
@_as_caller
def logs(
    query: str,
    since: str,
    limit: int,
    url: str | None,
    as_json: bool,
    tenant: str | None,
    api_key: str | None,
) -> None:
    """Search log records, newest first, e.g. clew logs 'service:payment severity>=warn declined'."""
    from clew.terminal import logs_table

    doc = _query_since(url, "/api/v1/logs", query, since, limit, tenant, api_key)
    click.echo(json.dumps(doc, indent=2) if as_json else logs_table(doc))


@main.command()
@click.argument("trace_id")
@click.option("--format", "fmt", type=click.Choice(["otlp", "jaeger"]), default="otlp", show_default=True)
@click.option("--data-dir", type=click.Path(path_type=Path), help="read this data directory (server stopped)")
@click.option("--url", help="ask a running server's http port instead, e.g. http://127.0.0.1:16686")
@_as_caller
def export(
    trace_id: str, fmt: str, data_dir: Path | None, url: str | None, tenant: str | None, api_key: str | None
) -> None:
    """Print one trace as OTLP/JSON (one resourceSpans document) or as Jaeger's API JSON."""
    from clew.core.model import parse_trace_id

    raw = parse_trace_id(trace_id)
    if raw is None:
        _fail(f"trace id {trace_id!r} is not up to 32 hex characters")
    if data_dir and url:
        _fail("give --data-dir or --url, not both")
    if url:
        path = f"/api/v1/traces/{raw.hex()}" if fmt == "otlp" else f"/api/traces/{raw.hex()}"
        response = _get(url, path, tenant=tenant, api_key=api_key)
        if response.status_code == 404:
            click.echo(f"trace {trace_id} not found at {url}", err=True)
            sys.exit(1)
        if response.status_code != 200:
            _fail(f"{url} answered {response.status_code}: {response.text[:200]}")
        doc = response.json()
        if fmt == "jaeger":
            doc = {"data": doc["data"]}
        click.echo(json.dumps(doc, indent=2))
        return
    from clew.api.jaeger_model import to_jaeger_traces
    from clew.core.model import DEFAULT_TENANT
    from clew.core.otlp import to_traces_data
    from clew.receivers.otlp import to_otlp_json

    directory = data_dir or _configured_data_dir()
    if not directory.is_dir() and _embedded():
        _fail(f"data directory {directory} does not exist")
    store = _store(directory)
    try:
        batch = store.reader.get_trace(raw, tenant or DEFAULT_TENANT)
    finally:
        store.close()
    if not len(batch):
        click.echo(f"trace {trace_id} not found in {directory}", err=True)
        sys.exit(1)
    doc = to_otlp_json(to_traces_data(batch)) if fmt == "otlp" else {"data": to_jaeger_traces(batch)}
    click.echo(json.dumps(doc, indent=2))


def _rate(name: str, default: float, what: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    return click.option(
        f"--{name}", type=click.FloatRange(0, 1), default=default, show_default=True, help=what
    )


@main.command()
@click.option("--endpoint", help="clew's OTLP/HTTP endpoint (default http://127.0.0.1:4318, or clew.toml's)")
@click.option("--rps", type=click.FloatRange(0.1, 500), default=5, show_default=True, help="flows a second")
@click.option(
    "--duration", type=click.FloatRange(0), default=0, help="seconds to run (default: until stopped)"
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--no-faults", is_flag=True, help="a healthy shop: every fault rate below set to 0")
@_rate("slow-payment", 0.1, "share of payments with a latency spike")
@_rate("payment-failure", 0.15, "share of payment calls failing with 503 (checkout retries with backoff)")
@_rate("inventory-error", 0.02, "share of inventory reservations failing")
@_rate("cache-miss", 0.3, "share of catalog reads missing the cache (SQLite query)")
@_rate("canary-share", 0.2, "share of checkouts sent to the 1.5.0 canary (slower); 0 starts no canary")
@_rate("dropped-propagation", 0.1, "share of checkouts whose audit call drops the trace context")
def demo(
    endpoint: str | None, rps: float, duration: float, seed: int, no_faults: bool, **rates: float
) -> None:
    """Run the demo shop (9 services as processes, traced with clew.instrument()) under load."""
    from clew.demo.runner import die_with, run_demo
    from clew.demo.shop import Faults

    if os.environ.get("CLEW_DIE_WITH_PARENT"):
        die_with(int(os.environ["CLEW_DIE_WITH_PARENT"]))

    if endpoint is None:
        try:
            endpoint = f"http://127.0.0.1:{Settings.load().otlp_http_port}"
        except ConfigError as exc:
            _fail(str(exc))
    faults = Faults.none() if no_faults else Faults(**rates)
    try:
        counts = run_demo(endpoint, rps, duration, faults, seed)
    except RuntimeError as exc:
        _fail(str(exc))
    click.echo("flows: " + ", ".join(f"{name} {n}" for name, n in counts.items()))


def _default_url() -> str:
    try:
        return f"http://127.0.0.1:{Settings.load().http_port}"
    except ConfigError as exc:
        _fail(str(exc))


def _get(
    url: str,
    path: str,
    params: dict[str, str | int | float] | None = None,
    tenant: str | None = None,
    api_key: str | None = None,
) -> httpx.Response:
    headers = {}
    if tenant:
        headers["X-Scope-OrgID"] = tenant
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    try:
        return httpx.get(url.rstrip("/") + path, params=params, headers=headers, timeout=60)
    except httpx.HTTPError as exc:
        _fail(f"cannot reach {url}: {exc} (is `clew serve` running? give its http port with --url)")


@main.command()
@click.argument("query")
@click.option("--since", default="1h", show_default=True, help="how far back to look: 15m, 6h, 7d")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--url", help="the server's http port (default http://127.0.0.1:16686, or clew.toml's)")
@click.option("--json", "as_json", is_flag=True, help="print the API's JSON instead of a table")
@_as_caller
def search(
    query: str,
    since: str,
    limit: int,
    url: str | None,
    as_json: bool,
    tenant: str | None,
    api_key: str | None,
) -> None:
    """Find traces with the query language, e.g. clew search '{ status = error }' (docs/query-language.md)."""
    from clew.terminal import search_table

    doc = _query_since(url, "/api/v1/search", query, since, limit, tenant, api_key)
    click.echo(json.dumps(doc, indent=2) if as_json else search_table(doc))


@main.command()
@click.argument("trace_id")
@click.option("--url", help="the server's http port (default http://127.0.0.1:16686, or clew.toml's)")
@_as_caller
def trace(trace_id: str, url: str | None, tenant: str | None, api_key: str | None) -> None:
    """Show one trace as a waterfall: span tree, services, offsets, durations; errors marked with !."""
    from clew.core.model import parse_trace_id
    from clew.terminal import waterfall

    raw = parse_trace_id(trace_id)
    if raw is None:
        _fail(f"trace id {trace_id!r} is not up to 32 hex characters")
    url = url or _default_url()
    response = _get(url, f"/api/v1/traces/{raw.hex()}", tenant=tenant, api_key=api_key)
    if response.status_code == 404:
        click.echo(f"trace {trace_id} not found at {url}", err=True)
        sys.exit(1)
    if response.status_code != 200:
        _fail(f"{url} answered {response.status_code}: {response.text[:200]}")
    click.echo(waterfall(response.json()))


@main.group()
def keys() -> None:
    """API keys: with any key, every endpoint but /healthz needs one (docs/security.md)."""


def _key_ring(data_dir: Path | None) -> FileKeyRing:
    from clew.gateway.keys import KEYS_FILE, FileKeyRing

    try:
        settings = Settings.load()
        return FileKeyRing(settings.keys, (data_dir or settings.data_dir) / KEYS_FILE)
    except ConfigError as exc:
        _fail(str(exc))


@keys.command("create")
@click.option("--role", type=click.Choice(["ingest", "read", "admin"]), required=True)
@click.option(
    "--tenant", "tenants", multiple=True, help="ingest: the one tenant written; read: each readable"
)
@click.option("--name", default="", help="a label shown by `clew keys list`")
@click.option("--data-dir", type=click.Path(path_type=Path), help="the server's data directory")
def keys_create(role: str, tenants: tuple[str, ...], name: str, data_dir: Path | None) -> None:
    """Create a key; it is printed once and stored only as its SHA-256 (in the data directory)."""
    ring = _key_ring(data_dir)
    try:
        secret, key = ring.create(role, tenants, name)  # type: ignore[arg-type]  # click.Choice checked it
    except ConfigError as exc:
        _fail(str(exc))
    click.echo(secret)
    click.echo(f"key {key.id} ({key.role}, tenants: {', '.join(key.tenants) or 'all'}) created", err=True)


@keys.command("list")
@click.option("--data-dir", type=click.Path(path_type=Path), help="the server's data directory")
def keys_list(data_dir: Path | None) -> None:
    """Every key clew.toml and the data directory hold: id, role, tenants, name (never the key)."""
    for key in _key_ring(data_dir).keys:
        click.echo(f"{key.id}  {key.role:<6}  {','.join(key.tenants) or '*':<20}  {key.name}")


@keys.command("revoke")
@click.argument("key_id")
@click.option("--data-dir", type=click.Path(path_type=Path), help="the server's data directory")
def keys_revoke(key_id: str, data_dir: Path | None) -> None:
    """Remove a key created with `clew keys create` (a running server stops taking it at once)."""
    if not _key_ring(data_dir).revoke(key_id):
        _fail(f"no key {key_id} in the data directory (keys of clew.toml are removed there)")
    click.echo(f"key {key_id} revoked", err=True)


@keys.command("hash")
@click.argument("key")
def keys_hash(key: str) -> None:
    """The SHA-256 of a key, for a [[keys]] table of clew.toml."""
    from clew.gateway.keys import digest

    click.echo(digest(key))


if __name__ == "__main__":
    main()
