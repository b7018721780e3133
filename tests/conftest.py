"""Integration fixtures: a real `clew serve` process on free loopback ports with its own data directory."""

from __future__ import annotations

import os
import re
import signal
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from clew.store.connection import Connection
from tests.shop_data import A, shop

LISTENING = re.compile(r"clew listening otlp-grpc=(\d+) otlp-http=(\d+) zipkin=(\d+) http=(\d+) tempo=(\d+)")
# A verbatim copy of the team's ../shared/conformance (other projects' own test data, sources and
# licences in its README), kept in the repository so that a clone alone runs every test.
CONFORMANCE = Path(__file__).resolve().parent / "conformance"


@dataclass
class ServerProcess:
    data_dir: Path
    extra_args: list[str] = field(default_factory=list)
    # The write-ahead log answers before spans are queryable (within a commit interval); tests that
    # read what they just sent run with it off, and the log has tests of its own (test_wal.py,
    # test_durability.py)
    wal: bool = False
    proc: subprocess.Popen[str] | None = None
    grpc_port: int = 0
    otlp_http_port: int = 0
    zipkin_port: int = 0
    http_port: int = 0
    tempo_port: int = 0
    output: list[str] = field(default_factory=list)

    def start(
        self, timeout: float = 60, https: bool = False, verify: ssl.SSLContext | bool = True
    ) -> ServerProcess:
        cmd = [sys.executable, "-m", "clew.cli", "serve", "--data-dir", str(self.data_dir)]
        cmd += [
            "--otlp-grpc-port",
            "0",
            "--otlp-http-port",
            "0",
            "--zipkin-port",
            "0",
            "--http-port",
            "0",
            "--tempo-port",
            "0",
        ]
        self.proc = subprocess.Popen(
            cmd + self.extra_args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "CLEW_WAL_DIR": "auto" if self.wal else "off"},
        )
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"clew serve exited early: {''.join(self.output)}")
            self.output.append(line)
            match = LISTENING.search(line)
            if match:
                ports = map(int, match.groups())
                self.grpc_port, self.otlp_http_port, self.zipkin_port, self.http_port, self.tempo_port = ports
                break
        else:
            raise RuntimeError("clew serve did not print its listening line in time")
        scheme = "https" if https else "http"
        response = httpx.get(f"{scheme}://127.0.0.1:{self.http_port}/healthz", timeout=10, verify=verify)
        assert response.status_code == 200
        return self

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def tempo_url(self) -> str:
        return f"http://127.0.0.1:{self.tempo_port}"

    @property
    def otlp_http_url(self) -> str:
        return f"http://127.0.0.1:{self.otlp_http_port}"

    @property
    def zipkin_url(self) -> str:
        return f"http://127.0.0.1:{self.zipkin_port}"

    def post_otlp(self, body: bytes, **headers: str) -> httpx.Response:
        """One OTLP/HTTP protobuf request (header names with `_` for `-`: X_Scope_OrgID=...)."""
        return httpx.post(
            f"{self.otlp_http_url}/v1/traces",
            content=body,
            headers={
                "Content-Type": "application/x-protobuf",
                **{k.replace("_", "-"): v for k, v in headers.items()},
            },
            timeout=30,
        )

    def trace(self, trace_id: str) -> dict | None:
        response = httpx.get(f"{self.http_url}/api/v1/traces/{trace_id}", timeout=30)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.json()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rest, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            try:  # bounded: a process it started may still hold the output pipe open
                rest, _ = self.proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                rest = ""
                self.proc.wait()
        self.output.append(rest or "")
        return self.proc.returncode


class ClickHouseServer:
    """The ClickHouse server of the tests: `CLEW_TEST_CLICKHOUSE_URL` when set (a real server), else
    ClickHouse's HTTP interface answered by the engine itself (tests/chserver.py), one process for
    the whole session, started on first use. Each store gets a database of its own."""

    USER, PASSWORD = "clew", "p@ss:word"

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.base = os.environ.get("CLEW_TEST_CLICKHOUSE_URL", "").rstrip("/")
        self.directory: Path | None = None

    def url(self) -> str:
        """A URL naming a fresh database."""
        database = f"t{uuid.uuid4().hex[:12]}"
        if self.base:
            return f"{self.base}/{database}"
        if self.proc is None:
            import tempfile

            self.directory = Path(tempfile.mkdtemp(prefix="clew-chserver-"))
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.chserver", str(self.directory / "engine"),
                 "--user", self.USER, "--password", self.PASSWORD],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                # its own directory, as a server's: the engine caches schemas in the working directory
                cwd=self.directory,
                env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
            )  # fmt: skip
            assert self.proc.stdout is not None
            line = self.proc.stdout.readline()
            assert line.startswith("listening "), line
            self.port = int(line.split()[1])
        return f"clickhouse://{self.USER}:{quote(self.PASSWORD, safe='')}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        if self.proc is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()  # the server stops when its input ends
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None
        if self.directory is not None:
            import shutil

            shutil.rmtree(self.directory, ignore_errors=True)


CLICKHOUSE = ClickHouseServer()


@pytest.fixture(scope="session", autouse=True)
def _stop_clickhouse() -> Iterator[None]:
    yield
    CLICKHOUSE.stop()


