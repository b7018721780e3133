"""Receiver limits: deep JSON, numbers out of range, lone surrogates, intValue beyond int64, event times
past 2262 and content types. Each finding through a real `clew serve` over HTTP (never a 5xx, a 4xx
that names the limit, a failure stores nothing), and at the decoder level."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from clew.core.errors import BadRequest
from clew.core.json_body import MAX_JSON_DEPTH, json_depth, load_json
from clew.receivers.files import parse_file
from clew.receivers.otlp import accept_request, decode_json, decode_protobuf, parse_json_request
from clew.receivers.zipkin import decode_zipkin
from tests.conftest import CONFORMANCE, ServerProcess, canonical_spans, varint

REFERENCE = CONFORMANCE / "otlp" / "trace.json"
KNOWN_TRACE = "5b8efff798038103d269b633813fc60c"
JSON = {"Content-Type": "application/json"}
PROTO = {"Content-Type": "application/x-protobuf"}
START = 1_700_000_000_000_000_000
DEEP = 100_000
LIMIT = f"JSON nested deeper than {MAX_JSON_DEPTH} levels"


def _otlp_span(trace_id: str, span_id: str, **extra: object) -> dict:
    return {
        "traceId": trace_id,
        "spanId": span_id,
        "name": "op",
        "startTimeUnixNano": str(START),
        "endTimeUnixNano": str(START + 1000),
        **extra,
    }


def _otlp(*spans: dict) -> dict:
    return {"resourceSpans": [{"scopeSpans": [{"spans": list(spans)}]}]}


def _zipkin_span(trace_id: str, span_id: str = "1111222233334444", **extra: object) -> dict:
    return {
        "traceId": trace_id,
        "id": span_id,
        "name": "op",
        "timestamp": START // 1000,
        "duration": 5,
        **extra,
    }


def _deep(opener: str, depth: int = DEEP) -> str:
    """`depth` nested arrays (`[[[1]]]`) or objects (`{"a":{"a":1}}`)."""
    if opener == "[":
        return "[" * depth + "1" + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


# --- decoder level --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("1", 0),
        ("[]", 1),
        ('[[{"a": "[[[[", "b": {}}]]', 4),
        ('"\\"[[[["', 0),
        ('["\\\\", [[]]]', 3),
        ('["a""b"[[]]]', 3),  # invalid, but counted as strings and brackets
        ('["]",["]",["]",[]]]]', 4),
        ("]]]", 0),
        ('"unterminated [[[', 0),
    ],
)
def test_json_depth_skips_strings_and_escapes(text: str, depth: int) -> None:
    assert json_depth(text) == depth


@pytest.mark.parametrize("opener", ["[", "{"])
def test_load_json_allows_the_limit_and_refuses_one_more(opener: str) -> None:
    assert load_json(_deep(opener, MAX_JSON_DEPTH).encode()) is not None
    for depth in (MAX_JSON_DEPTH + 1, DEEP):
        with pytest.raises(BadRequest, match=LIMIT):
            load_json(_deep(opener, depth).encode())


def test_load_json_depth_scan_is_linear() -> None:
    """Escaped quotes without a closing one must not make the string scan quadratic."""
    started = time.monotonic()
    with pytest.raises(BadRequest, match="Unterminated string"):
        load_json(b'"' + b'\\"' * 4_000_000)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"NaN", "NaN is not a JSON number"),
        (b"[Infinity]", "Infinity is not a JSON number"),
        (b'{"a": -Infinity}', "-Infinity is not a JSON number"),
        (b"[1e400]", "out of range of a double"),
        (b'"\xed\xa0\x80"', "not valid utf-8"),  # a surrogate encoded in UTF-8 bytes
        (b"\xff", "not valid utf-8"),
    ],
)
def test_load_json_refuses_non_numbers_and_invalid_text(body: bytes, reason: str) -> None:
    with pytest.raises(BadRequest, match=reason):
        load_json(body)


def test_lone_surrogate_escapes_become_replacement_characters() -> None:
    doc = load_json(
        rb'["\ud800", "\\ud800", "\\\ud800", "\ud83d\ude00", "\udc00\ud800\ud800\udc00", {"\uDBFF": 1}]'
    )
    assert doc == ["\ufffd", "\\ud800", "\\\ufffd", "\U0001f600", "\ufffd\ufffd\U00010000", {"\ufffd": 1}]


@pytest.mark.parametrize("value", [1.5e300, "1.5e+300", 2**64, -(2**64), str(2**63)])
def test_otlp_json_int_value_beyond_int64_is_kept_as_a_double(value: object) -> None:
    body = json.dumps(
        _otlp(_otlp_span("a1" * 16, "a1" * 8, attributes=[{"key": "n", "value": {"intValue": value}}]))
    )
    decoded = decode_json(body.encode())
    assert decoded.rejected == 0
    (payload,) = decoded.batch.payloads
    attr = (
        ExportTraceServiceRequest.FromString(payload).resource_spans[0].scope_spans[0].spans[0].attributes[0]
    )
    assert attr.value.WhichOneof("value") == "double_value"
    assert attr.value.double_value == float(value)  # type: ignore[arg-type]


def test_otlp_json_span_that_does_not_parse_is_dropped_naming_the_attribute() -> None:
    good = _otlp_span("a2" * 16, "a2" * 8)
    bad = _otlp_span("a2" * 16, "b2" * 8, attributes=[{"key": "ratio", "value": {"intValue": 1.5}}])
    not_a_span = 7
    decoded = decode_json(json.dumps(_otlp(good, bad, not_a_span)).encode())
    assert decoded.batch.spans == 1
    assert decoded.rejected == 2
    assert "attribute 'ratio': value.intValue: Couldn't parse integer: 1.5" in decoded.error_message
    assert "a span must be a JSON object" in decoded.error_message
    # files are taken whole: the same document is refused, naming the span
    with pytest.raises(BadRequest, match=r"spans\[1\]: attribute 'ratio'"):
        parse_json_request(json.dumps(_otlp(good, bad)).encode())


def test_partial_success_message_names_at_most_ten_reasons() -> None:
    spans = [
        _otlp_span("a3" * 16, f"{i + 1:016x}", attributes=[{"key": f"k{i}", "value": {"intValue": 0.5}}])
        for i in range(30)
    ]
    decoded = decode_json(json.dumps(_otlp(*spans)).encode())
    assert decoded.rejected == 30
    assert decoded.error_message.count("span(s):") == 10
    assert decoded.error_message.endswith("; 20 span(s) for other reasons")


def _with_event_at(time_unix_nano: int, trace_id: bytes = b"\xa4" * 16) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    for i, t in enumerate((time_unix_nano, START)):
        span = spans.add(
            trace_id=trace_id,
            span_id=bytes([i + 1]) * 8,
            start_time_unix_nano=START,
            end_time_unix_nano=START + 1,
        )
        span.events.add(time_unix_nano=t, name="e")
    return request


@pytest.mark.parametrize("late", [2**63, 2**64 - 1])
def test_span_with_an_event_past_2262_is_dropped(late: int) -> None:
    decoded = decode_protobuf(_with_event_at(late).SerializeToString())
    assert (decoded.batch.spans, decoded.rejected) == (1, 1)
    assert decoded.error_message == "1 span(s): event time is past the year 2262"


def test_event_screen_false_match_drops_nothing() -> None:
    """Bytes that look like a late event inside an id or a bytes value must not drop anything."""
    request = _with_event_at(START)
    span = request.resource_spans[0].scope_spans[0].spans[1]
    span.attributes.add(key="b").value.bytes_value = b"\x5a\x10\x09" + b"\x00" * 7 + b"\xff"
    decoded = accept_request(request)
    assert (decoded.batch.spans, decoded.rejected) == (2, 0)


@pytest.mark.parametrize(
    ("extra", "outcome"),
    [
        ({"timestamp": 1e30}, "time is past the year 2262"),
        ({"timestamp": 2**64}, "time is past the year 2262"),
        ({"duration": 2**64}, "time is past the year 2262"),
        ({"annotations": [{"timestamp": 1e30, "value": "a"}]}, "event time is past the year 2262"),
        ({"remoteEndpoint": {"port": 2**70}}, "span[0].remoteEndpoint.port: expected a port number"),
        ({"localEndpoint": {"port": True}}, "span[0].localEndpoint.port: expected a port number"),
        ({"annotations": 5}, "span[0].annotations: expected a list"),
        ({"timestamp": "soon"}, "span[0].timestamp: expected a non-negative number"),
        ({"duration": -1}, "span[0].duration: expected a non-negative number"),
    ],
)
def test_zipkin_numbers_and_types(extra: dict, outcome: str) -> None:
    body = json.dumps([_zipkin_span("c1" * 16, **extra)]).encode()
    if "2262" in outcome:  # the right type, a value no span can hold: that span is dropped
        decoded = decode_zipkin(body)
        assert (decoded.batch.spans, decoded.rejected) == (0, 1)
        assert outcome in decoded.error_message
    else:  # the wrong type: the request is refused, naming the field
        with pytest.raises(BadRequest, match=outcome.replace("[", r"\[").replace("]", r"\]")):
            decode_zipkin(body)


@pytest.mark.parametrize(("port", "stored"), [("8080", 8080), (-1, None), (0, None), (65535, 65535)])
def test_zipkin_ports_as_zipkin_reads_them(port: object, stored: int | None) -> None:
    body = json.dumps([_zipkin_span("c2" * 16, remoteEndpoint={"port": port})]).encode()
    (payload,) = decode_zipkin(body).batch.payloads
    attrs = ExportTraceServiceRequest.FromString(payload).resource_spans[0].scope_spans[0].spans[0].attributes
    ports = [kv.value.int_value for kv in attrs if kv.key == "net.peer.port"]
    assert ports == ([] if stored is None else [stored])


@pytest.mark.parametrize(
    "content",
    [
        _deep("[").encode(),
        b'{"resourceSpans": ' + _deep("{").encode() + b"}",
        b'{"data": [{"spans": [], "processes": ' + _deep("[").encode() + b"}]}",
    ],
    ids=["array", "otlp-object", "jaeger"],
)
def test_files_refuse_deep_json(content: bytes) -> None:
    with pytest.raises(BadRequest, match=LIMIT):
        parse_file(content)


@pytest.mark.parametrize(
    "content",
    [
        b'{"data": [{"spans": [], "processes": []}]}',  # processes is no object
        b'{"data": [{"spans": [5], "processes": {}}]}',
        b'{"spans": [], "processes": {"p": {"serviceName": "s", "tags": [{"key": "k", "type": "int64", "value": 1e300}]}}}',
        b'{"data": [], "x": NaN}',
    ],
)
def test_files_refuse_malformed_jaeger_with_a_reason(content: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_file(content)


def test_clew_import_of_a_deep_file_names_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text(_deep("["))
    result = subprocess.run(
        [sys.executable, "-m", "clew.cli", "import", str(path), "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert LIMIT in result.stderr
    assert "Traceback" not in result.stderr


# --- through a real server --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("limits") / "data").start()
    try:
        response = httpx.post(f"{proc.otlp_http_url}/v1/traces", content=REFERENCE.read_bytes(), headers=JSON)
        assert response.status_code == 200, response.text
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def known(server: ServerProcess) -> dict:
    stored = server.trace(KNOWN_TRACE)
    assert stored is not None
    return stored


def _otlp_post(server: ServerProcess, body: bytes, headers: dict) -> httpx.Response:
    return httpx.post(f"{server.otlp_http_url}/v1/traces", content=body, headers=headers, timeout=60)


def _zipkin_post(server: ServerProcess, body: bytes, headers: dict | None = None) -> httpx.Response:
    return httpx.post(
        f"{server.zipkin_url}/api/v2/spans",
        content=body,
        headers=JSON if headers is None else headers,
        timeout=60,
    )


def _reason(response: httpx.Response) -> str:
    if response.headers.get("content-type", "").startswith("application/x-protobuf"):
        return Status.FromString(response.content).message
    body = response.json()
    return body.get("message") or body.get("error") or ""


def _assert_unchanged(server: ServerProcess, known: dict) -> None:
    assert server.trace(KNOWN_TRACE) == known


@pytest.mark.parametrize("opener", ["[", "{"])
@pytest.mark.parametrize("receiver", ["otlp-json", "zipkin"])
def test_deep_json_is_a_400_naming_the_limit(server, known, receiver: str, opener: str) -> None:
    deep = _deep(opener).encode()
    if receiver == "otlp-json":
        response = _otlp_post(server, b'{"resourceSpans": ' + deep + b"}", JSON)
    else:
        response = _zipkin_post(server, deep)
    assert response.status_code == 400, response.text
    assert LIMIT in _reason(response)
    _assert_unchanged(server, known)


def test_deep_protobuf_is_a_400(server, known) -> None:
    # AnyValue -> KeyValueList -> KeyValue -> AnyValue ... past upb's limit of 100 nested messages
    value = b""
    for _ in range(200):
        kv = b"\x0a\x01k" + b"\x12" + varint(len(value)) + value  # KeyValue{key, value}
        kvlist = b"\x0a" + varint(len(kv)) + kv  # KeyValueList{values}
        value = b"\x32" + varint(len(kvlist)) + kvlist  # AnyValue{kvlist_value = 6}
    response = _otlp_post(server, _request_with_attribute_value(value), PROTO)
    assert response.status_code == 400
    assert "cannot decode" in _reason(response)
    _assert_unchanged(server, known)


def _request_with_attribute_value(value: bytes) -> bytes:
    """A request whose one span has the attribute `k` = the serialized AnyValue `value`, framed by hand
    (the Python protobuf runtime cannot build a message deeper than its own limit)."""
    span = (
        ExportTraceServiceRequest()
        .resource_spans.add()
        .scope_spans.add()
        .spans.add(
            trace_id=b"\xd1" * 16,
            span_id=b"\xd1" * 8,
            start_time_unix_nano=START,
            end_time_unix_nano=START + 1,
        )
    )
    kv = b"\x0a\x01k\x12" + varint(len(value)) + value  # KeyValue{key = 1, value = 2}
    span_bytes = span.SerializeToString() + b"\x4a" + varint(len(kv)) + kv  # Span.attributes = 9
    scope = b"\x12" + varint(len(span_bytes)) + span_bytes  # ScopeSpans.spans = 2
    resource = b"\x12" + varint(len(scope)) + scope  # ResourceSpans.scope_spans = 2
    return b"\x0a" + varint(len(resource)) + resource  # ExportTraceServiceRequest.resource_spans = 1


@pytest.mark.parametrize(
    ("extra", "status", "reason"),
    [
        ({"timestamp": 1e30}, 202, "time is past the year 2262"),
        ({"timestamp": 2**64}, 202, "time is past the year 2262"),
        ({"duration": 2**64}, 202, "time is past the year 2262"),
        ({"annotations": [{"timestamp": 2**64, "value": "x"}]}, 202, "event time is past the year 2262"),
        ({"remoteEndpoint": {"port": 2**70}}, 400, "remoteEndpoint.port: expected a port number up to 65535"),
        ({"annotations": 5}, 400, "annotations: expected a list"),
        ({"tags": [1]}, 400, "tags: expected an object"),
        ({"localEndpoint": "frontend"}, 400, "localEndpoint: expected an object"),
    ],
)
def test_zipkin_numbers_and_wrong_types_through_the_server(server, known, extra, status, reason) -> None:
    response = _zipkin_post(server, json.dumps([_zipkin_span("e1" * 16, **extra)]).encode())
    assert response.status_code == status, response.text
    if status == 202:
        assert response.json() == {"rejectedSpans": 1, "errorMessage": f"1 span(s): {reason}"}
        assert server.trace("e1" * 16) is None
    else:
        assert reason in response.json()["error"]
    _assert_unchanged(server, known)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_literals_are_refused_everywhere(server, known, literal: str) -> None:
    zipkin = f'[{{"traceId": "{"e2" * 16}", "id": "1111222233334444", "timestamp": {literal}}}]'
    otlp = json.dumps(
        _otlp(_otlp_span("e2" * 16, "e2" * 8, attributes=[{"key": "d", "value": {"doubleValue": 0}}]))
    ).replace('"doubleValue": 0', f'"doubleValue": {literal}')
    for response in (_zipkin_post(server, zipkin.encode()), _otlp_post(server, otlp.encode(), JSON)):
        assert response.status_code == 400, response.text
        assert f"{literal} is not a JSON number" in _reason(response)
    assert server.trace("e2" * 16) is None
    _assert_unchanged(server, known)


def test_lone_surrogates_are_stored_as_replacement_characters(server, known) -> None:
    otlp = json.dumps(
        _otlp(
            _otlp_span(
                "e3" * 16,
                "e3" * 8,
                name="name\ud800",
                attributes=[{"key": "key\udc00", "value": {"stringValue": "value\ud83d"}}],
            )
        )
    )
    assert "\\ud800" in otlp  # json.dumps escapes them, as a JavaScript exporter may
    response = _otlp_post(server, otlp.encode(), JSON)
    assert response.status_code == 200, response.text
    assert response.json() == {}
    span = canonical_spans(server.trace("e3" * 16))["e3" * 8]["span"]
    assert span["name"] == "name\ufffd"
    assert span["attributes"] == [{"key": "key\ufffd", "value": {"stringValue": "value\ufffd"}}]

    zipkin = [
        _zipkin_span(
            "e4" * 16,
            name="get\ud800",
            tags={"k\ud800": "v\udfff"},
            localEndpoint={"serviceName": "svc\ud800"},
            annotations=[{"timestamp": START // 1000, "value": "a\udc00"}],
        )
    ]
    response = _zipkin_post(server, json.dumps(zipkin).encode())
    assert response.status_code == 202, response.text
    stored = canonical_spans(server.trace("e4" * 16))["1111222233334444"]
    assert stored["span"]["name"] == "get\ufffd"
    assert {"key": "k\ufffd", "value": {"stringValue": "v\ufffd"}} in stored["span"]["attributes"]
    assert stored["span"]["events"][0]["name"] == "a\ufffd"
    assert {"key": "service.name", "value": {"stringValue": "svc\ufffd"}} in stored["resource"]["attributes"]
    _assert_unchanged(server, known)


def test_int_value_beyond_int64_is_stored_as_a_double_and_a_fraction_drops_its_span(server, known) -> None:
    big = _otlp_span("e5" * 16, "e5" * 8, attributes=[{"key": "size", "value": {"intValue": 1.5e300}}])
    huge = _otlp_span(
        "e5" * 16, "f5" * 8, attributes=[{"key": "n", "value": {"intValue": "18446744073709551616"}}]
    )
    fraction = _otlp_span("e5" * 16, "a5" * 8, attributes=[{"key": "ratio", "value": {"intValue": 1.5}}])
    body = json.dumps(_otlp(big, huge, fraction)).encode()
    response = _otlp_post(server, body, JSON)
    assert response.status_code == 200, response.text
    partial = response.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "1"
    assert "attribute 'ratio'" in partial["errorMessage"]
    stored = canonical_spans(server.trace("e5" * 16))
    assert set(stored) == {"e5" * 8, "f5" * 8}
    assert stored["e5" * 8]["span"]["attributes"] == [{"key": "size", "value": {"doubleValue": 1.5e300}}]
    assert stored["f5" * 8]["span"]["attributes"] == [{"key": "n", "value": {"doubleValue": 2.0**64}}]
    _assert_unchanged(server, known)


@pytest.mark.parametrize("late", [2**63, 2**64 - 1])
def test_event_past_2262_is_rejected_and_the_trace_stays_readable(server, known, late: int) -> None:
    trace_id = bytes([0xE6, late & 0xFF]) * 8
    body = _with_event_at(late, trace_id).SerializeToString()
    response = _otlp_post(server, body, PROTO)
    assert response.status_code == 200
    partial = ExportTraceServiceResponse.FromString(response.content).partial_success
    assert partial.rejected_spans == 1
    assert "event time is past the year 2262" in partial.error_message
    stored = server.trace(trace_id.hex())  # used to be a 500: the event time read back negative
    assert stored is not None
    assert len(canonical_spans(stored)) == 1
    _assert_unchanged(server, known)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Content-Type": "text/plain"},
        {"Content-Type": "application/x-www-form-urlencoded"},
        {"Content-Type": "multipart/form-data; boundary=x"},
        {"Content-Type": "application/x-protobuf"},
    ],
    ids=["none", "text-plain", "form", "multipart", "protobuf"],
)
def test_zipkin_takes_only_application_json(server, known, headers: dict) -> None:
    """A cross-origin page can POST text/plain, forms and bodies without a type without asking."""
    trace_id = f"e7{len(json.dumps(headers)):030x}"
    body = json.dumps([_zipkin_span(trace_id)]).encode()
    response = _zipkin_post(server, body, headers)
    assert response.status_code == 415, response.text
    assert "send application/json" in response.json()["error"]
    assert server.trace(trace_id) is None
    assert _zipkin_post(server, body, {"Content-Type": "application/json; charset=utf-8"}).status_code == 202
    assert server.trace(trace_id) is not None
    _assert_unchanged(server, known)


@pytest.mark.parametrize(
    "headers",
    [{}, {"Content-Type": "text/plain"}, {"Content-Type": "application/x-www-form-urlencoded"}],
    ids=["none", "text-plain", "form"],
)
def test_otlp_http_takes_only_json_and_protobuf(server, known, headers: dict) -> None:
    body = json.dumps(_otlp(_otlp_span("e8" * 16, "e8" * 8))).encode()
    response = _otlp_post(server, body, headers)
    assert response.status_code == 415, response.text
    assert "send application/x-protobuf or application/json" in _reason(response)
    assert server.trace("e8" * 16) is None
    _assert_unchanged(server, known)
