"""Ingest beyond throughput, against a real `clew serve` (a fresh one in a temp data dir per part).

Parts (`--only grpc,latency,rss,lowrate`, all by default):
- grpc: OTLP/gRPC `TraceService/Export`, 512-span requests over 8 channels (each its own
  connection), spans/s until the committer has stored every span; every span checked in the store.
  With `--http-reference` (default on) the same payloads over OTLP/HTTP K=8 right after, for a
  same-session comparison.
- latency: the HTTP rate at K=8 measured briefly (or `--max-rate`), then 512-span OTLP/HTTP requests
  on a fixed schedule (open loop, 8 threads) at half of it: acknowledgement latency, send to 200.
- queryable: in the same paced run, one request every 200 ms carries a trace id of its own; after its
  200, `GET /api/v1/traces/<id>` every 10 ms until it answers 200: ack -> queryable.
- rss: 32 clients pushing ~2 MB protobuf requests as fast as backpressure lets them (after a 503,
  Retry-After/10 as bench/ingest.py does); the server's VmRSS every 100 ms, 200s against 503s.
- lowrate: the server's CPU (/proc/<pid>/stat) idle for a minute, then at 31 spans a second (one
  31-span request a second) for a minute, then idle again after that traffic.

Every part stops its server with SIGTERM and reports what the stop left in /dev/shm (the log's
directory `clew-wal-*`, the engine's spool `clew-ingest-<pid>-*`; removed if any) and the ERROR and
Traceback lines of the server's stderr. Traffic goes to 127.0.0.1 only.
Usage: python bench/ingest_latency.py [--only latency,rss] [--max-rate 70000] [--duration 20]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import grpc
import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import launch, send_all, server_cpu, thread_cpu, wait_committed  # noqa: E402
from workload import requests  # noqa: E402

PARTS = ("grpc", "latency", "rss", "lowrate")
PROTOBUF = {"Content-Type": "application/x-protobuf"}
SHM = Path("/dev/shm")
problems: list[str] = []  # what the servers did that they should not have, printed at the end
summary: list[str] = []  # the figures, printed again at the end


def note(line: str) -> None:
    print(line, flush=True)
    summary.append(line)


def problem(line: str) -> None:
    print(f"PROBLEM: {line}", flush=True)
    problems.append(line)


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def ms(values: list[float]) -> str:
    if not values:
        return "no samples"
    return (
        f"p50 {pct(values, 50) * 1000:.1f} ms, p99 {pct(values, 99) * 1000:.1f} ms, "
        f"max {max(values) * 1000:.1f} ms (n={len(values)})"
    )


def span_count(payload: bytes | ExportTraceServiceRequest) -> int:
    request = (
        payload
        if isinstance(payload, ExportTraceServiceRequest)
        else ExportTraceServiceRequest.FromString(payload)
    )
    return sum(len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans)


def rss_kib(pid: int) -> int:
    return proc_status(pid)["VmRSS"]


def proc_status(pid: int) -> dict[str, int]:
    """The kB fields of /proc/<pid>/status (VmRSS, VmHWM, ...)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if value.strip().endswith("kB"):
                out[name] = int(value.split()[0])
    return out


def machine_busy() -> float:
    """CPU seconds every process on the machine has used (/proc/stat)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    times = os.times()
    return times.user + times.system


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[str]
    ports: dict[str, int]
    data_dir: str
    log_path: str
    stop_seconds: float = 0.0

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def otlp_http(self) -> str:
        return f"http://127.0.0.1:{self.ports['otlp-http']}/v1/traces"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.ports['http']}"

    def health(self) -> dict[str, object]:
        ingest: dict[str, object] = httpx.get(f"{self.http}/healthz", timeout=30).json().get("ingest", {})
        return ingest


def _drain(stream: IO[str] | None) -> None:
    """The server's stdout after its `clew listening` line, so that it never blocks on a full pipe."""
    if stream is not None:
        for _ in stream:
            pass


