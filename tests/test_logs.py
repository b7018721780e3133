"""Logs joined to traces, through real ingest: the OpenTelemetry SDK's log exporters (HTTP and gRPC)
send Python `logging` records made inside spans to a real `clew serve`; OTLP/JSON, gzip and invalid
records take the spans' rules; the trace's logs and the search answer over HTTP on both stores;
redaction, tenants, retention and `kill -9` hold for logs as for spans."""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from clew.assembly import open_embedded
from clew.components.logs import Logs
from clew.core.model import LOGS, OtlpBatch
from clew.ingest.wal import default_dir, encode
from clew.receivers.otlp_logs import decode_logs_json
from tests.chfiles import readable_bytes
from tests.conftest import CLICKHOUSE, STORE_CONNECTIONS, ServerProcess

NOW = time.time_ns()
TRACE = "4c" * 16
SPAN_A, SPAN_B = "a1" * 8, "b2" * 8


def attr(key: str, value: object) -> dict:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": value}}


def record(offset_ms: int, severity: int, body: object, span: str = SPAN_A, **attrs: object) -> dict:
    value = {"stringValue": body} if isinstance(body, str) else body
    return {
        "timeUnixNano": str(NOW + offset_ms * 10**6),
        "severityNumber": severity,
        "body": value,
        "traceId": TRACE,
        "spanId": span,
        "attributes": [attr(k.replace("_", "."), v) for k, v in attrs.items()],
    }


def logs_doc(service: str, records: list[dict]) -> dict:
    return {
        "resourceLogs": [
            {
                "resource": {"attributes": [attr("service.name", service), attr("region", "eu-west-1")]},
                "scopeLogs": [{"scope": {"name": "shop.logs", "version": "1.0"}, "logRecords": records}],
            }
        ]
    }


def shop_logs() -> list[dict]:
    return [
        logs_doc(
            "checkout",
            [
                record(5, 9, "placing order 1017", order_id=1017),
                record(40, 17, "payment declined: insufficient funds", SPAN_B, retry=False),
            ],
        ),
        logs_doc(
            "payment",
            [
                record(
                    20, 13, {"kvlistValue": {"values": [attr("card", "ending 4242"), attr("attempt", 2)]}}
                ),
                record(30, 5, {"arrayValue": {"values": [{"stringValue": "a"}, {"intValue": "1"}]}}),
            ],
        ),
    ]


def post_logs(server: ServerProcess, doc: dict, **headers: str) -> httpx.Response:
    return httpx.post(f"{server.otlp_http_url}/v1/logs", json=doc, headers=headers, timeout=30)


def search(server: ServerProcess, q: str, **params: object) -> httpx.Response:
    window = {"start": NOW / 1e9 - 60, "end": NOW / 1e9 + 60}
    return httpx.get(f"{server.http_url}/api/v1/logs", params={"q": q, **window, **params}, timeout=30)


@pytest.fixture(scope="module", params=sorted(STORE_CONNECTIONS))
def logs_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A server holding the shop's logs, on each store connection."""
    directory = tmp_path_factory.mktemp(f"logs-{request.param}")
    proc = ServerProcess(directory / "data", extra_args=STORE_CONNECTIONS[request.param](directory)).start()
    try:
        for doc in shop_logs():
            response = post_logs(proc, doc)
            assert response.status_code == 200, response.text
            assert response.json().get("partialSuccess") in (None, {})
        yield proc
    finally:
        proc.stop()


