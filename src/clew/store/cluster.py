"""Cluster mode (`--cluster NAME`): the same schema and SQL on a ClickHouse cluster.

Every table `t` of clew becomes a replicated local table `t_local` on each shard, created `ON
CLUSTER`, and a `Distributed` table under the name the rest of clew reads and writes, sharded by
`cityHash64(trace_id)` where the table has trace ids (a trace lives on one shard: trace lookups,
tail sampling and the retention's moves of a trace's spans stay within it), else at random. Writing
the cluster's DDL a second time by hand would let it drift from the single-node DDL, so the statements
are rewritten at the seam instead:

- CREATE TABLE: the local table with `Replicated<Engine>('/clickhouse/tables/{uuid}/{shard}',
  '{replica}', ...)`, then the Distributed table over it;
- materialized views run per shard, from local table to local table;
- ALTERs go to the local tables (column changes to the Distributed ones too); DROP, RENAME, EXCHANGE
  and OPTIMIZE likewise; everything runs ON CLUSTER;
- reads of `system.parts` ask one replica of each shard.

Inserts and SELECTs go through the Distributed tables unchanged, inserts synchronously, so an
acknowledged span is on its shard."""

from __future__ import annotations

import re
from collections.abc import Callable

import pyarrow as pa

from clew.core.errors import ConfigError
from clew.store.connection import Connection, Data
from clew.store.sql import quote

ZK_PATH = "'/clickhouse/tables/{uuid}/{shard}', '{replica}'"
_NAME = r"`?(\w+)`?\.`?(\w+)`?"  # db.table, either name in backquotes or not
_CLUSTER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")
_CREATE_DB = re.compile(r"^CREATE\s+DATABASE\s+(IF\s+NOT\s+EXISTS\s+)?(\w+)\s*$", re.I | re.S)
_CREATE_AS = re.compile(rf"^CREATE\s+TABLE\s+(IF\s+NOT\s+EXISTS\s+)?{_NAME}\s+AS\s+{_NAME}\s*$", re.I | re.S)
_CREATE = re.compile(rf"^CREATE\s+TABLE\s+(IF\s+NOT\s+EXISTS\s+)?{_NAME}\s*\((.*)$", re.I | re.S)
_ENGINE = re.compile(r"\bENGINE\s*=\s*(\w+)\s*", re.I)
_VIEW = re.compile(
    rf"^CREATE\s+MATERIALIZED\s+VIEW\s+(IF\s+NOT\s+EXISTS\s+)?{_NAME}\s+TO\s+{_NAME}\s+AS\s+(.*)$",
    re.I | re.S,
)
_ALTER = re.compile(rf"^ALTER\s+TABLE\s+{_NAME}\s+(.*)$", re.I | re.S)
_COLUMN_CHANGE = re.compile(r"^(ADD|DROP|MODIFY|RENAME|COMMENT)\s+COLUMN\b", re.I)
_DROP = re.compile(rf"^DROP\s+TABLE\s+(IF\s+EXISTS\s+)?{_NAME}\s*$", re.I | re.S)
_EXCHANGE = re.compile(rf"^EXCHANGE\s+TABLES\s+{_NAME}\s+AND\s+{_NAME}\s*$", re.I | re.S)
_RENAME = re.compile(rf"^RENAME\s+TABLE\s+{_NAME}\s+TO\s+{_NAME}\s*$", re.I | re.S)
_OPTIMIZE = re.compile(rf"^OPTIMIZE\s+TABLE\s+{_NAME}\b(.*)$", re.I | re.S)
_TABLE_IS = re.compile(r"\btable\s*=\s*'(\w+)'")
_DISTRIBUTED_KEY = re.compile(r"Distributed\((?:[^,]*,){3}\s*(.*)\)\s*$", re.S)


def local(table: str) -> str:
    return table if table.endswith("_local") else f"{table}_local"


