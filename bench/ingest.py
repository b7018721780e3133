"""Ingest benchmark: OTLP/HTTP protobuf over K keep-alive connections to a real `clew serve`.

Prints spans/s accepted end to end (a 200 means committed) for each K, checks every span is in the
store, and measures the ceiling in the same run: the same payloads parsed, validated and appended to
the engine in-process with no HTTP. Usage: python bench/ingest.py [--spans N] [--connections 4,8,16]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from statistics import median
from typing import IO

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workload import requests  # noqa: E402

# every processor that can be switched off: redaction, name templates, tail sampling (the RED metrics
# view is part of the schema and runs in both modes)
NO_PIPELINE = "[redaction]\nenabled = false\n[enrich]\nnormalize_names = false\n[sampling]\nenabled = false\n"
LISTENING = re.compile(r"clew listening .*otlp-http=(\d+).* http=(\d+)")
PORT = re.compile(r"([a-z-]+)=(\d+)")


def launch(
    data_dir: str, pipeline: bool = True, stderr: IO[str] | None = None
) -> tuple[subprocess.Popen[str], dict[str, int]]:
    """A fresh `clew serve` on free ports: the process and its ports by name ("otlp-grpc", "otlp-http",
    "zipkin", "http"), as its `clew listening` line gives them."""
    cmd = [sys.executable, "-m", "clew.cli", "serve", "--data-dir", data_dir]
    cmd += ["--otlp-grpc-port", "0", "--otlp-http-port", "0", "--zipkin-port", "0"]
    cmd += ["--http-port", "0", "--tempo-port", "0"]
    if not pipeline:
        config = os.path.join(os.path.dirname(data_dir), "no-pipeline.toml")
        with open(config, "w") as f:
            f.write(NO_PIPELINE)
        cmd += ["--config", config]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=stderr, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if LISTENING.search(line):
            return proc, {name: int(port) for name, port in PORT.findall(line)}
    raise SystemExit("clew serve did not start")


def start_server(data_dir: str, pipeline: bool = True) -> tuple[subprocess.Popen[str], int, int]:
    proc, ports = launch(data_dir, pipeline)
    return proc, ports["otlp-http"], ports["http"]


def wait_committed(http_port: int, timeout: float = 600) -> None:
    """With the write-ahead log a 200 means logged: wait until the committer has stored every span.
    A query commits the log first: without one, a last few spans would wait the idle interval."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        httpx.get(f"http://127.0.0.1:{http_port}/api/services", timeout=30)
        health = httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=30).json()
        if not health.get("ingest", {}).get("uncommittedSpans"):
            return
        time.sleep(0.02)
    raise SystemExit(f"spans still uncommitted after {timeout:.0f}s")


def send_all(url: str, payloads: list[bytes], connections: int) -> tuple[float, int]:
    lock = threading.Lock()
    index = iter(range(len(payloads)))
    retries = 0

    def worker() -> None:
        nonlocal retries
        with httpx.Client(timeout=120) as client:
            while True:
                with lock:
                    i = next(index, None)
                if i is None:
                    return
                for _ in range(100):
                    r = client.post(
                        url, content=payloads[i], headers={"Content-Type": "application/x-protobuf"}
                    )
                    if r.status_code == 200:
                        break
                    if r.status_code != 503:
                        raise SystemExit(f"unexpected {r.status_code}: {r.text[:200]}")
                    with lock:
                        retries += 1
                    time.sleep(float(r.headers.get("Retry-After", "1")) / 10)

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started, retries


def ceiling(payloads: list[bytes], data_dir: str, group: int, pipeline: bool = True) -> float:
    """Decode + append in-process, grouping requests per insert as the server's writer does."""
    from clew.assembly import open_embedded
    from clew.components.enrichment import EnrichConfig
    from clew.components.redaction import RedactionConfig
    from clew.core.model import OtlpBatch
    from clew.receivers.otlp import decode_protobuf

    store = open_embedded(
        data_dir, redaction=RedactionConfig(enabled=pipeline), enrich=EnrichConfig(normalize_names=pipeline)
    )
    started = time.perf_counter()
    for i in range(0, len(payloads), group):
        store.writer.write(OtlpBatch.concat([decode_protobuf(p).batch for p in payloads[i : i + group]]))
    elapsed = time.perf_counter() - started
    store.close()
    return elapsed


def _stat_cpu(stat: str) -> float:
    """User + system CPU seconds of a /proc `stat` line (a process's or a thread's)."""
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_cpu(pid: int) -> float:
    """CPU seconds the server process has used (Linux): less swayed by the neighbours than spans/s."""
    with open(f"/proc/{pid}/stat") as f:
        return _stat_cpu(f.read())


def task_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """CPU seconds of each thread of a process, by thread id, with the thread's name."""
    out: dict[int, tuple[str, float]] = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/stat") as f:
                text = f.read()
        except OSError:  # the thread ended meanwhile
            continue
        out[int(task)] = (text[text.index("(") + 1 : text.rindex(")")], _stat_cpu(text))
    return out


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per kind of thread (its name without digits) of a process: which part of the
    server (receivers, committer, engine pool, merges) a run's CPU went to."""
    out: dict[str, float] = {}
    for name, seconds in task_cpu(pid).values():
        kind = name.rstrip("0123456789-_ ")
        out[kind] = out.get(kind, 0.0) + seconds
    return out