def test_a_traces_logs_come_back_in_order_with_their_spans(logs_server: ServerProcess) -> None:
    response = httpx.get(f"{logs_server.http_url}/api/v1/traces/{TRACE}/logs", timeout=30)
    assert response.status_code == 200
    doc = response.json()
    assert doc["truncated"] is False
    logs = doc["logs"]
    assert [(log["service"], log["spanId"], log["severityText"]) for log in logs] == [
        ("checkout", SPAN_A, "INFO"),
        ("payment", SPAN_A, "WARN"),
        ("payment", SPAN_A, "DEBUG"),
        ("checkout", SPAN_B, "ERROR"),
    ]
    assert [int(log["timeUnixNano"]) for log in logs] == [NOW + ms * 10**6 for ms in (5, 20, 30, 40)]
    assert logs[0]["body"] == "placing order 1017" and logs[0]["bodyType"] == "string"
    assert logs[0]["attributes"] == {"order.id": 1017}
    assert logs[3]["attributes"] == {"retry": False}
    assert logs[1]["body"] == {"card": "ending 4242", "attempt": 2} and logs[1]["bodyType"] == "kvlist"
    assert logs[2]["body"] == ["a", 1] and logs[2]["bodyType"] == "array"
    assert logs[0]["resource"] == {"service.name": "checkout", "region": "eu-west-1"}
    assert logs[0]["scope"] == {"name": "shop.logs", "version": "1.0"}
    assert all(log["traceId"] == TRACE for log in logs)
    # another trace has none; a bad id is a 400
    assert httpx.get(f"{logs_server.http_url}/api/v1/traces/{'9' * 32}/logs", timeout=30).json()["logs"] == []
    assert httpx.get(f"{logs_server.http_url}/api/v1/traces/xyz/logs", timeout=30).status_code == 400


@pytest.mark.parametrize(
    ("q", "bodies"),
    [
        ("declined", ["payment declined: insufficient funds"]),
        ('"PLACING order"', ["placing order 1017"]),
        ("service:checkout", ["payment declined: insufficient funds", "placing order 1017"]),
        ("severity:error", ["payment declined: insufficient funds"]),
        ("severity>=warn", ["payment declined: insufficient funds", '{"card":"ending 4242","attempt":2}']),
        ("level<info", ['["a",1]']),
        (f"trace:{TRACE} span:{SPAN_B}", ["payment declined: insufficient funds"]),
        ("order.id=1017", ["placing order 1017"]),
        ("order.id>1000 service:checkout", ["placing order 1017"]),
        ("retry=false", ["payment declined: insufficient funds"]),
        ("region=eu-west-1 4242", ['{"card":"ending 4242","attempt":2}']),
        ("service!=checkout severity>=warn", ['{"card":"ending 4242","attempt":2}']),
        ("http://nowhere", []),
        ("", None),  # everything
    ],
)
def test_search_by_text_severity_service_trace_and_attributes(
    logs_server: ServerProcess, q: str, bodies: list[str] | None
) -> None:
    response = search(logs_server, q)
    assert response.status_code == 200, response.text
    found = response.json()["logs"]
    texts = [
        log["body"] if isinstance(log["body"], str) else json.dumps(log["body"], separators=(",", ":"))
        for log in found
    ]
    if bodies is None:
        assert len(texts) == 4
    else:
        assert texts == bodies  # newest first
    times = [int(log["timeUnixNano"]) for log in found]
    assert times == sorted(times, reverse=True)


def test_stored_records_are_counted_on_metrics(logs_server: ServerProcess) -> None:
    from tests.conftest import counters

    values = counters(logs_server.http_url, {"clew_logs_records_total": 4})
    assert values["clew_logs_records_total"] == 4


def test_search_limit_and_truncation(logs_server: ServerProcess) -> None:
    doc = search(logs_server, "", limit=3).json()
    assert len(doc["logs"]) == 3 and doc["truncated"] is True and doc["limit"] == 3
    # outside the time range: nothing
    outside = httpx.get(
        f"{logs_server.http_url}/api/v1/logs",
        params={"start": NOW / 1e9 - 7200, "end": NOW / 1e9 - 3600},
        timeout=30,
    )
    assert outside.status_code == 200 and outside.json()["logs"] == []


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"q": "severity:loud"}, "severity must be one of"),
        ({"q": "trace:xyz"}, "not a trace id"),
        ({"q": "span:12"}, "span id is 16 hex digits"),
        ({"q": "order.id>many"}, "compares numbers"),
        ({"q": "x " * 40}, "more than 32 terms"),
        ({"q": "a" * 2001}, "over the limit"),
        ({"limit": "0"}, "limit must be"),
        ({"limit": "1001"}, "limit must be"),
        ({"start": "10", "end": "5"}, "start must not be after end"),
    ],
)
def test_a_bad_search_is_a_400_with_the_reason(logs_server: ServerProcess, params: dict, reason: str) -> None:
    response = httpx.get(f"{logs_server.http_url}/api/v1/logs", params=params, timeout=30)
    assert response.status_code == 400
    assert reason in response.json()["error"]


