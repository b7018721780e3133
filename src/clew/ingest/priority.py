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
    "QueryCompPipeEx",
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


def _lower(tid: int, nice: int) -> None:
    """Thread `tid` of this process at `nice` at least."""
    if os.getpriority(os.PRIO_PROCESS, tid) < nice:
        os.setpriority(os.PRIO_PROCESS, tid, nice)


def lower_this_thread(nice: int) -> None:
    """Run the calling thread at `nice` (0: leave it)."""
    if nice <= 0 or not _LINUX:
        return
    try:
        _lower(threading.get_native_id(), nice)
    except OSError:  # not permitted here: the thread keeps its priority
        pass


def name_this_thread(name: str) -> None:
    """Give the calling thread `name` (15 bytes at most) where `top -H` and /proc show it: Python's
    threads are all `python` there, and a committer's CPU (the engine analyses its inserts on it)
    could not be told from the receivers'."""
    if not _LINUX:
        return
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/comm", "w") as f:
            f.write(name[:15])
    except OSError:  # not permitted here: the thread keeps its name
        pass


def lower_engine_threads(nice: int) -> None:
    """Run the engine's threads of this process at `nice` at least (0: leave them). The engine
    starts threads as it needs them, so this is called again after each commit (~1 ms for the ~40
    threads of a server)."""
    if nice <= 0 or not _LINUX:
        return
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                if f.read().strip() in ENGINE_THREADS:
                    _lower(int(tid), nice)
        except (OSError, ValueError):  # the thread ended meanwhile
            continue