@contextmanager
def fresh_server(tmp: str, name: str) -> Iterator[Server]:
    """A `clew serve` on a new data directory (default configuration), SIGTERM on the way out, then
    the checks of what it left behind."""
    from clew.ingest.wal import default_dir

    base = os.path.join(tmp, name)
    os.makedirs(base)
    data_dir, log_path = os.path.join(base, "data"), os.path.join(base, "server.log")
    with open(log_path, "w") as log:
        proc, ports = launch(data_dir, stderr=log)
    threading.Thread(target=_drain, args=(proc.stdout,), daemon=True).start()
    server = Server(name, proc, ports, data_dir, log_path)
    wall, busy, client, served = time.perf_counter(), machine_busy(), own_cpu(), server_cpu(proc.pid)
    try:
        yield server
    finally:
        # the two cores are shared: what else ran while this part did
        wall, busy = time.perf_counter() - wall, machine_busy() - busy
        client, served = own_cpu() - client, server_cpu(proc.pid) - served
        peak = proc_status(proc.pid)["VmHWM"]
        note(
            f"[{name}] over {wall:.0f} s: server {served / wall * 100:.0f}%, this client {client / wall * 100:.0f}%, "
            f"other processes {(busy - client - served) / wall * 100:.0f}% of a core; server peak RSS "
            f"(VmHWM) {peak / 1024:.0f} MiB"
        )
        started = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            problem(f"[{name}] server did not stop within 300 s of SIGTERM; killed")
            proc.kill()
            proc.wait(timeout=60)
        server.stop_seconds = time.perf_counter() - started
        print(
            f"[{name}] stopped {server.stop_seconds:.1f} s after SIGTERM, exit code {proc.returncode}",
            flush=True,
        )
        if proc.returncode != 0:
            problem(f"[{name}] server exited with {proc.returncode} after SIGTERM")
        wal = default_dir(Path(data_dir))
        if wal is not None and wal.exists():
            left = sorted(p.name for p in wal.iterdir())
            problem(f"[{name}] clean stop left {wal} with {len(left)} files {left[:3]}; removed")
            shutil.rmtree(wal, ignore_errors=True)
        for spool in SHM.glob(f"clew-ingest-{proc.pid}-*"):
            problem(f"[{name}] clean stop left the spool {spool}; removed")
            shutil.rmtree(spool, ignore_errors=True)
        with open(log_path) as f:
            bad = [line.rstrip() for line in f if "ERROR" in line or "Traceback" in line or "rror:" in line]
        if bad:
            problem(f"[{name}] {len(bad)} error lines in the server's stderr, first: {bad[:3]}")


def stored_spans(data_dir: str) -> int:
    from clew.assembly import open_embedded

    store = open_embedded(data_dir)
    try:
        return int(store.reader.span_count())
    finally:
        store.close()


def check_stored(name: str, data_dir: str, expected: int) -> str:
    stored = stored_spans(data_dir)
    if stored != expected:
        problem(f"[{name}] {stored:,} spans stored, {expected:,} acknowledged")
        return f"MISSING {expected - stored:,} of {expected:,}"
    return f"all {expected:,} stored"


# --- grpc ------------------------------------------------------------------------------------------


