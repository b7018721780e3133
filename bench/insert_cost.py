"""The fixed cost of the server's insert: its SQL is analysed and planned once per insert, whatever
the insert holds. Runs the insert the default configuration compiles on an empty input, in-process,
by phase (parse, query tree, plan, run) and with the components' stages added one at a time, and
prints the CPU of each (the median of `--reps`, ms). The EXPLAIN phases include formatting their
own output (hundreds of KB for the plan), so they read as upper bounds.

With `--spans N` (e.g. 24,000, what one insert holds at 40,000 spans/s), it also prints the cost a
span of each stage on N shop-workload spans ((cost with N spans - cost empty) / N, us), and of the
same insert into a `Null` table: the SELECT alone, without writing the part or the RED view.

Usage: python bench/insert_cost.py [--reps 9] [--spans 24000]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def cpu() -> float:
    """CPU seconds of this process, every thread (the engine's included), to the microsecond."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--spans", type=int, default=0, help="also the cost a span on this many spans")
    args = parser.parse_args()

    from clew.assembly import open_embedded
    from clew.store.otlp_wire import STRUCTURE, framed, insert_select
    from clew.store.spans import INSERT_SETTINGS, RECEIVED_SQL
    from clew.store.sql import quote
    from clew.store.transforms import Transforms, compose

    directory = tempfile.mkdtemp(prefix="clew-bench-insert-cost-")
    store = open_embedded(Path(directory) / "data")
    try:
        empty = Path(directory) / "empty.bin"
        empty.write_bytes(b"")
        source = f"file({quote(str(empty))}, 'Protobuf', {quote(STRUCTURE)})"
        full_input = Path(directory) / "spans.bin"
        if args.spans:
            from workload import requests

            from clew.receivers.otlp import decode_protobuf

            bodies = [
                decode_protobuf(r).batch.payloads[0] for r in requests(42, args.spans, 512, time.time_ns())
            ]
            full_input.write_bytes(b"".join(bytes(p) for p in framed(bodies)))
        store.conn.command("CREATE TABLE clew.spans_null AS clew.spans ENGINE = Null")
        store.conn.command("SYSTEM STOP MERGES clew.spans")  # the repeated inserts' merges are not theirs
        # the schema as a file of the data directory, as the store's connection sends it
        schema = {k: v for k, v in store.writer._insert_settings.items() if k not in INSERT_SETTINGS}
        settings = store.conn._schema_file({**INSERT_SETTINGS, **schema, "insert_deduplicate": 0})  # type: ignore[attr-defined]
        clause = " SETTINGS " + ", ".join(
            f"{k} = {quote(v) if isinstance(v, str) else v}" for k, v in settings.items()
        )
        stages = {c.name: s for c in store.components if (s := c.insert_stage()) is not None}

        def timed(sql: str, params: dict[str, object]) -> float:
            store.conn.query(sql, params)
            samples = []
            for _ in range(args.reps):
                started = cpu()
                store.conn.query(sql, params)
                samples.append((cpu() - started) * 1000)
            return statistics.median(samples)

        def insert(
            names: list[str], table: str = "clew.spans", src: str = source
        ) -> tuple[str, dict[str, object]]:
            stage = compose(*(stages[n] for n in names)) if names else Transforms({})
            sql = insert_select(table, stage, {"received_at": RECEIVED_SQL}).replace("{source}", src)
            return sql, {**stage.params, "tenant": "bench", "received": time.time_ns()}

        full, params = insert(list(stages))
        select = full[full.index("\n") + 1 :]
        print(f"the insert of the default configuration ({len(full):,} characters of SQL), empty input:")
        for label, sql in (
            ("parse (EXPLAIN AST)", f"EXPLAIN AST {select}"),
            ("+ analysis (EXPLAIN QUERY TREE)", f"EXPLAIN QUERY TREE {select}"),
            ("+ plan (EXPLAIN PLAN)", f"EXPLAIN PLAN {select}"),
            ("the whole insert", full),
        ):
            print(f"  {label:<36} {timed(sql + clause, params):6.1f} ms", flush=True)
        print("by stage (each added to the column expressions alone):")
        base = timed(insert([])[0] + clause, params)
        print(f"  {'column expressions':<36} {base:6.1f} ms")
        for name in stages:
            sql, stage_params = insert([name])
            print(f"  {'+ ' + name:<36} {timed(sql + clause, stage_params) - base:+6.1f} ms", flush=True)
        if args.spans:
            per_span(
                args.spans,
                insert,
                timed,
                clause,
                stages,
                f"file({quote(str(full_input))}, 'Protobuf', {quote(STRUCTURE)})",
            )
    finally:
        store.close()
        shutil.rmtree(directory, ignore_errors=True)


def per_span(
    n: int,
    insert: Callable[..., tuple[str, dict[str, object]]],
    timed: Callable[[str, dict[str, object]], float],
    clause: str,
    stages: dict[str, object],
    source: str,
) -> None:
    """The cost a span (us) of the insert by stage, and of its SELECT alone (into a Null table)."""

    def cost(names: list[str], table: str = "clew.spans") -> float:
        empty_sql, params = insert(names, table)
        full_sql, _ = insert(names, table, source)
        return (timed(full_sql + clause, params) - timed(empty_sql + clause, params)) * 1000 / n

    print(f"a span, on {n:,} shop-workload spans (us; cost with them - cost empty, over {n:,}):")
    everything = list(stages)
    whole, select = cost(everything), cost(everything, "clew.spans_null")
    print(f"  {'the whole insert':<36} {whole:6.2f} us")
    print(f"  {'its SELECT alone (a Null table)':<36} {select:6.2f} us")
    base = cost([])
    print(f"  {'column expressions':<36} {base:6.2f} us")
    for name in stages:
        print(f"  {'+ ' + name:<36} {cost([name]) - base:+6.2f} us", flush=True)


if __name__ == "__main__":
    main()