def test_tenants_see_only_their_logs(server: ServerProcess) -> None:
    doc = logs_doc("ledger", [record(1, 9, "tenant a's secret ledger line")])
    assert post_logs(server, doc, **{"X-Scope-OrgID": "tenant-a"}).status_code == 200
    mine = httpx.get(
        f"{server.http_url}/api/v1/traces/{TRACE}/logs", headers={"X-Scope-OrgID": "tenant-a"}, timeout=30
    ).json()["logs"]
    assert [log["body"] for log in mine] == ["tenant a's secret ledger line"]
    for tenant in ("tenant-b", None):
        headers = {"X-Scope-OrgID": tenant} if tenant else {}
        other = httpx.get(f"{server.http_url}/api/v1/traces/{TRACE}/logs", headers=headers, timeout=30)
        assert other.json()["logs"] == []
        found = httpx.get(
            f"{server.http_url}/api/v1/logs",
            params={"q": "ledger", "start": NOW / 1e9 - 60, "end": NOW / 1e9 + 60},
            headers=headers,
            timeout=30,
        )
        assert found.json()["logs"] == []


def test_invalid_records_are_rejected_one_by_one_and_bad_requests_refused(server: ServerProcess) -> None:
    good = record(1, 9, "kept")
    bad_trace = {**record(2, 9, "short trace id"), "traceId": "abcd"}
    bad_span = {**record(3, 9, "long span id"), "spanId": "ab" * 9}
    no_ids = {"timeUnixNano": str(NOW + 4 * 10**6), "body": {"stringValue": "no ids"}}
    no_time = {"body": {"stringValue": "no time at all"}, "traceId": TRACE}
    doc = logs_doc("mixed", [good, bad_trace, bad_span, no_ids, no_time])
    response = post_logs(server, doc)
    assert response.status_code == 200
    partial = response.json()["partialSuccess"]
    assert partial["rejectedLogRecords"] == "2"
    assert "trace_id must be empty or 16 bytes" in partial["errorMessage"]
    assert "span_id must be empty or 8 bytes" in partial["errorMessage"]
    found = search(server, "service:mixed").json()["logs"]
    assert {"kept", "no ids"} <= {log["body"] for log in found}
    assert not {"short trace id", "long span id"} & {log["body"] for log in found}
    everything = httpx.get(f"{server.http_url}/api/v1/logs", params={"q": "service:mixed"}, timeout=30).json()
    untimed = [log for log in everything["logs"] if log["body"] == "no time at all"]
    assert len(untimed) == 1 and abs(int(untimed[0]["timeUnixNano"]) - time.time_ns()) < 600 * 10**9
    assert [log["traceId"] for log in found if log["body"] == "no ids"] == [""]

    # protobuf with gzip; partial success in protobuf
    request = ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    rl.resource.attributes.add(key="service.name").value.string_value = "zipped"
    sl = rl.scope_logs.add()
    sl.log_records.add(time_unix_nano=NOW, severity_number=9).body.string_value = "compressed line"
    sl.log_records.add(time_unix_nano=NOW, trace_id=b"\1" * 3).body.string_value = "bad"
    zipped = httpx.post(
        f"{server.otlp_http_url}/v1/logs",
        content=gzip.compress(request.SerializeToString()),
        headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
        timeout=30,
    )
    assert zipped.status_code == 200
    answer = ExportLogsServiceResponse.FromString(zipped.content)
    assert answer.partial_success.rejected_log_records == 1
    assert [log["body"] for log in search(server, "service:zipped").json()["logs"]] == ["compressed line"]

    # refused whole, with the reason, never a 5xx
    cases = [
        ({"Content-Type": "text/plain"}, b"hello", 415),
        ({"Content-Type": "application/x-protobuf"}, b"\xff\xff\xff", 400),
        ({"Content-Type": "application/json"}, b"[1, 2]", 400),
        ({"Content-Type": "application/json"}, b'{"resourceLogs": 5}', 400),
        ({"Content-Type": "application/json", "Content-Encoding": "gzip"}, b"not gzip", 400),
    ]
    for headers, body, status in cases:
        r = httpx.post(f"{server.otlp_http_url}/v1/logs", content=body, headers=headers, timeout=30)
        assert r.status_code == status, (headers, body, r.text)


