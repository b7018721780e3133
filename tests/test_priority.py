"""The receivers before the engine (ingest/priority.py): with the write-ahead log, a real server runs
its committers and the embedded engine's threads at `engine_nice`, and its event loop at its own."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx
import pytest

from clew.ingest.priority import ENGINE_THREADS
from tests.conftest import ServerProcess
from tests.test_durability import _request

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="threads' nice is Linux's")


def _threads(pid: int) -> dict[int, tuple[str, int]]:
    """The server's threads: id -> (name, nice), from /proc."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:  # ended meanwhile
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(tid)] = (name, int(fields[16]))  # field 19 of stat, counted from the state (3)
    return out


def _ingest_and_read(server: ServerProcess) -> dict[int, tuple[str, int]]:
    for _ in range(3):
        assert server.post_otlp(_request(os.urandom(16))).status_code == 200
        # a read commits the log first: the committer runs an insert, the engine its threads
        assert httpx.get(f"{server.http_url}/api/services", timeout=30).status_code == 200
    assert server.proc is not None
    return _threads(server.proc.pid)


def test_the_engine_runs_below_the_receivers(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", wal=True).start()
    try:
        # a commit lowers the engine's threads that exist by then; a read after it may start more
        # (lowered by the next commit), so the threads checked are those that a later commit saw
        seen = _ingest_and_read(server)
        threads = _ingest_and_read(server)
    finally:
        server.stop()
    assert server.proc is not None
    assert threads[server.proc.pid][1] == 0  # the event loop: what a client waits for
    engine = {tid: nice for tid, (name, nice) in threads.items() if name in ENGINE_THREADS and tid in seen}
    names = {threads[tid][0] for tid in engine}
    assert {"ThreadPool", "MergeMutate"} <= names, names  # the engine's pool and merges, by name
    assert set(engine.values()) == {10}, engine
    # the committers (Python threads) run the inserts' analysis: two of them, lowered too, and named
    # so that `top -H` and /proc tell their CPU from the receivers'
    committers = sorted((name, nice) for name, nice in threads.values() if name.startswith("clew-commit"))
    assert committers == [("clew-commit-0", 10), ("clew-commit-1", 10)], threads


def test_engine_nice_zero_leaves_every_thread_at_the_receivers_priority(tmp_path: Path) -> None:
    config = tmp_path / "clew.toml"
    config.write_text("[ingest]\nengine_nice = 0\n")
    server = ServerProcess(tmp_path / "data", ["--config", str(config)], wal=True).start()
    try:
        threads = _ingest_and_read(server)
    finally:
        server.stop()
    engine = {nice for name, nice in threads.values() if name in ENGINE_THREADS}
    assert engine == {0}, threads
    # nothing at 10 either (the engine may run a thread of its own above, such as its memory worker)
    assert 10 not in {nice for _, nice in threads.values()}
