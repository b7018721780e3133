"""The receivers before the engine: with the write-ahead log, a request is answered once its spans
are in the log, so the threads that answer (the event loop, gRPC's) are what a client waits for,
while the committers and the embedded engine's threads (inserts, merges) only have to keep up on
average. On a busy machine they competed at equal priority, and acknowledgements queued behind
inserts. At 40,000 spans/s with reads on 2 cores, ack p99 was under 50 ms in 1 run of 8; with the
engine's threads at nice 10, in 10 of 12, at the same throughput (bench/RESULTS.md, session 20).

Linux only (threads have their own nice value there; elsewhere this does nothing). A thread's nice
can only be raised without privileges, which is all this does."""

from __future__ import annotations

import os
import sys
import threading

# The embedded engine's threads, by the names it gives them (a thread's `comm`, at most 15 bytes):
# its global pool (the pipelines of inserts and queries), pipeline executors, merges and the
# background schedules. Threads of other libraries (gRPC's I/O) and Python's keep their priority.
ENGINE_THREADS = (
    "ThreadPool",
    "QueryPipelineEx",
    "QueryPullPipeEx",
    "MergeMutate",
    "BgSchPool",
    "BgStrmSchPool",
    "BgMBSchPool",
    "BgDistSchPool",
    "Move",
    "Fetch",
    "Common",
    "PoolDelayExec",
)
_LINUX = sys.platform.startswith("linux")


def lower_this_thread(nice: int) -> bool:
    """Run the calling thread at `nice` (0: leave it); False where that cannot be done."""
    if nice <= 0 or not _LINUX:
        return False
    try:
        if os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) < nice:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        return True
    except OSError:
        return False


def lower_engine_threads(nice: int) -> int:
    """Run the engine's threads of this process at `nice` at least (0: leave them); how many were
    lowered now. The engine starts threads as it needs them, so this is called again after each
    commit (~1 ms for the ~40 threads of a server)."""
    if nice <= 0 or not _LINUX:
        return 0
    lowered = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 0
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read().strip()
            if name in ENGINE_THREADS and os.getpriority(os.PRIO_PROCESS, int(tid)) < nice:
                os.setpriority(os.PRIO_PROCESS, int(tid), nice)
                lowered += 1
        except (OSError, ValueError):  # the thread ended meanwhile
            continue
    return lowered
