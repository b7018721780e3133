"""No client can hold what others need (issue 12, finding 7): a body that stops arriving is answered
408 after `body_timeout_s`; bodies received at once share a byte budget, past which a request gets
503 with Retry-After while a single request always gets through; connections are bounded."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator

import pytest

from tests.conftest import ServerProcess
from tests.test_durability import _request


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    config = tmp_path_factory.mktemp("tight") / "clew.toml"
    config.write_text("body_timeout_s = 2\nmax_inflight_body_bytes = 300000\n")
    server = ServerProcess(tmp_path_factory.mktemp("tight") / "data", extra_args=["--config", str(config)])
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _half_sent(port: int, declared: int, sent: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (
        f"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-protobuf\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    )
    sock.sendall(head.encode() + sent)
    return sock


def _answer(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_a_stalled_body_is_answered_408_and_others_are_served(tight: ServerProcess) -> None:
    stalled = [_half_sent(tight.otlp_http_port, 5000, b"\x0a\x10") for _ in range(20)]
    try:
        # meanwhile everyone else is answered
        assert tight.post_otlp(_request(os.urandom(16))).status_code == 200
        for sock in stalled:  # each stalled request ends with a 408 (the socket's timeout bounds the wait)
            head = _answer(sock)
            assert head.startswith(b"HTTP/1.1 408"), head[:200]
    finally:
        for sock in stalled:
            sock.close()


def test_bodies_in_flight_share_a_budget(tight: ServerProcess) -> None:
    big = _half_sent(tight.otlp_http_port, 400_000, b"\x00" * 250_000)
    try:
        # a small request fits beside it
        assert tight.post_otlp(_request(os.urandom(16))).status_code == 200
        for _ in range(100):  # once the server holds the half-sent bytes, one more large body is refused
            over = tight.post_otlp(b"\x00" * 100_000)
            if over.status_code == 503:
                break
            time.sleep(0.05)
        assert over.status_code == 503, over.text
        # OTLP/HTTP answers errors as a google.rpc.Status in the request's encoding
        assert over.headers["Retry-After"] and b"too many large requests" in over.content
    finally:
        big.close()
    # alone, a request over the budget gets through (to the decoder, which says what is wrong)
    alone = tight.post_otlp(b"\x00" * 400_000)
    for _ in range(50):  # the closed request leaves the budget once the server saw it go
        if alone.status_code != 503:
            break
        alone = tight.post_otlp(b"\x00" * 400_000)
    assert alone.status_code == 400, alone.text
