"""Schema changes as numbered steps per owner (the spans table, and each component's tables), applied
in order once and recorded in `schema_migrations`, instead of `CREATE ... IF NOT EXISTS` and `ALTER`s
run by constructors at every start.

Steps are plain SQL with `{db}` for the database. The first steps use `IF NOT EXISTS`, so data
directories from before migrations were recorded adopt them without change.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from clew.core.errors import StoreError
from clew.store.connection import Connection

log = logging.getLogger(__name__)

LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS {db}.schema_migrations (
    owner LowCardinality(String),
    version UInt32,
    name String,
    applied_at DateTime64(3, 'UTC')
) ENGINE = MergeTree
ORDER BY (owner, version)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    owner: str  # "spans", or the component whose tables these are
    version: int  # 1, 2, ... per owner, applied in this order
    name: str
    statements: tuple[str, ...]  # SQL with `{db}`


def applied(conn: Connection, db: str) -> dict[str, int]:
    """The highest recorded version per owner."""
    table = conn.query(f"SELECT toString(owner), max(version) FROM {db}.schema_migrations GROUP BY owner")
    return {str(o): int(v) for o, v in zip(*(c.to_pylist() for c in table.columns), strict=True)}


def migrate(conn: Connection, db: str, migrations: Iterable[Migration]) -> list[Migration]:
    """Apply the steps not yet recorded, owner by owner in version order; returns those applied.

    A data directory recording a version this clew does not know was written by a newer clew: it is
    refused rather than run on a schema this code has never seen."""
    conn.command(f"CREATE DATABASE IF NOT EXISTS {db}")
    conn.command(LEDGER_DDL.format(db=db))
    done = applied(conn, db)
    by_owner: dict[str, list[Migration]] = {}
    for m in migrations:
        by_owner.setdefault(m.owner, []).append(m)
    ran: list[Migration] = []
    for owner, steps in by_owner.items():
        steps.sort(key=lambda m: m.version)
        versions = [m.version for m in steps]
        if versions != list(range(1, len(steps) + 1)):
            raise ValueError(f"migrations of {owner} must be numbered 1..n, got {versions}")
        if done.get(owner, 0) > len(steps):
            raise StoreError(
                f"the data in {db} has schema version {done[owner]} of {owner}, newer than this clew "
                f"knows ({len(steps)}): upgrade clew"
            )
        for m in steps[done.get(owner, 0) :]:
            for statement in m.statements:
                conn.command(statement.format(db=db))
            conn.command(
                f"INSERT INTO {db}.schema_migrations VALUES "
                "({owner:String}, {version:UInt32}, {name:String}, fromUnixTimestamp64Milli({at:Int64}, 'UTC'))",
                {"owner": owner, "version": m.version, "name": m.name, "at": time.time_ns() // 10**6},
            )
            log.info("schema: %s %d (%s) applied", owner, m.version, m.name)
            ran.append(m)
    return ran


def steps(owner: str, *named: tuple[str, Sequence[str]]) -> list[Migration]:
    """Migrations of one owner numbered in the order given: (name, statements) each."""
    return [Migration(owner, i + 1, name, tuple(sql)) for i, (name, sql) in enumerate(named)]


def modify_columns(table: str, columns: Iterable[tuple[str, str]]) -> list[str]:
    """Steps that give columns of `table` the type and codec given: parts written before keep their
    codec until merged, and a changed type is rewritten in the background (a mutation)."""
    return [f"ALTER TABLE {{db}}.{table} MODIFY COLUMN {name} {ch_type}" for name, ch_type in columns]


def rebuild(table: str, next_ddl: str) -> list[str]:
    """Steps that give `table` a new layout (a partition or sort key cannot be altered in place):
    create it as `<table>_next` from `next_ddl`, copy the rows, swap the names atomically (views
    follow the name), drop the old copy. Safe to run again after a crash at any step."""
    return [
        f"DROP TABLE IF EXISTS {{db}}.{table}_next",
        next_ddl,
        f"INSERT INTO {{db}}.{table}_next SELECT * FROM {{db}}.{table}",
        f"EXCHANGE TABLES {{db}}.{table} AND {{db}}.{table}_next",
        f"DROP TABLE {{db}}.{table}_next",
    ]