class ClusterDdl:
    """Rewrites clew's single-node statements for a cluster. `lookup(db, table)` gives a table's
    `engine_full` as the server reports it (for `CREATE TABLE t AS s` when `s` was created by an
    earlier run); tables created through this object are remembered."""

    def __init__(self, cluster: str, lookup: Callable[[str, str], str | None] = lambda db, t: None) -> None:
        if not _CLUSTER.match(cluster):
            raise ConfigError(f"cluster name {cluster!r}: letters, digits, _ . - only")
        self.cluster, self.lookup = cluster, lookup
        self.on = f"ON CLUSTER {quote(cluster)}"
        self._storage: dict[tuple[str, str], tuple[str, str] | None] = {}  # local table -> (engine, rest)
        self._keys: dict[tuple[str, str], str] = {}  # table -> sharding key

    def statements(self, sql: str) -> list[str]:
        s = sql.strip()
        if m := _CREATE_DB.match(s):
            return [f"CREATE DATABASE {m.group(1) or ''}{m.group(2)} {self.on}"]
        if m := _CREATE_AS.match(s):
            return self._create_as(m.group(1) or "", m.group(2), m.group(3), m.group(4), m.group(5))
        if m := _CREATE.match(s):
            return self._create(m.group(1) or "", m.group(2), m.group(3), m.group(4))
        if m := _VIEW.match(s):
            db, view, tdb, target, select = m.groups()[1:]
            return [
                f"CREATE MATERIALIZED VIEW {m.group(1) or ''}{db}.{view} {self.on} "
                f"TO {tdb}.{local(target)} AS {self._locals(db, select)}"
            ]
        if m := _ALTER.match(s):
            db, table, rest = m.groups()
            out = [f"ALTER TABLE {db}.{local(table)} {self.on} {self._locals(db, rest)}"]
            if _COLUMN_CHANGE.match(rest) and not table.endswith("_local"):
                out.append(f"ALTER TABLE {db}.{table} {self.on} {rest}")
            return out
        if m := _DROP.match(s):
            exists, db, table = m.group(1) or "", m.group(2), m.group(3)
            return [
                f"DROP TABLE IF EXISTS {db}.{table} {self.on} SYNC",
                f"DROP TABLE {exists}{db}.{local(table)} {self.on} SYNC",
            ]
        if m := _EXCHANGE.match(s):
            db, a, db2, b = m.groups()
            first, second = (db, local(a)), (db2, local(b))
            self._storage[first], self._storage[second] = self._storage.get(second), self._storage.get(first)
            return [f"EXCHANGE TABLES {db}.{local(a)} AND {db2}.{local(b)} {self.on}"]
        if m := _RENAME.match(s):
            db, a, db2, b = m.groups()
            self._storage[(db2, local(b))] = self._storage.pop((db, local(a)), None)
            self._keys[(db2, b)] = self._key_of(db, a)
            return [
                f"RENAME TABLE {db}.{local(a)} TO {db2}.{local(b)} {self.on}",
                f"DROP TABLE IF EXISTS {db}.{a} {self.on} SYNC",
                f"DROP TABLE IF EXISTS {db2}.{b} {self.on} SYNC",
                self._distributed("", db2, b),
            ]
        if m := _OPTIMIZE.match(s):
            return [f"OPTIMIZE TABLE {m.group(1)}.{local(m.group(2))} {self.on}{m.group(3)}"]
        return [s]  # INSERT, SELECT: through the Distributed tables

    def query(self, sql: str) -> str:
        """A read: `system.parts` from one replica of each shard, about the local tables."""
        if "system.parts" not in sql:
            return sql
        sql = sql.replace("system.parts", f"cluster({quote(self.cluster)}, system.parts)")
        return _TABLE_IS.sub(lambda m: f"table = '{local(m.group(1))}'", sql)

    def _create(self, exists: str, db: str, table: str, body: str) -> list[str]:
        engine = _ENGINE.search(body)
        if engine is None:
            raise ValueError(f"CREATE TABLE {db}.{table} without ENGINE cannot be clustered")
        columns, name = body[: engine.start()], engine.group(1)
        args, rest = _arguments(body[engine.end() :])
        self._keys[(db, table)] = "cityHash64(trace_id)" if re.search(r"\btrace_id\b", columns) else "rand()"
        return [
            self._replicated(exists, db, table, f"({columns}", name, args, rest),
            self._distributed(exists, db, table),
        ]

    def _create_as(self, exists: str, db: str, table: str, sdb: str, source: str) -> list[str]:
        known = self._storage.get((sdb, local(source)))
        if known is None:
            full = self.lookup(sdb, local(source))
            if full is None:
                raise ValueError(f"CREATE TABLE {db}.{table} AS {sdb}.{source}: {source} is not known")
            m = re.match(r"Replicated(\w+)\s*", full)
            if m is None:
                raise ValueError(f"{sdb}.{local(source)} is not a replicated table: {full[:60]}")
            args, rest = _arguments(full[m.end() :])
            known = (m.group(1), ", ".join(_split_args(args)[2:]) + "\0" + rest)
        engine, tail = known
        args, _, rest = tail.partition("\0")
        self._keys[(db, table)] = self._key_of(sdb, source)
        return [
            self._replicated(exists, db, table, f"AS {sdb}.{local(source)}", engine, args, rest),
            self._distributed(exists, db, table),
        ]

    def _replicated(
        self, exists: str, db: str, table: str, shape: str, engine: str, args: str, rest: str
    ) -> str:
        self._storage[(db, local(table))] = (engine, args + "\0" + rest)
        return (
            f"CREATE TABLE {exists}{db}.{local(table)} {self.on} {shape} "
            f"ENGINE = Replicated{engine}({ZK_PATH}{', ' + args if args else ''}) {rest}".rstrip()
        )

    def _distributed(self, exists: str, db: str, table: str) -> str:
        key = self._key_of(db, table)
        return (
            f"CREATE TABLE {exists}{db}.{table} {self.on} AS {db}.{local(table)} "
            f"ENGINE = Distributed({quote(self.cluster)}, {db}, {local(table)}, {key})"
        )

    def _key_of(self, db: str, table: str) -> str:
        if (db, table) in self._keys:
            return self._keys[(db, table)]
        full = self.lookup(db, table) or ""
        m = _DISTRIBUTED_KEY.search(full)
        return m.group(1).strip() if m else "rand()"

    @staticmethod
    def _locals(db: str, sql: str) -> str:
        """References to tables of `db` in a statement's body, to the local tables (a view reads
        its shard's spans; a partition moves between a shard's tables)."""
        return re.sub(rf"\b{re.escape(db)}\.([A-Za-z_]\w*)\b", lambda m: f"{db}.{local(m.group(1))}", sql)