@pytest.fixture(params=["embedded", "clickhouse"])
def storage(request: pytest.FixtureRequest) -> Callable[[Path], str]:
    """`Settings.storage` for a store kept in a directory: "embedded", or a database of the test
    ClickHouse server, the same one each time the same directory is named (a restart)."""
    urls: dict[Path, str] = {}

    def of(directory: Path) -> str:
        if request.param == "embedded":
            return "embedded"
        return urls.setdefault(directory, CLICKHOUSE.url())

    return of


# Store connections a server can run on: name -> extra `clew serve` arguments for a fresh store (the
# data directory is always given). Conformance suites are parametrized over these.
STORE_CONNECTIONS: dict[str, Callable[[Path], list[str]]] = {
    "embedded": lambda directory: [],
    "clickhouse": lambda directory: ["--storage", CLICKHOUSE.url()],
}


def _embedded(directory: Path) -> Connection:
    from clew.store.chdb_connection import ChdbConnection

    return ChdbConnection(directory / "data")


def _server(directory: Path) -> Connection:
    from clew.store.server_connection import ServerConnection

    return ServerConnection(CLICKHOUSE.url())


# Storage backends the storage conformance suite (test_storage_conformance.py) runs on: name -> a
# fresh `Connection` in an empty directory.
STORAGE_BACKENDS: dict[str, Callable[[Path], Connection]] = {"embedded": _embedded, "clickhouse": _server}


@pytest.fixture(scope="module", params=sorted(STORE_CONNECTIONS))
def store_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A running server with an empty store on each store connection."""
    directory = tmp_path_factory.mktemp(f"store-{request.param}")
    args = STORE_CONNECTIONS[request.param](directory)
    proc = ServerProcess(directory / "data", extra_args=args).start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def server(data_dir: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(data_dir).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session", params=sorted(STORE_CONNECTIONS))
def shop_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The shop's traces on a server, once on each store connection (the query-language cases
    run on both)."""
    directory = Path(tmp_path_factory.mktemp(f"search-{request.param}"))
    proc = ServerProcess(directory / "data", extra_args=STORE_CONNECTIONS[request.param](directory)).start()
    try:
        response = httpx.post(f"{proc.otlp_http_url}/v1/traces", json=shop(), timeout=30)
        assert response.status_code == 200, response.text
        assert "partialSuccess" not in response.json() or not response.json()["partialSuccess"]
        yield proc
    finally:
        proc.stop()


def spans_of(doc: dict) -> list[dict]:
    """Every span of an OTLP/JSON document, with its resource and scope beside it."""
    out = []
    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                out.append(
                    {
                        "resource": {**rs.get("resource", {}), "schemaUrl": rs.get("schemaUrl", "")},
                        "scope": {**ss.get("scope", {}), "schemaUrl": ss.get("schemaUrl", "")},
                        "span": span,
                    }
                )
    return out


def _sorted_attrs(attrs: list[dict] | None) -> list[dict]:
    return sorted(attrs or [], key=lambda kv: kv["key"])


def varint(n: int) -> bytes:
    """A protobuf base-128 varint, for requests framed by hand."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def canonical_spans(doc: dict) -> dict[str, dict]:
    """Span id -> the span with its resource and scope, attribute lists in key order, for comparison."""
    out = {}
    for item in spans_of(doc):
        resource = dict(item["resource"])
        resource["attributes"] = _sorted_attrs(resource.get("attributes"))
        scope = dict(item["scope"])
        scope["attributes"] = _sorted_attrs(scope.get("attributes"))
        span = dict(item["span"])
        span["attributes"] = _sorted_attrs(span.get("attributes"))
        span["events"] = [
            {**e, "attributes": _sorted_attrs(e.get("attributes"))} for e in span.get("events", [])
        ]
        span["links"] = [
            {**ln, "attributes": _sorted_attrs(ln.get("attributes"))} for ln in span.get("links", [])
        ]
        for key in ("traceId", "spanId", "parentSpanId"):
            if key in span:
                span[key] = span[key].lower()
        for link in span["links"]:  # OTLP/JSON leaves out empty ids
            link["traceId"] = link.get("traceId", "").lower()
            link["spanId"] = link.get("spanId", "").lower()
        out[span["spanId"]] = {"resource": resource, "scope": scope, "span": span}
    return out


def counters(http_url: str, expected: dict[str, float], timeout: float = 15) -> dict[str, float]:
    """`/metrics` samples without labels, once those named in `expected` reach their values (the
    server's housekeeping updates some every second); the last reading if they never do."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    deadline = time.monotonic() + timeout
    while True:
        text = httpx.get(f"{http_url}/metrics", timeout=30).text
        values = {
            s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels
        }
        if all(values.get(k) == v for k, v in expected.items()) or time.monotonic() > deadline:
            return values
        time.sleep(0.2)


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key (PEM files in `directory`)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict, dict]]:
    """A server holding the shop, for the endpoint fuzzers (one per module): it, the shop trace `A`
    as read back, and what a search of everything finds, to check that no case changes them."""
    server = ServerProcess(tmp_path_factory.mktemp("fuzzed") / "data").start()
    try:
        response = httpx.post(f"{server.otlp_http_url}/v1/traces", json=shop(), timeout=30)
        assert response.status_code == 200
        trace = httpx.get(f"{server.http_url}/api/v1/traces/{A}", timeout=30).json()
        found = httpx.get(
            f"{server.http_url}/api/v1/search", params={"q": "{ }", "start": 0}, timeout=30
        ).json()
        yield server, trace, found
    finally:
        server.stop()