def grpc_send_all(target: str, messages: list[ExportTraceServiceRequest], channels: int) -> tuple[int, int]:
    """Every message over `channels` channels (each its own connection and thread); retried after
    UNAVAILABLE (the server's backpressure). Returns (UNAVAILABLE retries, spans rejected)."""
    lock = threading.Lock()
    index = iter(range(len(messages)))
    retries = rejected = 0
    failures: list[str] = []

    def worker() -> None:
        nonlocal retries, rejected
        options = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_send_message_length", -1)]
        with grpc.insecure_channel(target, options=options) as channel:
            stub = TraceServiceStub(channel)  # type: ignore[no-untyped-call]
            while not failures:
                with lock:
                    i = next(index, None)
                if i is None:
                    return
                for _ in range(200):
                    try:
                        response = stub.Export(messages[i], timeout=120)
                    except grpc.RpcError as exc:
                        if exc.code() != grpc.StatusCode.UNAVAILABLE:
                            failures.append(f"{exc.code()}: {exc.details()}")
                            return
                        with lock:
                            retries += 1
                        time.sleep(0.1)
                        continue
                    with lock:
                        rejected += response.partial_success.rejected_spans
                    break
                else:
                    failures.append("UNAVAILABLE 200 times in a row")
                    return

    threads = [threading.Thread(target=worker) for _ in range(channels)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise SystemExit(f"gRPC export failed: {failures[0]}")
    return retries, rejected


def part_grpc(args: argparse.Namespace, tmp: str) -> None:
    payloads = list(requests(args.seed, args.grpc_spans, 512, time.time_ns()))
    messages = [ExportTraceServiceRequest.FromString(p) for p in payloads]
    total = sum(span_count(m) for m in messages)
    print(f"[grpc] workload: {total:,} spans in {len(messages)} requests of ~512", flush=True)
    with fresh_server(tmp, "grpc") as server:
        cpu = server_cpu(server.pid)
        started = time.perf_counter()
        retries, rejected = grpc_send_all(
            f"127.0.0.1:{server.ports['otlp-grpc']}", messages, args.connections
        )
        answered = time.perf_counter() - started
        wait_committed(server.ports["http"])
        elapsed = time.perf_counter() - started
        cpu = server_cpu(server.pid) - cpu
    check = check_stored("grpc", server.data_dir, total - rejected)
    note(
        f"[grpc] K={args.connections} OTLP/gRPC: {total / elapsed:,.0f} spans/s committed ({elapsed:.2f} s; "
        f"last answer at {answered:.2f} s), {retries} UNAVAILABLE retries, {rejected} spans rejected, {check}; "
        f"server CPU {cpu / total * 1e6:.1f} us a span"
    )
    if args.http_reference:
        with fresh_server(tmp, "grpc-http-reference") as server:
            cpu = server_cpu(server.pid)
            started = time.perf_counter()
            _, retries = send_all(server.otlp_http, payloads, args.connections)
            wait_committed(server.ports["http"])
            elapsed = time.perf_counter() - started
            cpu = server_cpu(server.pid) - cpu
        check = check_stored("grpc-http-reference", server.data_dir, total)
        note(
            f"[grpc] K={args.connections} OTLP/HTTP, same payloads, right after: {total / elapsed:,.0f} spans/s "
            f"committed ({elapsed:.2f} s), {retries} 503 retries, {check}; server CPU "
            f"{cpu / total * 1e6:.1f} us a span"
        )


# --- latency and queryable-after-ack ---------------------------------------------------------------


def with_trace_id(payload: bytes, trace_id: bytes) -> bytes:
    """The request with its first trace renamed to `trace_id` (same spans, same count)."""
    request = ExportTraceServiceRequest.FromString(payload)
    first = request.resource_spans[0].scope_spans[0].spans[0].trace_id
    for rs in request.resource_spans:
        for scope in rs.scope_spans:
            for span in scope.spans:
                if span.trace_id == first:
                    span.trace_id = trace_id
    return request.SerializeToString()


@dataclass
class Paced:
    latencies: list[float] = field(default_factory=list)  # first send to 200, s
    lags: list[float] = field(default_factory=list)  # how late a request left against its schedule
    statuses: Counter[int] = field(default_factory=Counter)
    acked_spans: int = 0
    elapsed: float = 0.0


def paced(
    url: str,
    payloads: list[bytes],
    spans: list[int],
    interval: float,
    threads: int,
    on_ack: Callable[[int, float], None],
) -> Paced:
    """Request i leaves at start + i * interval (open loop: a slow answer does not delay the schedule
    while a thread is free); after a 503, again after Retry-After/10, at most 20 times."""
    out = Paced()
    lock = threading.Lock()
    index = iter(range(len(payloads)))
    start = time.perf_counter() + 0.2

    def worker() -> None:
        with httpx.Client(timeout=60) as client:
            while True:
                with lock:
                    i = next(index, None)
                if i is None:
                    return
                due = start + i * interval
                wait = due - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                sent = time.perf_counter()
                status = 0
                for _ in range(20):
                    r = client.post(url, content=payloads[i], headers=PROTOBUF)
                    status = r.status_code
                    with lock:
                        out.statuses[status] += 1
                    if status != 503:
                        break
                    time.sleep(float(r.headers.get("Retry-After", "1")) / 10)
                acked = time.perf_counter()
                with lock:
                    out.lags.append(sent - due)
                    if status == 200:
                        out.latencies.append(acked - sent)
                        out.acked_spans += spans[i]
                if status == 200:
                    on_ack(i, acked)

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    out.elapsed = time.perf_counter() - start
    return out


class Queryable:
    """After an acknowledgement: GET /api/v1/traces/<id> every `every` s until 200 (at most
    `timeout` s), on a pool of threads so that the senders never wait for it."""

    def __init__(self, base: str, every: float, pollers: int = 16, timeout: float = 30.0) -> None:
        self.base, self.every, self.timeout = base, every, timeout
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=pollers)
        self.local = threading.local()
        self.lock = threading.Lock()
        self.delays: list[float] = []
        self.polls = 0
        self.timeouts = 0
        self.busy = 0  # 429: the tenant's max_concurrent_queries (8 by default) already running
        self.other: Counter[int] = Counter()

    def submit(self, trace_id: bytes, acked: float) -> None:
        self.pool.submit(self._poll, trace_id.hex(), acked)

    def _poll(self, trace_hex: str, acked: float) -> None:
        client = getattr(self.local, "client", None)
        if client is None:
            client = self.local.client = httpx.Client(timeout=30)
        url = f"{self.base}/api/v1/traces/{trace_hex}"
        while time.perf_counter() - acked < self.timeout:
            r = client.get(url)
            with self.lock:
                self.polls += 1
            if r.status_code == 200:
                with self.lock:
                    self.delays.append(time.perf_counter() - acked)
                return
            if r.status_code == 429:
                with self.lock:
                    self.busy += 1
            elif r.status_code != 404:
                with self.lock:
                    self.other[r.status_code] += 1
            time.sleep(self.every)
        with self.lock:
            self.timeouts += 1

    def close(self) -> None:
        self.pool.shutdown(wait=True)


