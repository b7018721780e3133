"""`--fsync`: a request is answered only after the part holding its spans was flushed to stable
storage. Proven by tracing the server's system calls (strace attached to the running server): the
engine's fdatasync of the new part comes before the write of the HTTP answer. The same trace of a
server without `--fsync` shows no flush, so the check can tell the two apart."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from clew.config import Settings
from clew.core.errors import ConfigError
from tests.conftest import ServerProcess, spans_of
from tests.test_durability import _request

FLUSH = re.compile(r"\b(?:fdatasync|fsync)\(\d+<(?P<path>[^>]*)>")


def _traced_request(server: ServerProcess, log: Path, trace_id: bytes) -> list[str]:
    """The system calls of every thread of the server while one OTLP/HTTP request is answered."""
    assert server.proc is not None
    tracer = subprocess.Popen(
        [
            "strace",
            "-f",
            "-yy",
            "-s",
            "64",
            "-e",
            "trace=fdatasync,fsync,sendto,write,writev",
            "-o",
            str(log),
            "-p",
            str(server.proc.pid),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert tracer.stderr is not None
        deadline = time.monotonic() + 30
        while "attached" not in tracer.stderr.readline():
            assert time.monotonic() < deadline and tracer.poll() is None, "strace could not attach"
        time.sleep(0.5)  # every thread attached (strace reports them one by one)
        response = server.post_otlp(_request(trace_id))
        assert response.status_code == 200, response.text
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.communicate(timeout=30)
    return log.read_text().splitlines()


def _flushes_before_answer(lines: list[str], data_dir: Path, port: int) -> list[str]:
    answer = next(i for i, line in enumerate(lines) if f":{port}->" in line and "HTTP/1.1 200" in line)
    root = str(data_dir.resolve())
    return [m["path"] for line in lines[:answer] if (m := FLUSH.search(line)) and m["path"].startswith(root)]


@pytest.mark.parametrize("fsync", [True, False], ids=["fsync", "default"])
def test_the_answer_waits_for_the_flush_of_the_part(tmp_path: Path, fsync: bool) -> None:
    data_dir = tmp_path / "data"
    server = ServerProcess(data_dir, extra_args=["--fsync"] if fsync else [], wal=not fsync).start()
    try:
        lines = _traced_request(server, tmp_path / "strace.log", os.urandom(16))
        flushed = _flushes_before_answer(lines, data_dir, server.otlp_http_port)
        if fsync:
            # the part's files, then the part directory itself (its rename made durable)
            assert any("/tmp_insert_" in p for p in flushed), flushed
            assert any(re.search(r"/store/[^/]+/[0-9a-f-]{36}/(?!tmp_)[^/]+$", p) for p in flushed), flushed
        else:  # acknowledged from the memory-backed log: nothing waits for the disk
            assert flushed == []
        assert server.stop() == 0
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.proc.kill()


def test_fsync_spans_are_stored_and_the_setting_reads_from_the_ingest_table(tmp_path: Path) -> None:
    config = tmp_path / "clew.toml"
    config.write_text("[ingest]\nfsync = true\ncommit_spans = 5000\n")
    settings = Settings.load(config)
    assert settings.fsync is True and settings.commit_spans == 5000
    config.write_text("[ingest]\nfsync = 'sometimes'\n")
    with pytest.raises(ConfigError, match="fsync must be true or false"):
        Settings.load(config)
    config.write_text("[ingest]\nport = 1\n")
    with pytest.raises(ConfigError, match="ingest.port"):
        Settings.load(config)

    server = ServerProcess(tmp_path / "data", extra_args=["--fsync"]).start()
    try:
        trace_id = os.urandom(16)
        assert server.post_otlp(_request(trace_id)).status_code == 200
        # answered means queryable at once: no log stands between the answer and the store
        trace = server.trace(trace_id.hex())
        assert trace is not None and len(spans_of(trace)) == 25
    finally:
        server.stop()