def _sdk(endpoint_kind: str, server: ServerProcess, service: str) -> tuple[TracerProvider, LoggerProvider]:
    resource = Resource.create({"service.name": service})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{server.otlp_http_url}/v1/traces"))
    )
    exporter = (
        HttpLogExporter(endpoint=f"{server.otlp_http_url}/v1/logs")
        if endpoint_kind == "http"
        else GrpcLogExporter(endpoint=f"127.0.0.1:{server.grpc_port}", insecure=True)
    )
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    return tracer_provider, logger_provider


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_the_sdk_log_exporter_joins_python_logs_to_their_spans(server: ServerProcess, protocol: str) -> None:
    tracer_provider, logger_provider = _sdk(protocol, server, f"orders-{protocol}")
    logger = logging.getLogger(f"tests.logs.{protocol}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = LoggingHandler(logger_provider=logger_provider)
    logger.addHandler(handler)
    try:
        tracer = tracer_provider.get_tracer("tests")
        with tracer.start_as_current_span("place order") as parent:
            logger.info("order %s accepted", 77, extra={"customer.tier": "gold"})
            with tracer.start_as_current_span("charge card") as child:
                try:
                    raise ValueError("card expired")
                except ValueError:
                    logger.exception("charge failed")
        logger.info("outside any span")
        logger_provider.force_flush()
        tracer_provider.force_flush()
    finally:
        logger.removeHandler(handler)
        logger_provider.shutdown()
        tracer_provider.shutdown()
    trace_id = format(parent.get_span_context().trace_id, "032x")
    logs = httpx.get(f"{server.http_url}/api/v1/traces/{trace_id}/logs", timeout=30).json()["logs"]
    assert [(log["body"], log["severityText"], log["spanId"]) for log in logs] == [
        ("order 77 accepted", "INFO", format(parent.get_span_context().span_id, "016x")),
        ("charge failed", "ERROR", format(child.get_span_context().span_id, "016x")),
    ]
    assert logs[0]["attributes"]["customer.tier"] == "gold"
    assert logs[0]["service"] == f"orders-{protocol}"
    assert logs[1]["attributes"]["exception.type"] == "ValueError"
    assert "card expired" in logs[1]["attributes"]["exception.message"]
    # the trace itself is there, and the record outside any span is found by search, without ids
    assert server.trace(trace_id) is not None
    outside = httpx.get(
        f"{server.http_url}/api/v1/logs",
        params={"q": f'service:orders-{protocol} "outside any span"'},
        timeout=30,
    ).json()["logs"]
    assert [(log["traceId"], log["spanId"]) for log in outside] == [("", "")]


LEAKY_SECRETS = [
    "alice@example.com",
    "4111 1111 1111 1111",
    "hunter2-very-secret",
    "203.0.113.77",
    "bob@example.org",
]


def leaky_logs() -> dict:
    return logs_doc(
        "accounts",
        [
            record(
                1,
                17,
                "reset for alice@example.com failed, card 4111 1111 1111 1111",
                password="hunter2-very-secret",
                client_address="203.0.113.77",
                http_route="/reset",
            ),
            record(
                2, 9, {"kvlistValue": {"values": [attr("user", "bob@example.org"), attr("step", "verify")]}}
            ),
        ],
    )


def test_secrets_in_logs_never_reach_the_disk_or_the_apis(
    data_dir: Path, storage: Callable[[Path], str]
) -> None:
    store = storage(data_dir)
    server = ServerProcess(data_dir, extra_args=["--storage", store]).start()
    try:
        assert post_logs(server, leaky_logs()).status_code == 200
        answers = [
            httpx.get(f"{server.http_url}/api/v1/traces/{TRACE}/logs", timeout=30).text,
            search(server, "").text,
        ]
    finally:
        server.stop()
    logs = json.loads(answers[0])["logs"]
    assert len(logs) == 2
    body = logs[0]["body"]
    assert body.startswith("reset for [email:") and body.endswith("failed, card [REDACTED:card]")
    assert "password" not in logs[0]["attributes"]
    assert logs[0]["attributes"]["client.address"] == "[REDACTED:ip]"
    assert logs[0]["attributes"]["http.route"] == "/reset"
    assert logs[1]["bodyType"] == "kvlist" and logs[1]["body"]["user"].startswith("[email:")
    assert logs[1]["body"]["step"] == "verify"
    for secret in LEAKY_SECRETS:
        for answer in answers:
            assert secret not in answer, secret
    raw = readable_bytes(data_dir)
    if store != "embedded" and CLICKHOUSE.directory is not None:
        raw += readable_bytes(CLICKHOUSE.directory)
    if store == "embedded" or CLICKHOUSE.directory is not None:
        assert b"failed, card" in raw  # the scan reads where the logs are
    for secret in LEAKY_SECRETS:
        assert secret.encode() not in raw, f"{secret!r} is on disk"


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="the log needs memory-backed storage")
def test_acknowledged_logs_survive_kill_minus_nine_and_the_log_keeps_secrets_off_disk(data_dir: Path) -> None:
    os.environ["CLEW_COMMIT_INTERVAL_MS"] = "600000"  # nothing is committed before the kill
    try:
        server = ServerProcess(data_dir, wal=True).start()
    finally:
        del os.environ["CLEW_COMMIT_INTERVAL_MS"]
    acked = []
    for i in range(20):
        doc = logs_doc(
            "durable", [{**record(i, 9, f"line {i} of the durable service"), "spanId": f"{i + 1:016x}"}]
        )
        if i == 0:
            doc = leaky_logs()
        assert post_logs(server, doc).status_code == 200
        acked.append(i)
    wal = default_dir(data_dir)
    assert wal is not None and b"hunter2-very-secret" in readable_bytes(wal)  # in memory-backed storage
    server.stop(signal.SIGKILL)
    assert b"hunter2-very-secret" not in readable_bytes(data_dir)
    server = ServerProcess(data_dir, wal=True).start()
    try:
        found = search(server, "service:durable", limit=100).json()["logs"]
        leaked = search(server, "service:accounts").json()["logs"]
    finally:
        server.stop()
    assert sorted(int(log["spanId"], 16) for log in found) == list(range(2, 21))  # each once
    assert len(leaked) == 2 and "hunter2" not in json.dumps(leaked)
    assert not wal.exists() or list(wal.glob("*.wal")) == []
    assert b"hunter2-very-secret" not in readable_bytes(data_dir)


