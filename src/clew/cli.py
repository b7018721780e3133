"""The `clew` command line."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import NoReturn

import click

from clew.config import ConfigError, Settings
from clew.store.base import StoreError


def _fail(message: str) -> NoReturn:
    raise click.ClickException(message)


@click.group()
@click.version_option(package_name="clew")
def main() -> None:
    """clew: a distributed tracing backend (OTLP and Zipkin in, ClickHouse's engine underneath)."""


def _port(name: str, default: int) -> click.Option:
    return click.option(
        f"--{name}",
        type=click.IntRange(0, 65535),
        default=None,
        help=f"port (default {default}; 0 picks a free one)",
    )


@main.command()
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="clew.toml to read")
@click.option(
    "--data-dir", type=click.Path(path_type=Path), help="where spans are stored (default ./clew-data)"
)
@click.option("--host", help="address to listen on (default 127.0.0.1)")
@_port("otlp-grpc-port", 4317)
@_port("otlp-http-port", 4318)
@_port("zipkin-port", 9411)
@_port("http-port", 16686)
@click.option("--max-body-bytes", type=click.IntRange(1024), help="largest request body after decompression")
@click.option("--max-queue-spans", type=click.IntRange(1), help="spans waiting for commit before 503s")
def serve(config_file: Path | None, **flags: object) -> None:
    """Receive spans (OTLP gRPC/HTTP, Zipkin) and store them under --data-dir."""
    from clew.server import serve as run

    try:
        settings = Settings.load(config_file, **flags)
    except ConfigError as exc:
        _fail(str(exc))
    if settings.host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(
            f"warning: listening on {settings.host} exposes unauthenticated ingest to the network",
            err=True,
        )
    try:
        asyncio.run(run(settings))
    except StoreError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot listen: {exc}")


@main.command()
@click.argument("trace_id")
@click.option("--data-dir", type=click.Path(path_type=Path), default=Path("./clew-data"), show_default=True)
def export(trace_id: str, data_dir: Path) -> None:
    """Print one trace as OTLP/JSON (reads the data directory; the server must be stopped)."""
    from clew.model import parse_trace_id
    from clew.query.otlp import to_traces_data
    from clew.receivers.otlp import to_otlp_json
    from clew.store import open_embedded

    raw = parse_trace_id(trace_id)
    if raw is None:
        _fail(f"trace id {trace_id!r} is not up to 32 hex characters")
    if not data_dir.is_dir():
        _fail(f"data directory {data_dir} does not exist")
    try:
        store = open_embedded(data_dir)
    except StoreError as exc:
        _fail(str(exc))
    try:
        batch = store.get_trace(raw)
    finally:
        store.close()
    if not len(batch):
        click.echo(f"trace {trace_id} not found in {data_dir}", err=True)
        sys.exit(1)
    click.echo(json.dumps(to_otlp_json(to_traces_data(batch)), indent=2))


if __name__ == "__main__":  # pragma: no cover
    main()
