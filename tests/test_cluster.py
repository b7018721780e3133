"""Cluster mode's DDL (issue 13): every statement clew runs, rewritten for a cluster, is checked by
the engine's own parser (`formatQuery`). No Keeper or second node runs here, so the statements are
parsed, not executed; `deploy/` runs them on a real 2 x 2 cluster."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pytest

from clew.assembly import assemble, components
from clew.components.base import Context
from clew.components.retention import Retention
from clew.components.sampling import SamplingConfig
from clew.config import ConfigError, Settings
from clew.receivers.otlp import decode_json
from clew.store.chdb_connection import ChdbConnection
from clew.store.cluster import ClusterDdl
from clew.store.instances import MIGRATIONS as INSTANCES
from clew.store.schema import MIGRATIONS as SPANS
from tests.shop_data import shop

CLUSTER = "clew_cluster"


class Recording:
    """The embedded engine, remembering every statement it was asked to run."""

    def __init__(self, inner: ChdbConnection) -> None:
        self.inner, self.database = inner, inner.database
        self.commands: list[str] = []
        self.queries: list[str] = []

    def query(self, sql: str, params: dict[str, object] | None = None) -> pa.Table:
        self.queries.append(sql)
        return self.inner.query(sql, params)

    def command(self, sql: str, params: dict[str, object] | None = None) -> None:
        self.commands.append(sql)
        self.inner.command(sql, params)

    def insert_formatted(self, sql, fmt, structure, data, settings, params) -> None:  # noqa: ANN001
        self.inner.insert_formatted(sql, fmt, structure, data, settings, params)

    def close(self) -> None:
        pass  # the engine fixture closes it


@pytest.fixture
def engine(tmp_path: Path):
    """The embedded engine (one directory per process at a time: the parser and the store share it)."""
    conn = ChdbConnection(tmp_path / "data")
    yield conn
    conn.close()


@pytest.fixture
def parser(engine: ChdbConnection):
    return lambda sql: str(engine.query("SELECT formatQuery({q:String})", {"q": sql}).column(0)[0].as_py())


def migration_statements() -> list[str]:
    ctx = Context(ChdbConnection.__new__(ChdbConnection), "clew")
    parts = components(Settings(), ctx, Path("/nonexistent"))
    steps = [*SPANS, *INSTANCES, *(m for c in parts for m in c.migrations())]
    return ["CREATE DATABASE IF NOT EXISTS clew", *(s.format(db="clew") for m in steps for s in m.statements)]


def test_every_migration_becomes_replicated_sharded_ddl_the_engine_parses(parser) -> None:
    ddl = ClusterDdl(CLUSTER)
    out = [stmt for sql in migration_statements() for stmt in ddl.statements(sql)]
    for statement in out:
        parser(statement)  # raises on anything the engine's parser refuses
        if not statement.startswith("INSERT"):
            assert f"ON CLUSTER '{CLUSTER}'" in statement, statement
    creates = {s.split()[5 if "IF NOT EXISTS" in s else 2]: s for s in out if s.startswith("CREATE TABLE")}
    for name, statement in creates.items():
        if name.endswith("_local"):
            assert (
                "ENGINE = Replicated" in statement
                and "'/clickhouse/tables/{uuid}/{shard}', '{replica}'" in statement
            )
        else:
            assert f"ENGINE = Distributed('{CLUSTER}', clew, {name.split('.')[1]}_local" in statement
    # a trace lives on one shard: the tables keyed by trace are sharded by it
    for table in ("spans", "spans_sweep", "sampling_decisions"):
        assert creates[f"clew.{table}"].endswith("cityHash64(trace_id))"), table
    assert creates["clew.dependency_buckets"].endswith("rand())")
    assert (
        "ReplicatedReplacingMergeTree('/clickhouse/tables/{uuid}/{shard}', '{replica}', version)"
        in (creates["clew.instances_local"])
    )
    # the copy made "AS spans" keeps the spans table's layout
    sweep = creates["clew.spans_sweep_next_local"]  # the sweep table's second layout, made after the spans'

    assert (
        "AS clew.spans_local" in sweep and "ORDER BY (tenant, toStartOfHour(start_time), trace_id)" in sweep
    )
    # the RED view aggregates each shard's spans into that shard's table
    (view,) = [s for s in out if s.startswith("CREATE MATERIALIZED VIEW")]
    assert "TO clew.red_minutes_local" in view and "FROM clew.spans_local" in view
    # partition and setting changes go to the local tables only; column changes to both
    alters = [s for s in out if s.startswith("ALTER TABLE")]
    assert all(s.split()[2].endswith("_local") for s in alters if "COLUMN" not in s)
    assert {s.split()[2] for s in alters if "ADD COLUMN IF NOT EXISTS received_at" in s} == {
        "clew.spans_local",
        "clew.spans",
    }


def test_the_statements_of_a_running_store_become_cluster_ddl_the_engine_parses(
    engine, parser, tmp_path
) -> None:
    """What ingest, sampling and the retention's sweep ask of the store at run time, rewritten."""
    now = [time.time_ns()]
    recording = Recording(engine)
    settings = replace(
        Settings(), data_dir=tmp_path / "data", sampling=replace(SamplingConfig(), decision_wait=10**9)
    )
    settings = replace(
        settings, retention=replace(settings.retention, full_fidelity=settings.sampling.full_fidelity)
    )
    store = assemble(settings, conn=recording, clock=lambda: now[0])
    try:
        store.writer.write(decode_json(json.dumps(shop()).encode()).batch)
        for c in store.components:
            c.tick(now[0])
        now[0] += 3 * 3600 * 10**9
        for c in store.components:
            c.tick(now[0])
        assert store.component(Retention).runs > 0
    finally:
        store.close()
    ddl = ClusterDdl(CLUSTER, lambda db, table: None)
    ddl.statements(migration_statements()[1].format(db="clew"))  # the spans table, as created before
    runtime = [c for c in recording.commands if not c.lstrip().startswith(("CREATE", "DROP TABLE IF EXISTS"))]
    assert any("PARTITION" in c for c in runtime), runtime  # the sweep moved and dropped partitions
    for sql in runtime:
        for statement in ddl.statements(sql):
            parser(statement)
            if statement.startswith("ALTER") and " COLUMN " not in statement:  # column changes: both
                assert statement.split()[2].endswith("_local") and "ON CLUSTER" in statement, statement
    parts = [q for q in recording.queries if "system.parts" in q]
    assert parts
    for sql in parts:
        rewritten = ddl.query(sql)
        assert f"cluster('{CLUSTER}', system.parts)" in rewritten and "_local'" in rewritten
        parser(rewritten)