def test_the_log_keeps_the_signal_of_each_record() -> None:
    logs = decode_logs_json(json.dumps(leaky_logs()).encode()).batch
    spans = OtlpBatch("t", (b"\n\x00",), 7)
    from tests.test_wal import decode

    got = decode(encode(logs) + encode(spans))
    assert [(b.signal, b.spans, b.payloads) for b in got] == [
        (LOGS, 2, logs.payloads),
        ("spans", 7, (b"\n\x00",)),
    ]


def test_logs_past_the_retention_are_dropped_by_the_day(tmp_path: Path) -> None:
    """The logs' retention (the spans' period unless `[logs] retention` says) drops whole days."""
    day = 86_400 * 10**9
    clock = [NOW - 10 * day]
    store = open_embedded(tmp_path / "data", clock=lambda: clock[0])
    try:
        logs = store.component(Logs)
        for age in (10, 3, 0):
            clock[0] = NOW - age * day
            doc = logs_doc(
                "aging", [{**record(0, 9, f"{age} days old"), "timeUnixNano": str(NOW - age * day)}]
            )
            store.logs.write(decode_logs_json(json.dumps(doc).encode()).batch)
        assert logs.retention == 7 * day  # the spans' default period
        logs.tick(NOW)
        left = store.conn.query("SELECT body FROM clew.logs ORDER BY timestamp").column(0).to_pylist()
        assert left == ["3 days old", "0 days old"]
        assert logs.dropped_partitions == 1
    finally:
        store.close()


