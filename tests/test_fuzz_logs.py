"""Fuzzing the logs' way in and out (Hypothesis): almost-valid OTLP/JSON log documents and arbitrary
bytes into the decoders (only `BadRequest`, never another exception), the same bodies through a real
server's `/v1/logs` (never a 5xx; what is answered 200 is readable by its trace), and arbitrary
queries into `/api/v1/logs` and trace ids into `/api/v1/traces/{id}/logs` (a 200 or a 400 with a
reason, and the stored logs unchanged)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from clew.components.logs.search import parse_query
from clew.core.errors import BadRequest
from clew.receivers.otlp import Decoded
from clew.receivers.otlp_logs import decode_logs_json, decode_logs_protobuf
from tests.conftest import ServerProcess

FAST = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
SERVED = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
NOW = time.time_ns()
KNOWN = "7e" * 16

TEXT = st.text(max_size=12)
NUMBERS = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False),
    st.sampled_from(["1", "-1", "1e400", "18446744073709551616", "abc", ""]),
)
HEX = st.one_of(
    st.sampled_from(["", KNOWN, "00" * 16, "ab" * 8, "abc", "zz" * 16]), st.binary(max_size=17).map(bytes.hex)
)


def any_value(depth: int = 2) -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.builds(lambda v: {"stringValue": v}, TEXT),
        st.builds(lambda v: {"intValue": v}, NUMBERS),
        st.builds(lambda v: {"doubleValue": v}, NUMBERS),
        st.builds(lambda v: {"boolValue": v}, st.one_of(st.booleans(), TEXT)),
        st.builds(
            lambda v: {"bytesValue": v},
            st.one_of(st.binary(max_size=6).map(lambda b: base64.b64encode(b).decode()), TEXT),
        ),
        st.just({}),
        TEXT,
    )
    if depth == 0:
        return scalars
    inner = any_value(depth - 1)
    return st.one_of(
        scalars,
        st.builds(lambda vs: {"arrayValue": {"values": vs}}, st.lists(inner, max_size=3)),
        st.builds(
            lambda kvs: {"kvlistValue": {"values": [{"key": k, "value": v} for k, v in kvs]}},
            st.lists(st.tuples(TEXT, inner), max_size=3),
        ),
    )


RECORD = st.fixed_dictionaries(
    {},
    optional={
        "timeUnixNano": NUMBERS,
        "observedTimeUnixNano": NUMBERS,
        "severityNumber": st.one_of(st.integers(-5, 300), TEXT, st.sampled_from(["SEVERITY_NUMBER_ERROR"])),
        "severityText": TEXT,
        "body": any_value(),
        "attributes": st.lists(
            st.fixed_dictionaries({"key": TEXT}, optional={"value": any_value(1)}), max_size=3
        ),
        "traceId": HEX,
        "spanId": HEX,
        "flags": NUMBERS,
        "eventName": TEXT,
        "droppedAttributesCount": NUMBERS,
    },
)
DOCUMENTS = st.builds(
    lambda records, service, junk: {
        "resourceLogs": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
                "scopeLogs": [{"scope": {"name": "fuzz"}, "logRecords": records}, *junk],
            }
        ]
    },
    st.lists(st.one_of(RECORD, TEXT, st.integers()), max_size=4),
    TEXT,
    st.lists(st.one_of(st.just({}), st.just({"logRecords": 5}), st.just([])), max_size=1),
)


def _decode(decoder: Any, body: bytes) -> Decoded | None:
    try:
        decoded = decoder(body)
    except BadRequest as exc:
        assert exc.message
        return None
    assert isinstance(decoded, Decoded)
    if decoded.batch.spans:
        request = ExportLogsServiceRequest.FromString(decoded.batch.payloads[0])
        records = [r for rl in request.resource_logs for sl in rl.scope_logs for r in sl.log_records]
        assert len(records) == decoded.batch.spans
        for r in records:
            assert len(r.trace_id) in (0, 16) and len(r.span_id) in (0, 8)
            assert r.body.WhichOneof("value") not in ("kvlist_value", "array_value", "bytes_value")
    return decoded


@FAST
@given(body=st.binary(max_size=300))
def test_any_bytes_into_the_log_decoders(body: bytes) -> None:
    _decode(decode_logs_protobuf, body)
    _decode(decode_logs_json, body)


@FAST
@given(doc=DOCUMENTS)
@example(
    doc={
        "resourceLogs": [
            {
                "scopeLogs": [
                    {
                        "logRecords": [
                            {
                                "body": {
                                    "kvlistValue": {"values": [{"key": "x", "value": {"doubleValue": "NaN"}}]}
                                }
                            }
                        ]
                    }
                ]
            }
        ]
    }
)
def test_almost_valid_otlp_json_logs(doc: dict[str, Any]) -> None:
    _decode(decode_logs_json, json.dumps(doc).encode())


QUERIES = st.one_of(
    st.text(max_size=60),
    st.lists(
        st.one_of(
            st.tuples(
                st.sampled_from(["service", "severity", "level", "trace", "span", "body", "k", "a.b", "@x"]),
                st.sampled_from([":", "=", "!=", ">", ">=", "<", "<="]),
                st.one_of(TEXT, st.sampled_from(["error", "5", KNOWN, '"a b"', "1e999", "nan"])),
            ).map("".join),
            TEXT,
        ),
        max_size=6,
    ).map(" ".join),
)


@FAST
@given(q=QUERIES)
def test_any_query_parses_or_is_a_bad_request(q: str) -> None:
    try:
        query = parse_query(q)
    except BadRequest as exc:
        assert exc.message
        return
    assert all(f"{{{name}:" in " ".join(query.conditions) for name in query.params)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, list[Any]]]:
    server = ServerProcess(tmp_path_factory.mktemp("fuzz-logs") / "data").start()
    try:
        doc = {"resourceLogs": [{"resource": {}, "scopeLogs": [{"logRecords": [
            {"timeUnixNano": str(NOW), "traceId": KNOWN, "body": {"stringValue": "the known line"}}]}]}]}  # fmt: skip
        assert httpx.post(f"{server.otlp_http_url}/v1/logs", json=doc, timeout=30).status_code == 200
        known = _trace_logs(server, KNOWN)
        assert [log["body"] for log in known] == ["the known line"]
        yield server, known
    finally:
        server.stop()


def _trace_logs(server: ServerProcess, trace: str) -> list[Any]:
    response = httpx.get(f"{server.http_url}/api/v1/traces/{trace}/logs", timeout=30)
    assert response.status_code == 200, response.text
    return list(response.json()["logs"])


@SERVED
@given(doc=DOCUMENTS, as_protobuf=st.booleans())
def test_log_documents_through_the_server(
    served: tuple[ServerProcess, list[Any]], doc: dict, as_protobuf: bool
) -> None:
    server, known = served
    body = json.dumps(doc).encode()
    headers = {"Content-Type": "application/json"}
    if as_protobuf:
        decoded = _decode(decode_logs_json, body)
        if decoded is None or not decoded.batch.spans:
            return
        body, headers = decoded.batch.payloads[0], {"Content-Type": "application/x-protobuf"}
    response = httpx.post(f"{server.otlp_http_url}/v1/logs", content=body, headers=headers, timeout=60)
    assert response.status_code < 500, response.text[:300]
    if response.status_code == 200:
        decoded = decode_logs_json(json.dumps(doc).encode())
        request = (
            ExportLogsServiceRequest.FromString(decoded.batch.payloads[0]) if decoded.batch.spans else None
        )
        for rl in request.resource_logs if request else []:
            for sl in rl.scope_logs:
                for r in sl.log_records[:2]:
                    if r.trace_id:
                        assert _trace_logs(server, r.trace_id.hex())
    assert _trace_logs(server, KNOWN)[:1] == known  # what was stored before is unchanged


@SERVED
@given(q=QUERIES, limit=st.one_of(st.integers(-5, 2000).map(str), TEXT), trace=st.one_of(TEXT, HEX))
def test_queries_through_the_server(
    served: tuple[ServerProcess, list[Any]], q: str, limit: str, trace: str
) -> None:
    server, _ = served
    response = httpx.get(
        f"{server.http_url}/api/v1/logs", params={"q": q, "limit": limit, "start": 0}, timeout=60
    )
    assert response.status_code in (200, 400), response.text[:300]
    if response.status_code == 400:
        assert response.json()["error"]
    if trace:
        answer = httpx.get(f"{server.http_url}/api/v1/traces/{quote(trace, safe='')}/logs", timeout=60)
        assert answer.status_code in (200, 400, 404), answer.text[:300]