class HealthWatch:
    """/healthz every 100 ms while a run lasts: the largest `oldestUncommittedMs` and backlog."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.stop = threading.Event()
        self.oldest_ms = 0.0
        self.uncommitted = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self.stop.wait(0.1):
                ingest = client.get(f"{self.base}/healthz").json().get("ingest", {})
                self.oldest_ms = max(self.oldest_ms, float(ingest.get("oldestUncommittedMs", 0)))
                self.uncommitted = max(self.uncommitted, int(ingest.get("uncommittedSpans", 0)))

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def part_latency(args: argparse.Namespace, tmp: str) -> None:
    with fresh_server(tmp, "latency") as server:
        probe_spans = 0
        if args.max_rate:
            max_rate = args.max_rate
            how = "given"
        else:
            probe = list(requests(args.seed + 1, args.probe_spans, 512, time.time_ns()))
            probe_spans = args.probe_spans
            started = time.perf_counter()
            _, retries = send_all(server.otlp_http, probe, args.connections)
            wait_committed(server.ports["http"])
            max_rate = probe_spans / (time.perf_counter() - started)
            how = f"measured: {probe_spans:,} spans at K={args.connections}, {retries} 503 retries"
        target = max_rate * args.load
        count = math.ceil(target * args.duration / 512)
        payloads = list(requests(args.seed + 2, count * 560, 512, time.time_ns()))[:count]
        spans = [span_count(p) for p in payloads]
        interval = sum(spans) / target / len(payloads)  # s between requests
        # one request every `sample_every` s carries a trace id of its own
        every = max(1, round(args.sample_every / interval)) if args.sample_every > 0 else len(payloads)
        rng = random.Random(args.seed)
        marked: dict[int, bytes] = {}
        for i in range(0, len(payloads) if args.sample_every > 0 else 0, every):
            marked[i] = rng.getrandbits(128).to_bytes(16, "big")
            payloads[i] = with_trace_id(payloads[i], marked[i])
        print(
            f"[latency] max rate {max_rate:,.0f} spans/s ({how}); pacing {len(payloads)} requests "
            f"({sum(spans):,} spans) at {sum(spans) / (interval * len(payloads)):,.0f} spans/s, one every "
            f"{interval * 1000:.1f} ms on {args.connections} threads; {len(marked)} marked traces",
            flush=True,
        )
        wait_committed(server.ports["http"])
        time.sleep(2)
        queryable = Queryable(server.http, args.poll_ms / 1000, args.pollers)
        watch = HealthWatch(server.http)
        cpu, client_cpu, busy = server_cpu(server.pid), own_cpu(), machine_busy()
        threads = thread_cpu(server.pid)

        def on_ack(i: int, acked: float) -> None:
            if i in marked:
                queryable.submit(marked[i], acked)

        run = paced(server.otlp_http, payloads, spans, interval, args.connections, on_ack)
        cpu, client_cpu = server_cpu(server.pid) - cpu, own_cpu() - client_cpu
        busy = machine_busy() - busy
        after = thread_cpu(server.pid)
        threads = {name: after[name] - threads.get(name, 0.0) for name in after}
        queryable.close()
        watch.close()
        wait_committed(server.ports["http"])
        ingest = server.health()
    check = check_stored("latency", server.data_dir, probe_spans + run.acked_spans)
    statuses = ", ".join(f"{n} x {s}" for s, n in sorted(run.statuses.items()))
    note(
        f"[latency] max HTTP rate {max_rate:,.0f} spans/s ({how}); paced at "
        f"{run.acked_spans / run.elapsed:,.0f} spans/s ({run.acked_spans / run.elapsed / max_rate:.2f} of it) "
        f"for {run.elapsed:.1f} s, 512-span requests, {args.connections} threads"
    )
    note(f"[latency] ack latency (send to 200): {ms(run.latencies)}")
    note(
        f"[latency] answers: {statuses}; sends late against the schedule: p99 {pct(run.lags, 99) * 1000:.1f} ms, "
        f"max {max(run.lags) * 1000:.1f} ms; server CPU {cpu / run.elapsed * 100:.0f}% of a core (this client "
        f"{client_cpu / run.elapsed * 100:.0f}%, the machine {busy / run.elapsed * 100:.0f}% of 200%); largest "
        f"oldestUncommittedMs {watch.oldest_ms:.0f}, uncommittedSpans {watch.uncommitted:,}; {check}"
    )
    note(
        f"[latency] inserts {ingest.get('inserts')}, of them begun before their segment was sealed "
        f"{ingest.get('begunInserts')} ({ingest.get('cancelledInserts')} of those ended empty)"
    )
    by_thread = sorted(threads.items(), key=lambda kv: -kv[1])
    note(
        "[latency] server CPU by thread: "
        + ", ".join(
            f"{name} {seconds / run.elapsed * 100:.0f}%" for name, seconds in by_thread if seconds > 0
        )
    )
    if run.statuses.keys() - {200, 503}:
        problem(f"[latency] answers other than 200/503: {statuses}")
    if not marked:
        return
    note(
        f"[queryable] ack -> GET /api/v1/traces/<id> 200 (polled every {args.poll_ms:g} ms): "
        f"{ms(queryable.delays)}; {queryable.timeouts} never within {queryable.timeout:.0f} s; "
        f"{queryable.polls} lookups ({queryable.busy} answered 429: max_concurrent_queries)"
        + (f", other answers {dict(queryable.other)}" if queryable.other else "")
    )
    if queryable.other:
        problem(f"[queryable] trace lookups answered {dict(queryable.other)}")


# --- rss -------------------------------------------------------------------------------------------


def part_rss(args: argparse.Namespace, tmp: str) -> None:
    sample = next(requests(args.seed + 3, 4000, 4000, time.time_ns()))
    per_request = round(args.rss_request_bytes / (len(sample) / 4000))
    payloads = list(requests(args.seed + 4, per_request * args.rss_payloads, per_request, time.time_ns()))
    spans = [span_count(p) for p in payloads]
    size = sum(len(p) for p in payloads) / len(payloads)
    print(
        f"[rss] {len(payloads)} distinct requests of ~{per_request:,} spans, {size / 1e6:.2f} MB on average; "
        f"{args.rss_clients} clients for {args.rss_seconds:g} s",
        flush=True,
    )
    with fresh_server(tmp, "rss") as server:
        time.sleep(2)
        baseline = rss_kib(server.pid)
        samples: list[tuple[float, int]] = []
        stop = threading.Event()

        def sampler() -> None:
            t0 = time.perf_counter()
            while not stop.wait(0.1):
                samples.append((time.perf_counter() - t0, rss_kib(server.pid)))

        sampling = threading.Thread(target=sampler, daemon=True)
        sampling.start()
        lock = threading.Lock()
        statuses: Counter[int] = Counter()
        acked = 0
        deadline = time.perf_counter() + args.rss_seconds

        def client(n: int) -> None:
            nonlocal acked
            with httpx.Client(timeout=120) as http:
                j = n
                while time.perf_counter() < deadline:
                    i = j % len(payloads)
                    r = http.post(server.otlp_http, content=payloads[i], headers=PROTOBUF)
                    with lock:
                        statuses[r.status_code] += 1
                        if r.status_code == 200:
                            acked += spans[i]
                    if r.status_code == 503:
                        time.sleep(float(r.headers.get("Retry-After", "1")) / 10)
                    elif r.status_code == 200:
                        j += 1
                    else:
                        time.sleep(0.1)

        started = time.perf_counter()
        threads = [threading.Thread(target=client, args=(n,)) for n in range(args.rss_clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        sent = time.perf_counter() - started
        during = max(kib for _, kib in samples) if samples else 0
        wait_committed(server.ports["http"])
        committed = time.perf_counter() - started
        time.sleep(5)
        stop.set()
        sampling.join()
        status = proc_status(server.pid)
        after = status["VmRSS"]
        peak = max(kib for _, kib in samples)
    check = check_stored("rss", server.data_dir, acked)
    answers = ", ".join(f"{n} x {s}" for s, n in sorted(statuses.items()))
    note(
        f"[rss] {args.rss_clients} clients x {size / 1e6:.2f} MB requests for {sent:.1f} s: answers {answers}; "
        f"{acked:,} spans acknowledged ({acked / committed:,.0f} spans/s to committed at {committed:.1f} s), {check}"
    )
    note(
        f"[rss] server RSS: {baseline / 1024:.0f} MiB before, max {during / 1024:.0f} MiB while sending, "
        f"max {peak / 1024:.0f} MiB sampled overall (VmHWM {status['VmHWM'] / 1024:.0f} MiB), "
        f"{after / 1024:.0f} MiB 5 s after the last commit"
    )
    if statuses.keys() - {200, 503}:
        problem(f"[rss] answers other than 200/503: {answers}")


# --- low rate --------------------------------------------------------------------------------------


def part_lowrate(args: argparse.Namespace, tmp: str) -> None:
    with fresh_server(tmp, "lowrate") as server:
        time.sleep(args.warmup)

        def cpu_over(seconds: float, work: Callable[[float], None] | None = None) -> float:
            cpu, started = server_cpu(server.pid), time.perf_counter()
            if work is None:
                time.sleep(seconds)
            else:
                work(started)
            return (server_cpu(server.pid) - cpu) / (time.perf_counter() - started) * 100

        statuses: Counter[int] = Counter()
        latencies: list[float] = []

        def send(started: float) -> None:
            with httpx.Client(timeout=60) as client:
                for i in range(int(args.lowrate_seconds)):
                    wait = started + i - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                    payload = next(requests(args.seed + 10 + i, 31, 31, time.time_ns()))
                    sent = time.perf_counter()
                    r = client.post(server.otlp_http, content=payload, headers=PROTOBUF)
                    latencies.append(time.perf_counter() - sent)
                    statuses[r.status_code] += 1
                wait = started + args.lowrate_seconds - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)

        idle = cpu_over(args.lowrate_seconds)
        busy = cpu_over(args.lowrate_seconds, send)
        after = cpu_over(args.lowrate_seconds) if args.idle_after else None
        rss = rss_kib(server.pid)
    check = check_stored("lowrate", server.data_dir, 31 * statuses[200])
    answers = ", ".join(f"{n} x {s}" for s, n in sorted(statuses.items()))
    note(
        f"[lowrate] server CPU: idle {idle:.1f}% of a core (after {args.warmup:g} s warm-up), 31 spans/s "
        f"{busy:.1f}%"
        + (f", idle after that traffic {after:.1f}%" if after is not None else "")
        + f", each over "
        f"{args.lowrate_seconds:g} s; answers {answers}, ack {ms(latencies)}; RSS {rss / 1024:.0f} MiB; {check}"
    )
    if statuses.keys() - {200}:
        problem(f"[lowrate] answers other than 200: {answers}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only",
        default=",".join(PARTS),
        help="comma-separated parts: " + ",".join(PARTS) + " (queryable is measured with latency)",
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--connections", type=int, default=8, help="gRPC channels / HTTP threads")
    parser.add_argument("--grpc-spans", type=int, default=300_000)
    parser.add_argument("--http-reference", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--max-rate", type=float, default=0, help="max HTTP spans/s; 0: measure it first")
    parser.add_argument("--probe-spans", type=int, default=150_000, help="spans sent to measure the max rate")
    parser.add_argument("--load", type=float, default=0.5, help="paced rate as a fraction of the max")
    parser.add_argument("--duration", type=float, default=20, help="seconds of paced traffic")
    parser.add_argument(
        "--sample-every",
        type=float,
        default=0.2,
        help="seconds between marked requests (0: none, no lookups)",
    )
    parser.add_argument("--poll-ms", type=float, default=10, help="pause between trace lookups")
    parser.add_argument(
        "--pollers",
        type=int,
        default=16,
        help="threads looking traces up; above the tenant's max_concurrent_queries (8) some are answered 429",
    )
    parser.add_argument("--rss-clients", type=int, default=32)
    parser.add_argument("--rss-request-bytes", type=int, default=2_000_000)
    parser.add_argument("--rss-payloads", type=int, default=32, help="distinct large requests, sent in turn")
    parser.add_argument("--rss-seconds", type=float, default=20)
    parser.add_argument("--warmup", type=float, default=10, help="seconds after start before measuring CPU")
    parser.add_argument("--lowrate-seconds", type=float, default=60)
    parser.add_argument("--idle-after", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS) - {"queryable"}
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    run = {"grpc": part_grpc, "latency": part_latency, "rss": part_rss, "lowrate": part_lowrate}
    with tempfile.TemporaryDirectory(prefix="clew-ingest-latency-") as tmp:
        for part in PARTS:
            if part in parts or (part == "latency" and "queryable" in parts):
                run[part](args, tmp)
    print("\nsummary:")
    for line in summary:
        print(f"  {line}")
    print("problems:" if problems else "problems: none seen")
    for line in problems:
        print(f"  {line}")


if __name__ == "__main__":
    main()