def test_a_tenant_without_logs_is_not_looked_up_on_every_trace(tmp_path: Path, monkeypatch) -> None:
    """A trace's view skips the logs query for a tenant found without records, for a while: records
    stored by this instance show at once, another instance's (another writer) after the recheck."""
    store = open_embedded(tmp_path / "data")
    try:
        logs = store.component(Logs)
        trace = bytes.fromhex(TRACE)
        assert logs.trace_logs("quiet", trace)["logs"] == []
        queries: list[str] = []
        query = store.conn.query
        monkeypatch.setattr(
            store.conn, "query", lambda sql, params=None: queries.append(sql) or query(sql, params)
        )
        assert logs.trace_logs("quiet", trace)["logs"] == [] and queries == []  # not asked again

        batch = decode_logs_json(json.dumps(logs_doc("svc", [record(0, 9, "from elsewhere")])).encode()).batch
        other = type(store.logs)(store.conn, "clew")  # another instance's writer on the same store
        other.write(OtlpBatch("quiet", batch.payloads, batch.spans, LOGS))
        assert logs.trace_logs("quiet", trace)["logs"] == []  # within the recheck time
        monkeypatch.setattr("clew.components.logs.NO_LOGS_RECHECK_S", 0.0)
        assert [r["body"] for r in logs.trace_logs("quiet", trace)["logs"]] == ["from elsewhere"]

        monkeypatch.setattr("clew.components.logs.NO_LOGS_RECHECK_S", 3600.0)
        assert logs.trace_logs("busy", trace)["logs"] == []  # found without records: remembered
        store.logs.write(OtlpBatch("busy", batch.payloads, batch.spans, LOGS))  # this instance's writer
        assert [r["body"] for r in logs.trace_logs("busy", trace)["logs"]] == ["from elsewhere"]
    finally:
        store.close()


def test_an_agent_reads_a_traces_logs_and_searches_them_over_mcp(logs_server: ServerProcess) -> None:
    from tests.test_mcp import call

    listed, searched, bad = call(
        logs_server,
        [
            ("trace_logs", {"trace_id": TRACE}),
            ("search_logs", {"query": "severity:error", "minutes": 60 * 24}),
            ("search_logs", {"query": "severity:loud"}),
        ],
    )
    assert [log["body"] for log in listed["logs"]][0] == "placing order 1017"
    assert len(listed["logs"]) == 4
    assert [(log["body"], log["traceId"]) for log in searched["logs"]] == [
        ("payment declined: insufficient funds", TRACE)
    ]
    assert bad[0] == "error" and "severity must be one of" in bad[1]


def test_the_logs_retention_comes_from_clew_toml(tmp_path: Path) -> None:
    from clew.config import Settings
    from clew.core.errors import ConfigError

    path = tmp_path / "clew.toml"
    path.write_text('[retention]\nperiod = "14d"\n\n[logs]\nretention = "30d"\ninterval = "5m"\n')
    settings = Settings.load(path)
    assert settings.logs.retention == 30 * 86_400 * 10**9 and settings.logs.interval == 300 * 10**9
    store = open_embedded(tmp_path / "data", settings)
    try:
        assert store.component(Logs).retention == 30 * 86_400 * 10**9
        assert store.component(Logs).interval == 300 * 10**9
    finally:
        store.close()
    path.write_text('[retention]\nperiod = "14d"\n')
    store = open_embedded(tmp_path / "data", Settings.load(path))
    try:
        assert store.component(Logs).retention == 14 * 86_400 * 10**9  # the spans' period
    finally:
        store.close()
    for text, reason in (
        ('[logs]\nkeep = "1d"\n', "[logs]: unknown setting 'keep'"),
        ('[logs]\nretention = "soon"\n', "[logs] retention"),
    ):
        path.write_text(text)
        with pytest.raises(ConfigError, match=re.escape(reason)):
            Settings.load(path)


def test_a_full_queue_refuses_log_records_as_it_refuses_spans(tmp_path: Path) -> None:
    """Logs share the spans' queue: past it, 503 + Retry-After and UNAVAILABLE, then they go in."""
    import asyncio

    import grpc

    from clew.ingest.writer import Writer
    from tests.test_backpressure import GatedStore, serving

    store = GatedStore(open_embedded(tmp_path / "data"))
    writer = Writer(store, max_queue_spans=3)
    writer.start()
    body = json.dumps(logs_doc("queued", [record(i, 9, f"queued line {i}") for i in range(2)])).encode()
    request = decode_logs_json(body).batch.payloads[0]

    async def scenario() -> None:
        async with serving(writer.write) as (port, grpc_port):
            url = f"http://127.0.0.1:{port}/v1/logs"
            headers = {"Content-Type": "application/json"}
            async with httpx.AsyncClient(timeout=60) as client:
                first = asyncio.create_task(client.post(url, content=body, headers=headers))
                await asyncio.to_thread(store.entered.wait, 30)  # the writer holds 2 records
                refused = await client.post(url, content=body, headers=headers)
                assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
                async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                    export = channel.unary_unary(
                        "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
                        request_serializer=None,
                        response_deserializer=None,
                    )
                    with pytest.raises(grpc.aio.AioRpcError) as err:
                        await export(request, timeout=30)
                    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
                    store.gate.set()
                    assert (await first).status_code == 200
                    assert (await client.post(url, content=body, headers=headers)).status_code == 200
                    answer = ExportLogsServiceResponse.FromString(await export(request, timeout=30))
                    assert answer.partial_success.rejected_log_records == 0

    try:
        asyncio.run(scenario())
    finally:
        writer.close()
    assert writer.refused_spans == 4  # two refused requests of two records
    stored = store.conn.query("SELECT count() FROM clew.logs WHERE service_name = 'queued'")
    assert stored.column(0)[0].as_py() == 6
    store.close()


