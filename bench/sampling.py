"""What tail sampling and the retention tiers cost, next to the inserts they follow.

    python bench/sampling.py [--spans 300000] [--per-insert 50000]

The bench/ingest.py workload is inserted in-process in batches of `--per-insert` spans (about a
second of ingest at full speed); after each insert the sampler ticks and the processor counters scan,
as the server's housekeeping does every second. Then the clock moves past the full-fidelity window
and the retention sweeps. Printed: each part's time and its ratio to the insert time, and the sweep's
throughput.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workload import requests  # noqa: E402

from clew.assembly import open_embedded  # noqa: E402
from clew.components.enrichment import Enrichment  # noqa: E402
from clew.components.redaction import Redaction  # noqa: E402
from clew.components.retention import Retention  # noqa: E402
from clew.components.sampling import Sampling, SamplingConfig  # noqa: E402
from clew.core.model import OtlpBatch  # noqa: E402
from clew.receivers.otlp import decode_protobuf  # noqa: E402


class Clock:
    def __init__(self) -> None:
        self.now = time.time_ns()

    def __call__(self) -> int:
        return self.now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spans", type=int, default=300_000)
    parser.add_argument("--per-insert", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    payloads = list(requests(args.seed, args.spans, 1000, time.time_ns()))
    batches = [
        OtlpBatch.concat([decode_protobuf(p).batch for p in payloads[i : i + args.per_insert // 1000]])
        for i in range(0, len(payloads), args.per_insert // 1000)
    ]
    clock = Clock()
    config = SamplingConfig()
    with tempfile.TemporaryDirectory() as tmp:
        store = open_embedded(tmp, sampling=config, clock=clock)
        sampler = store.component(Sampling).sampler
        counters = [store.component(Redaction), store.component(Enrichment)]
        insert = tick = scan = 0.0
        for batch in batches:
            began = time.perf_counter()
            store.writer.write(batch)
            insert += time.perf_counter() - began
            clock.now += 10**9
            began = time.perf_counter()
            sampler.tick()
            tick += time.perf_counter() - began
            began = time.perf_counter()
            for component in counters:
                component.tick(clock.now)
            scan += time.perf_counter() - began
        clock.now += config.decision_wait + 10**9
        sampler.tick()  # the last traces
        c = sampler.counters
        print(f"workload: {args.spans:,} spans in inserts of {args.per_insert:,}; default policies")
        print(f"inserts:               {insert:6.2f} s ({args.spans / insert:,.0f} spans/s)")
        print(f"sampler ticks:         {tick:6.2f} s ({tick / insert:.2f} of the insert time)")
        print(f"processor counters:    {scan:6.2f} s ({scan / insert:.2f} of the insert time)")
        print(
            f"decisions: {c.traces_kept:,} traces kept, {c.traces_dropped:,} dropped; by policy {c.kept_by_policy}"
        )
        clock.now = (clock.now // 3_600_000_000_000 + 1) * 3_600_000_000_000 + config.full_fidelity
        began = time.perf_counter()
        deleted = store.component(Retention).expire(clock.now)
        took = time.perf_counter() - began
        print(
            f"retention sweep:       {took:6.2f} s for {args.spans:,} spans "
            f"({args.spans / took:,.0f} spans/s; {deleted:,} deleted, {store.reader.span_count():,} kept)"
        )
        store.close()


if __name__ == "__main__":
    main()
