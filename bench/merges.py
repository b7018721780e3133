"""What merges cost a span at a steady rate, in-process: inserts of `--spans-per-insert` shop spans
(what a server commits at the rate it receives: ~20,000 at 40,000 spans/s), merges on, then until
the engine has no merge left running. Prints the process's CPU a span for each table setting given
(`--settings`, alternated run by run), so that a merge setting is measured as the ingest pays for it,
and how much of it the merge threads took; then the trace lookups over the parts left (`--lookups`),
since fewer merges leave more parts for each lookup to read.

Usage: python bench/merges.py [--inserts 30] [--spans-per-insert 20480] [--rounds 2] [--lookups 200]
    [--settings "" "vertical_merge_algorithm_min_rows_to_activate = 131072"]
An empty setting is the table as clew creates it; `codec:ZSTD(2)` gives the text and attribute columns
(those clew compresses with `TEXT`) that codec instead; a setting that starts with `ALTER` is run as
it is (e.g. an index added).
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import task_cpu  # noqa: E402
from workload import requests  # noqa: E402


def cpu() -> float:
    """CPU seconds of this process, every thread (the engine's included), to the microsecond."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def merge_cpu(before: dict[int, tuple[str, float]]) -> float:
    """CPU seconds the engine's merge threads (`MergeMutate`) used since `before`, a `task_cpu` of
    this process (threads that ended meanwhile are lost)."""
    total = 0.0
    for tid, (name, seconds) in task_cpu(os.getpid()).items():
        if name.startswith("MergeMutate"):
            total += seconds - before.get(tid, (name, 0.0))[1]
    return total


def _alter(setting: str) -> list[str]:
    """The statements that give `clew.spans` an arm's setting or text codec."""
    from clew.core.model import COLUMNS, TEXT

    if not setting:
        return []
    if setting.upper().startswith("ALTER "):  # a statement of its own (an index, a projection)
        return [setting]
    if not setting.startswith("codec:"):
        return [f"ALTER TABLE clew.spans MODIFY SETTING {setting}"]
    codec = f"CODEC({setting.removeprefix('codec:')})"
    return [
        f"ALTER TABLE clew.spans MODIFY COLUMN {name} {ch_type.replace(TEXT, codec)}"
        for name, ch_type, _ in COLUMNS
        if TEXT in ch_type
    ]


def run(
    payloads: list[bytes], per_insert: int, setting: str, lookups: list[bytes]
) -> tuple[float, float, float, int, float, float, list[float]]:
    """CPU a span while inserting, and with the merges that follow, and of it the merge threads';
    parts left; rows merged a span; bytes on disk a span; each lookup's wall seconds."""
    from clew.assembly import open_embedded
    from clew.core.model import OtlpBatch
    from clew.receivers.otlp import decode_protobuf

    directory = tempfile.mkdtemp(
        prefix="clew-bench-merges-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None
    )
    store = open_embedded(Path(directory) / "data")
    try:
        conn = store.conn
        for statement in _alter(setting):
            conn.command(statement)
        batches = [
            OtlpBatch.concat([decode_protobuf(p).batch for p in payloads[i : i + per_insert]])
            for i in range(0, len(payloads), per_insert)
        ]
        spans = sum(len(b) for b in batches)
        merged_before = _event(conn, "MergedRows")
        threads = task_cpu(os.getpid())
        started = cpu()
        for batch in batches:
            store.writer.write(batch)
        inserted = cpu()
        wait_for_merges(conn)
        settled = cpu()
        merging = merge_cpu(threads)
        walls = []
        for trace_id in lookups:
            began = time.perf_counter()
            found = store.reader.get_trace(trace_id)
            walls.append(time.perf_counter() - began)
            assert len(found), "a trace written is found"
        parts = (
            conn.query(
                "SELECT count() FROM system.parts WHERE database = 'clew' AND table = 'spans' AND active"
            )
            .column(0)[0]
            .as_py()
        )
        merged = (_event(conn, "MergedRows") - merged_before) / spans
        on_disk = (
            conn.query(
                "SELECT sum(bytes_on_disk) FROM system.parts WHERE database = 'clew' AND table = 'spans' AND active"
            )
            .column(0)[0]
            .as_py()
        )
        return (
            (inserted - started) / spans * 1e6,
            (settled - started) / spans * 1e6,
            merging / spans * 1e6,
            int(parts),
            merged,
            int(on_disk) / spans,
            walls,
        )
    finally:
        store.close()
        shutil.rmtree(directory, ignore_errors=True)


def wait_for_merges(conn: object) -> None:
    """Until the engine has run no merge for three seconds in a row."""
    quiet = 0
    while quiet < 3:
        time.sleep(1)
        running = conn.query("SELECT count() FROM system.merges").column(0)[0].as_py()  # type: ignore[attr-defined]
        quiet = quiet + 1 if running == 0 else 0


def _event(conn: object, name: str) -> int:
    table = conn.query(  # type: ignore[attr-defined]
        "SELECT value FROM system.events WHERE event = {e:String} SETTINGS system_events_show_zero_values = 1",
        {"e": name},
    )
    return int(table.column(0)[0].as_py()) if table.num_rows else 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--inserts", type=int, default=30)
    parser.add_argument("--spans-per-insert", type=int, default=20480)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--lookups", type=int, default=200, help="trace lookups after the merges")
    parser.add_argument(
        "--settings", nargs="+", default=["", "vertical_merge_algorithm_min_rows_to_activate = 131072"]
    )
    args = parser.parse_args()
    per_insert = max(1, args.spans_per_insert // 512)
    payloads = list(requests(args.seed, 512 * per_insert * args.inserts, 512, time.time_ns() - 3600 * 10**9))
    payloads = payloads[: per_insert * args.inserts]
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    picked = random.Random(args.seed).sample(payloads, min(args.lookups, len(payloads)))
    lookups = [
        ExportTraceServiceRequest.FromString(p).resource_spans[0].scope_spans[0].spans[0].trace_id
        for p in picked
    ]
    print(
        f"{args.inserts} inserts of {per_insert * 512:,} spans; CPU of the whole process a span", flush=True
    )
    for _ in range(args.rounds):
        for setting in args.settings:
            inserting, settled, merging, parts, merged, on_disk, walls = run(
                payloads, per_insert, setting, lookups
            )
            lookup = (
                f"; trace by id p50 / p99 {statistics.median(walls) * 1e3:.1f} / "
                f"{statistics.quantiles(walls, n=100)[98] * 1e3:.1f} ms"
                if len(walls) > 1
                else ""
            )
            print(
                f"  {setting or 'as created':<60} inserting {inserting:5.1f} us, with the merges after "
                f"{settled:5.1f} us (merge threads {merging:4.1f}); {parts} parts left; rows merged {merged:.2f}x; "
                f"{on_disk:.1f} bytes a span{lookup}",
                flush=True,
            )


if __name__ == "__main__":
    main()