def test_found_by_review_structured_bodies_odd_values_and_odd_queries(server: ServerProcess) -> None:
    """Cases a review found: each was a leak, a 500 or lost data."""
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abcDEF"
    sneaky = {
        "kvlistValue": {
            "values": [
                attr("card", "charged\n4111 1111 1111 1111"),
                attr("header", f"hdr:\t{jwt}"),
                attr("ip", "from\n10.1.2.3"),
                attr("aws", "k\nAKIAABCDEFGHIJKLMNOP"),
                attr("literal", "a backslash \\n then 5555 5555 5555 4444"),
            ]
        }
    }
    url_body = {
        "kvlistValue": {"values": [attr("url", "https://h/x?token=abc"), attr("user", "bob"), attr("n", 5)]}
    }
    array = {"key": "arr", "value": {"arrayValue": {"values": [{"stringValue": "x"}, {"intValue": "300"}]}}}
    raw = {"key": "raw", "value": {"bytesValue": "/4A="}}
    records = [
        record(1, 9, sneaky),
        record(2, 9, url_body),
        {**record(3, 9, {"doubleValue": "NaN"}), "attributes": [array, raw]},
        {**record(4, 300, "severity out of range"), "severityNumber": 300},
    ]
    assert post_logs(server, logs_doc("review", records)).status_code == 200
    response = httpx.get(f"{server.http_url}/api/v1/traces/{TRACE}/logs", timeout=30)
    assert response.status_code == 200, response.text
    logs = response.json()["logs"]
    assert logs[0]["body"] == {
        "card": "charged\n[REDACTED:card]",
        "header": "hdr:\t[REDACTED:token]",
        "ip": "from\n[REDACTED:ip]",
        "aws": "k\n[REDACTED:token]",
        "literal": "a backslash \\n then [REDACTED:card]",
    }
    assert logs[1]["body"] == {"url": "https://h/x?token=[REDACTED]", "user": "bob", "n": 5}
    assert logs[2]["body"] == "nan" and logs[2]["bodyType"] == "double"
    assert logs[2]["attributes"] == {"arr": ["x", 300], "raw": "/4A="}
    assert logs[3]["severityNumber"] == 0 and search(server, "severity>=fatal").json()["logs"] == []
    for params in (
        {"q": "severity:\u00b2"},
        {"q": "severity>=\u00b2"},
        {"limit": "\u00b2"},
        {"q": "trace:0"},
    ):
        bad = httpx.get(f"{server.http_url}/api/v1/logs", params=params, timeout=30)
        assert bad.status_code == 400, (params, bad.text)
    zeros = httpx.get(f"{server.http_url}/api/v1/traces/{'0' * 32}/logs", timeout=30)
    assert zeros.status_code == 200 and zeros.json()["logs"] == []


