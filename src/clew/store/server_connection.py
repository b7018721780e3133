"""A ClickHouse server (or a cluster's load balancer) through `clickhouse-connect` over HTTP: the same
SQL as the embedded engine, sent over the wire."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pyarrow as pa

from clew.core.budget import QUERY_SECONDS
from clew.core.errors import ConfigError, StoreError
from clew.store.arrays import with_functions
from clew.store.connection import READ_SETTINGS, Data, engine_error, joined, over_budget
from clew.store.sql import quote, utf8_params

SCHEMES = {"clickhouse": False, "http": False, "https": True, "clickhouses": True}
_DATABASE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


@dataclass(frozen=True, slots=True)
class ServerAddress:
    """What `--storage clickhouse://user:pass@host:8123/db` says."""

    host: str
    port: int
    secure: bool
    username: str
    password: str
    database: str
    ca_cert: str | None = None  # `?ca_cert=/path.pem`: the CA the server's certificate is checked against

    @classmethod
    def parse(cls, url: str) -> ServerAddress:
        parts = urlsplit(url)
        if parts.scheme not in SCHEMES:
            raise ConfigError(
                f"storage {shown_url(url)!r}: the scheme must be one of {', '.join(sorted(SCHEMES))} "
                "(https or clickhouses for TLS), or the storage 'embedded'"
            )
        if not parts.hostname:
            raise ConfigError(f"storage {shown_url(url)!r}: no host")
        secure = SCHEMES[parts.scheme]
        try:
            port = parts.port or (8443 if secure else 8123)
        except ValueError as exc:
            raise ConfigError(f"storage {shown_url(url)!r}: {exc}") from exc
        options = dict(parse_qsl(parts.query))
        unknown = sorted(set(options) - {"ca_cert"})
        if unknown:
            raise ConfigError(f"storage {shown_url(url)!r}: unknown option {unknown[0]!r} (known: ca_cert)")
        database = unquote(parts.path.strip("/")) or "clew"
        if not _DATABASE.match(database):
            raise ConfigError(
                f"storage {shown_url(url)!r}: the database must be letters, digits and _ (got {database!r})"
            )
        return cls(
            parts.hostname,
            port,
            secure,
            unquote(parts.username or "default"),
            unquote(parts.password or ""),
            database,
            options.get("ca_cert"),
        )


def shown_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()


class ServerConnection:
    """One `clickhouse-connect` client, shared by every thread: it has a pool of HTTP connections
    and no session, so statements run in parallel on the server and none sees another's settings
    or parameters (they travel with each request)."""

    def __init__(self, url: str, connections: int = 8) -> None:
        import clickhouse_connect  # imported lazily: only a server store needs it
        from clickhouse_connect.driver import httputil

        self.address = address = ServerAddress.parse(url)
        self.database = address.database
        self.shown = shown_url(url)
        try:
            self._client = clickhouse_connect.get_client(
                host=address.host,
                port=address.port,
                username=address.username,
                password=address.password,
                secure=address.secure,
                ca_cert=address.ca_cert,
                autogenerate_session_id=False,
                pool_mgr=httputil.get_pool_manager(maxsize=connections, ca_cert=address.ca_cert),
                connect_timeout=10,
                send_receive_timeout=300,
            )
        except Exception as exc:
            raise StoreError(f"cannot reach the ClickHouse server at {self.shown}: {exc}") from exc
        # those the server knows (an older one refuses a setting it has never heard of)
        self._read_settings = {k: v for k, v in READ_SETTINGS.items() if k in self._client.server_settings}

    def query(self, sql: str, params: dict[str, object] | None = None) -> pa.Table:
        sql = with_functions(sql)
        budget = QUERY_SECONDS.get()
        settings: dict[str, object] = dict(self._read_settings)
        if budget is not None:
            settings["max_execution_time"] = f"{budget:g}"
        try:
            table: pa.Table = self._call(
                self._client.query_arrow, sql, parameters=utf8_params(params), settings=settings
            )
            return table
        except StoreError as exc:
            if budget is None:
                raise
            raise over_budget(exc, budget) from exc

    def command(self, sql: str, params: dict[str, object] | None = None) -> None:
        sql = with_functions(sql)
        self._call(self._client.command, sql, parameters=utf8_params(params))

    def insert_formatted(
        self,
        sql: str,
        fmt: str,
        structure: str,
        data: Data,
        settings: dict[str, object],
        params: dict[str, object],
    ) -> None:
        """The data is the request's body and `input()` the table the SELECT reads it from."""
        statement = sql.replace("{source}", f"input({quote(structure)})") + f" FORMAT {fmt}"
        self._call(
            self._client.command,
            statement,
            parameters=utf8_params(params),
            data=joined(data),
            settings=settings,
        )

    def close(self) -> None:
        self._client.close()

    def _call(self, method: Any, sql: str, **kwargs: Any) -> Any:
        from clickhouse_connect.driver.exceptions import ClickHouseError

        try:
            return method(sql, **kwargs)
        except ClickHouseError as exc:
            raise engine_error(str(exc)) from exc