def served(payloads: list[bytes], data_dir: str, pipeline: bool, k: int) -> tuple[float, float, int, int]:
    """One run against a fresh `clew serve`: seconds, server CPU seconds, 503 retries, spans stored."""
    proc, port, http_port = start_server(data_dir, pipeline)
    try:
        cpu = server_cpu(proc.pid)
        started = time.perf_counter()
        elapsed, retries = send_all(f"http://127.0.0.1:{port}/v1/traces", payloads, k)
        wait_committed(http_port)  # the run ends when the committer has stored every span
        elapsed = time.perf_counter() - started
        cpu = server_cpu(proc.pid) - cpu
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    from clew.assembly import open_embedded

    store = open_embedded(data_dir)
    stored = store.reader.span_count()
    store.close()
    return elapsed, cpu, retries, stored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spans", type=int, default=300_000)
    parser.add_argument("--spans-per-request", type=int, default=1000)
    parser.add_argument("--connections", default="4,8,16", help="comma-separated K values, one run each")
    parser.add_argument("--group", type=int, default=16, help="requests per insert for the ceiling")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--pipeline", choices=["on", "off", "both"], default="on",
        help="processors (redaction, name templates, sampling) on, off, or both in one run to print what they cost",
    )  # fmt: skip
    parser.add_argument(
        "--rounds", type=int, default=3,
        help="with --pipeline both: rounds of one run each way, alternating which goes first",
    )  # fmt: skip
    args = parser.parse_args()

    payloads = list(requests(args.seed, args.spans, args.spans_per_request, time.time_ns()))
    total = args.spans
    print(f"workload: {total} spans in {len(payloads)} requests (seed {args.seed})")
    ks = [int(x) for x in args.connections.split(",")]
    missing = False
    with tempfile.TemporaryDirectory() as tmp:
        if args.pipeline == "both":
            missing = compare(payloads, total, tmp, ks, args.rounds)
        else:
            pipeline = args.pipeline == "on"
            label = "pipeline on" if pipeline else "pipeline off"
            ceil_elapsed = ceiling(payloads, os.path.join(tmp, "ceiling"), args.group, pipeline)
            ceil_rate = total / ceil_elapsed
            print(
                f"[{label}] ceiling (parse + validate + engine insert in-process, {args.group} requests an "
                f"insert, no HTTP): {ceil_rate:,.0f} spans/s"
            )
            for k in ks:
                elapsed, cpu, retries, stored = served(
                    payloads, os.path.join(tmp, f"served-{k}"), pipeline, k
                )
                rate = total / elapsed
                check = "all stored" if stored == total else f"MISSING {total - stored}"
                print(
                    f"[{label}] K={k:<3} end to end: {rate:,.0f} spans/s accepted and committed "
                    f"({elapsed:.2f}s, {retries} 503 retries, {check}); ratio to ceiling {rate / ceil_rate:.2f}; "
                    f"server CPU {cpu / total * 1e6:.1f} us a span"
                )
                missing = missing or stored != total
    if missing:
        raise SystemExit(1)


def compare(payloads: list[bytes], spans: int, tmp: str, ks: list[int], rounds: int) -> bool:
    """What the processors cost: runs with them off and on, alternating which goes first in each
    round (this machine's speed drifts between runs), as the ratio of throughputs and of server CPU."""
    missing = False
    for k in ks:
        rate_ratios, cpu_ratios = [], []
        for r in range(rounds):
            results = {}
            for pipeline in (False, True) if r % 2 == 0 else (True, False):
                data_dir = os.path.join(tmp, f"k{k}-r{r}-{'on' if pipeline else 'off'}")
                results[pipeline] = served(payloads, data_dir, pipeline, k)
            (off_s, off_cpu, _, off_n), (on_s, on_cpu, _, on_n) = results[False], results[True]
            rate_ratios.append(off_s / on_s)
            cpu_ratios.append(off_cpu / on_cpu)
            missing = missing or off_n != spans or on_n != spans
            print(
                f"K={k:<3} round {r + 1}: off {spans / off_s:,.0f} spans/s ({off_cpu / spans * 1e6:.1f} us CPU a span), "
                f"on {spans / on_s:,.0f} spans/s ({on_cpu / spans * 1e6:.1f} us); on/off throughput "
                f"{rate_ratios[-1]:.2f}, CPU off/on {cpu_ratios[-1]:.2f}"
                + ("" if off_n == spans and on_n == spans else " MISSING SPANS")
            )
        print(
            f"K={k:<3} pipeline on / off: throughput {median(rate_ratios):.2f}, server CPU {median(cpu_ratios):.2f} "
            f"(medians of {rounds} rounds)"
        )
    return missing


if __name__ == "__main__":
    main()