def test_jaeger_trace_view_shows_each_spans_log_records_with_its_events(server: ServerProcess) -> None:
    """Jaeger UI and Grafana's Jaeger data source show span logs: the records join the events."""
    trace = {
        "resourceSpans": [
            {
                "resource": {"attributes": [attr("service.name", "checkout")]},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": TRACE, "spanId": SPAN_A, "name": "POST /checkout", "kind": 2,
                                "startTimeUnixNano": str(NOW), "endTimeUnixNano": str(NOW + 50 * 10**6),
                                "events": [{"timeUnixNano": str(NOW + 10 * 10**6), "name": "cache miss"}],
                            },
                            {
                                "traceId": TRACE, "spanId": SPAN_B, "parentSpanId": SPAN_A, "name": "charge",
                                "startTimeUnixNano": str(NOW + 35 * 10**6), "endTimeUnixNano": str(NOW + 45 * 10**6),
                            },
                        ]
                    }
                ],
            }
        ]
    }  # fmt: skip
    assert httpx.post(f"{server.otlp_http_url}/v1/traces", json=trace, timeout=30).status_code == 200
    strays = logs_doc("elsewhere", [record(41, 9, "of a span not in this trace", "c3" * 8)])
    for doc in [*shop_logs(), strays]:
        assert post_logs(server, doc).status_code == 200
    (jaeger,) = httpx.get(f"{server.http_url}/api/traces/{TRACE}", timeout=30).json()["data"]
    spans = {span["spanID"]: span for span in jaeger["spans"]}

    def fields(log: dict) -> dict:
        return {f["key"]: f["value"] for f in log["fields"]}

    a_logs = spans[SPAN_A]["logs"]
    assert [log["timestamp"] for log in a_logs] == [(NOW + ms * 10**6) // 1000 for ms in (5, 10, 20, 30)]
    assert fields(a_logs[0]) == {"message": "placing order 1017", "level": "INFO", "order.id": 1017}
    assert fields(a_logs[1]) == {"event": "cache miss"}  # the span's own event, in time order
    assert fields(a_logs[2])["message"] == '{"attempt":2,"card":"ending 4242"}'
    assert fields(a_logs[3]) == {"message": '["a",1]', "level": "DEBUG"}
    (b_log,) = spans[SPAN_B]["logs"]
    assert fields(b_log) == {
        "message": "payment declined: insufficient funds",
        "level": "ERROR",
        "retry": False,
    }
    assert "of a span not in this trace" not in json.dumps(jaeger)


def test_clew_logs_prints_the_matching_records_in_the_terminal(logs_server: ServerProcess) -> None:
    import subprocess
    import sys

    def clew(*args: str) -> subprocess.CompletedProcess[str]:
        command = [
            sys.executable,
            "-m",
            "clew.cli",
            "logs",
            *args,
            "--url",
            logs_server.http_url,
            "--since",
            "7d",
        ]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    result = clew("severity>=warn")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["TIME", "(UTC)", "LEVEL", "SERVICE", "TRACE", "ID", "BODY"]
    assert [line.split()[2:4] for line in lines[1:3]] == [["ERROR", "checkout"], ["WARN", "payment"]]
    assert lines[1].split()[4] == TRACE and lines[1].endswith("payment declined: insufficient funds")
    assert lines[2].endswith('{"card":"ending 4242","attempt":2}')
    assert lines[-1] == "2 log records"
    assert clew("", "--limit", "1").stdout.splitlines()[-1].startswith("1 log record (more match")
    bad = clew("severity:loud")
    assert bad.returncode != 0 and "severity must be one of" in bad.stderr


def test_the_volume_of_matching_records_per_step_and_level(logs_server: ServerProcess) -> None:
    start, end = NOW // 10**9 - 60, NOW // 10**9 + 60
    url = f"{logs_server.http_url}/api/v1/logs/volume"
    doc = httpx.get(url, params={"start": start, "end": end, "step": 60}, timeout=30).json()
    assert doc["buckets"] == 3 and doc["step"] == str(60 * 10**9) and doc["start"] == str(start * 10**9)
    bucket = (NOW + 5 * 10**6 - start * 10**9) // (60 * 10**9)
    levels = {s["level"]: s["counts"] for s in doc["levels"]}
    assert [s["level"] for s in doc["levels"]] == ["error", "warn", "info", "debug"]  # most severe first
    assert all(counts[bucket] == 1 and sum(counts) == 1 for counts in levels.values())
    checkout = httpx.get(url, params={"q": "service:checkout", "start": start, "end": end}, timeout=30).json()
    assert int(checkout["step"]) == 10**9 and checkout["buckets"] == 121  # a second: the finest default
    assert {s["level"]: sum(s["counts"]) for s in checkout["levels"]} == {"error": 1, "info": 1}
    for params, reason in (
        ({"step": "0"}, "step must be"),
        ({"step": "1", "start": 0, "end": 10**6}, "more than 1000 buckets"),
        ({"q": "severity:loud"}, "severity must be"),
    ):
        bad = httpx.get(url, params=params, timeout=30)
        assert bad.status_code == 400 and reason in bad.json()["error"], bad.text
