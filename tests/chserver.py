"""A ClickHouse server for the tests: ClickHouse's HTTP interface, as `clickhouse-connect` uses it,
answered by the ClickHouse engine itself (chdb) in this process.

No ClickHouse server recent enough for clew's schema installs on the test machines (Debian ships
18.16), so this puts the real engine behind the real client: clickhouse-connect's own HTTP code, our
SQL and ClickHouse's parser and storage all run; only the HTTP framing is ours. What it does not do:
sessions (`session_id` is ignored, every statement stands alone), compression of answers (they go
uncompressed, which the client accepts), external data, or more than the `input()` and
`INSERT ... FORMAT` forms of an insert with data.

Run it as `python -m tests.chserver DIR [--user U --password P]`; it prints `listening PORT`.
"""

from __future__ import annotations

import argparse
import base64
import json
import queue
import re
import ssl
import sys
import tempfile
import threading
import uuid
from email.parser import BytesParser
from email.policy import default
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

# parameters of the HTTP interface itself; every other one is a setting of the statement
INTERFACE = {
    "query", "database", "default_format", "session_id", "session_timeout", "session_check", "query_id",
    "user", "password", "quota_key", "compress", "decompress", "enable_http_compression",
    "wait_end_of_query", "send_progress_in_http_headers", "http_headers_progress_interval_ms",
    "client_protocol_version", "buffer_size", "http_wait_end_of_query", "role",
}  # fmt: skip
_INPUT = re.compile(r"\binput\(\s*('(?:[^'\\]|\\.)*')\s*\)", re.S)
_TRAILING_FORMAT = re.compile(r"\s+FORMAT\s+(\w+)\s*;?\s*$", re.I)
_PLAIN_INSERT = re.compile(r"^\s*INSERT\s+INTO\s+([\w.`\"]+)\s*(\([^)]*\))?\s*$", re.I | re.S)
_CODE = re.compile(r"Code: (\d+)")


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Engine:
    """A pool of chdb sessions on one directory, one statement at a time on each."""

    def __init__(self, path: Path, sessions: int = 4) -> None:
        from chdb import session

        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.spool = Path(tempfile.mkdtemp(prefix="chserver-"))
        self.pool: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for _ in range(sessions):
            self.pool.put(session.Session(str(path)))

    def run(
        self, sql: str, settings: dict[str, str], params: dict[str, str], data: bytes | None, fmt: str
    ) -> bytes:
        spool = None
        if data is not None:
            spool = self.spool / f"{uuid.uuid4().hex}.bin"
            spool.write_bytes(data)
            sql = _with_data(sql, str(spool))
        s = self.pool.get()
        try:
            names = list(settings)
            for name in names:
                s.query(f"SET {name} = {_quote(settings[name])}", "CSV")
            try:
                result = s.query(sql, fmt, params=params or None)
            finally:
                for name in names:
                    s.query(f"SET {name} = DEFAULT", "CSV")
            return bytes(result.bytes()) if result is not None else b""
        finally:
            self.pool.put(s)
            if spool is not None:
                spool.unlink(missing_ok=True)


def _with_data(sql: str, path: str) -> str:
    """The statement reading its data from `path`, as the server reads it from the request body."""
    trailing = _TRAILING_FORMAT.search(sql)
    if trailing is None:
        raise ValueError("Code: 73. DB::Exception: an insert with data needs FORMAT. (UNKNOWN_FORMAT)")
    fmt, head = trailing.group(1), sql[: trailing.start()]
    if _INPUT.search(head):
        return _INPUT.sub(lambda m: f"file({_quote(path)}, {_quote(fmt)}, {m.group(1)})", head)
    plain = _PLAIN_INSERT.match(head)
    if plain is None:
        raise ValueError(
            "Code: 62. DB::Exception: this test server takes input() or INSERT ... FORMAT. (SYNTAX_ERROR)"
        )
    columns = plain.group(2) or ""
    return f"INSERT INTO {plain.group(1)} {columns} SELECT * FROM file({_quote(path)}, {_quote(fmt)})"


def _form(content_type: str, body: bytes) -> dict[str, str]:
    """The fields of a multipart/form-data body (clickhouse-connect sends a query and its parameters
    that way when they would make the URL too long)."""
    message = BytesParser(policy=default).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            payload = part.get_payload(decode=True)
            fields[name] = payload.decode() if isinstance(payload, bytes) else ""
    return fields


def handler(engine: Engine, user: str | None, password: str | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def _serve(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if url.path in ("/ping", "/"):
                if not url.query and not body:
                    return self._answer(200, b"Ok.\n", {})
            if not self._authorized(dict(parse_qsl(url.query))):
                return self._answer(
                    516,
                    b"Code: 516. DB::Exception: clew: Authentication failed. (AUTHENTICATION_FAILED)\n",
                    {"X-ClickHouse-Exception-Code": "516"},
                )
            args = dict(parse_qsl(url.query, keep_blank_values=True))
            if self.headers.get("Content-Type", "").startswith("multipart/form-data"):
                args.update(_form(self.headers["Content-Type"], body))  # long queries: the client's form
                body = b""
            query, data = args.get("query", ""), None
            if query and body:
                if re.match(r"\s*INSERT\b", query, re.I):
                    data = body
                else:
                    query = query + "\n" + body.decode()
            elif body:
                query = body.decode()
            params = {k[6:]: v for k, v in args.items() if k.startswith("param_")}
            settings = {k: v for k, v in args.items() if k not in INTERFACE and not k.startswith("param_")}
            fmt = args.get("default_format", "TabSeparated")
            trailing = _TRAILING_FORMAT.search(query)
            shown = trailing.group(1) if trailing and data is None else fmt
            try:
                out = engine.run(query, settings, params, data, fmt)
            except Exception as exc:  # the engine's error, as the server reports it
                text = str(exc)
                code = _CODE.search(text)
                return self._answer(
                    500,
                    (text if code else f"Code: 1001. DB::Exception: {text}").encode() + b"\n",
                    {"X-ClickHouse-Exception-Code": code.group(1) if code else "1001"},
                )
            summary = {"read_rows": "0", "read_bytes": "0", "written_rows": "0", "written_bytes": "0"}
            return self._answer(
                200, out, {"X-ClickHouse-Format": shown, "X-ClickHouse-Summary": json.dumps(summary)}
            )

        def _authorized(self, args: dict[str, str]) -> bool:
            if user is None:
                return True
            given = (self.headers.get("X-ClickHouse-User"), self.headers.get("X-ClickHouse-Key"))
            auth = self.headers.get("Authorization", "")
            if auth.startswith("Basic "):
                name, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
                given = (name, secret)
            if "user" in args:
                given = (args["user"], args.get("password", ""))
            return given == (user, password)

        def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(500 if status == 516 else status)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Type", "text/plain; charset=UTF-8")
            self.send_header("X-ClickHouse-Timezone", "UTC")
            self.send_header("X-ClickHouse-Query-Id", str(uuid.uuid4()))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--user")
    parser.add_argument("--password", default="")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    args = parser.parse_args(argv)
    engine = Engine(args.directory)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler(engine, args.user, args.password))
    if args.tls_cert:  # HTTPS, as a server configured with a certificate answers on 8443
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    print(f"listening {server.server_address[1]}", flush=True)
    threading.Thread(target=lambda: (sys.stdin.read(), server.shutdown()), daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