def _arguments(text: str) -> tuple[str, str]:
    """`(a, b) rest` -> ("a, b", "rest"); no parenthesis -> ("", text)."""
    text = text.lstrip()
    if not text.startswith("("):
        return "", text
    depth = 0
    for i, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0:
            return text[1:i].strip(), text[i + 1 :].strip()
    raise ValueError(f"unbalanced engine arguments: {text[:60]}")


def _split_args(args: str) -> list[str]:
    out, depth, quoted, start = [], 0, False, 0
    for i, ch in enumerate(args):
        if ch == "'" and (i == 0 or args[i - 1] != "\\"):
            quoted = not quoted
        elif not quoted:
            depth += ch == "("
            depth -= ch == ")"
            if ch == "," and depth == 0:
                out.append(args[start:i].strip())
                start = i + 1
    if args.strip():
        out.append(args[start:].strip())
    return out


class ClusterConnection:
    """A server connection whose statements are rewritten for `cluster` (`ClusterDdl`)."""

    def __init__(self, inner: Connection, cluster: str) -> None:
        self.inner, self.database = inner, inner.database
        self.ddl = ClusterDdl(cluster, self._engine_full)

    def query(self, sql: str, params: dict[str, object] | None = None) -> pa.Table:
        return self.inner.query(self.ddl.query(sql), params)

    def command(self, sql: str, params: dict[str, object] | None = None) -> None:
        for statement in self.ddl.statements(sql):
            self.inner.command(statement, params)

    def insert_formatted(
        self,
        sql: str,
        fmt: str,
        structure: str,
        data: Data,
        settings: dict[str, object],
        params: dict[str, object],
    ) -> None:
        # answered once every shard wrote its share: acknowledged means stored
        synchronous = {**settings, "distributed_foreground_insert": 1}
        self.inner.insert_formatted(sql, fmt, structure, data, synchronous, params)

    def close(self) -> None:
        self.inner.close()

    def _engine_full(self, db: str, table: str) -> str | None:
        found = self.inner.query(
            "SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = {t:String}",
            {"db": db, "t": table},
        )
        return str(found.column(0)[0].as_py()) if found.num_rows else None