def test_a_copy_of_a_table_made_by_an_earlier_run_takes_its_layout_from_the_server(parser) -> None:
    full = (
        "ReplicatedMergeTree('/clickhouse/tables/5f0e8a3c-1111-2222-3333-444455556666/01', 'r1') "
        "PARTITION BY toDate(start_time) ORDER BY (tenant, trace_id) SETTINGS index_granularity = 1024"
    )
    distributed = "Distributed('clew_cluster', 'clew', 'spans_local', cityHash64(trace_id))"
    known = {"spans_local": full, "spans": distributed}
    ddl = ClusterDdl(CLUSTER, lambda db, table: known.get(table))
    local, dist = ddl.statements("CREATE TABLE clew.copy AS clew.spans")
    assert "ReplicatedMergeTree('/clickhouse/tables/{uuid}/{shard}', '{replica}') PARTITION BY" in local
    assert dist.endswith("cityHash64(trace_id))")
    for statement in (local, dist):
        parser(statement)


def test_cluster_names_are_checked_and_need_a_server() -> None:
    with pytest.raises(ConfigError):
        ClusterDdl("bad name; DROP")
    from clew.assembly import connect

    with pytest.raises(ConfigError, match="--storage"):
        connect(replace(Settings(), cluster="c"))


DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def test_the_compose_cluster_is_two_shards_of_two_replicas_that_clew_is_pointed_at() -> None:
    """deploy/ cannot run here (no Docker): its parts are checked against each other instead."""
    import xml.etree.ElementTree as ET

    import yaml

    from clew.store.server_connection import ServerAddress

    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    remote = ET.parse(DEPLOY / "clickhouse" / "cluster.xml").getroot().find("remote_servers")
    assert remote is not None
    (cluster,) = list(remote)
    shards = [[r.findtext("host") for r in shard.findall("replica")] for shard in cluster.findall("shard")]
    assert len(shards) == 2 and all(len(replicas) == 2 for replicas in shards)
    users = ET.parse(DEPLOY / "clickhouse" / "users.xml").getroot()
    for number, replicas in enumerate(shards, 1):
        for host in replicas:
            assert services[host]["hostname"] == host
            macros_file = next(v.split(":")[0] for v in services[host]["volumes"] if "macros" in v)
            macros = ET.parse(DEPLOY / macros_file).getroot().find("macros")
            assert macros is not None
            assert int(macros.findtext("shard") or 0) == number and macros.findtext("replica") == host
    instances = [s for s in services.values() if "serve" in s.get("command", [])]
    assert len(instances) == 2
    for service in [*instances, services["migrate"]]:
        command = service["command"]
        assert command[command.index("--cluster") + 1] == cluster.tag
        address = ServerAddress.parse(command[command.index("--storage") + 1])
        assert address.host in {h for replicas in shards for h in replicas}
        assert users.findtext(f"users/{address.username}/password") == address.password
    nginx = (DEPLOY / "nginx.conf").read_text()
    for name in ("clew-1", "clew-2"):
        assert f"server {name}:4318" in nginx and f"server {name}:4317" in nginx
