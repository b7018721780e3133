"""What beginning an insert before its data saves (`ClickHouseSpanWriter.begin`, `StreamedInsert`):
in-process, the wall time from "the rows are there" to "the insert returned", for the server's spans
insert done plainly (`write`: the engine parses, analyses and plans its SQL, then reads the rows)
and begun `--lead` seconds earlier (`begin`, then `finish`: only the rows are left). The two are
alternated, each on fresh rows of the shop workload; medians of `--reps`.

Usage: python bench/begun_insert.py [--spans 10000,24000] [--reps 7] [--lead 0.3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--spans", default="10000,24000", help="spans an insert, comma-separated")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--lead", type=float, default=0.3, help="seconds between begin and the rows")
    args = parser.parse_args()

    from workload import requests

    from clew.assembly import open_embedded
    from clew.core.model import OtlpBatch
    from clew.receivers.otlp import decode_protobuf

    directory = tempfile.mkdtemp(prefix="clew-bench-begun-")
    store = open_embedded(Path(directory) / "data")
    seed = 0

    def batch(spans: int) -> OtlpBatch:
        nonlocal seed
        seed += 1
        decoded = [decode_protobuf(r).batch for r in requests(seed, spans, 512, time.time_ns())]
        return OtlpBatch.concat(decoded)

    try:
        store.writer.write(batch(512), "warm-up")  # the expressions' JIT, the first part
        for spans in (int(s) for s in args.spans.split(",")):
            plain: list[float] = []
            begun: list[float] = []
            for rep in range(args.reps):
                rows = batch(spans)
                start = time.perf_counter()
                store.writer.write(rows, f"plain-{spans}-{rep}")
                plain.append(time.perf_counter() - start)
                rows = batch(spans)
                write = store.writer.begin("default", f"begun-{spans}-{rep}")
                assert write is not None, "the embedded store begins inserts"
                time.sleep(args.lead)  # the previous insert would be writing meanwhile
                start = time.perf_counter()
                write.finish(rows)
                begun.append(time.perf_counter() - start)
            p, b = statistics.median(plain) * 1000, statistics.median(begun) * 1000
            print(
                f"{spans:,} spans: plain insert {p:.0f} ms, begun {args.lead:.1f} s before its rows "
                f"{b:.0f} ms ({b / p:.2f}x; medians of {args.reps})",
                flush=True,
            )
        assert store.reader.span_count() >= 512
    finally:
        store.close()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
