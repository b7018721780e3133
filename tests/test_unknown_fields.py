"""Fields the receiver does not know, through the write-ahead log into the engine.

upb keeps a field whose number it does not know, or whose number it knows but whose wire type is not
the field's, as an unknown field. The engine reads the request's bytes with the same schema, and
refuses a whole insert over a known number with the wrong wire type (bench/RESULTS.md, session 19):
one such request would hold up every request logged with it. The receiver drops unknown fields
before the log (`accept_request`). These tests send such fields at every level of a request, through
a server with its log on, and check that what is stored is what the receiver accepted.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from clew.receivers.otlp import decode_protobuf, to_otlp_json
from tests.conftest import ServerProcess, canonical_spans, varint

START = 1_700_000_000_000_000_000
SECRET = b"password=hunter2"  # sent only inside unknown fields: never stored


def field(number: int, wire: int, payload: bytes | int) -> bytes:
    """One protobuf field: varint (0), 64-bit (1), length-delimited (2) or 32-bit (5)."""
    tag = varint(number << 3 | wire)
    if wire == 0:
        return tag + varint(int(payload))
    if wire == 2:
        assert isinstance(payload, bytes)
        return tag + varint(len(payload)) + payload
    size = 8 if wire == 1 else 4
    raw = payload if isinstance(payload, bytes) else int(payload).to_bytes(size, "little")
    return tag + raw[:size].ljust(size, b"\0")


def request(n: int, span: bytes = b"", value: bytes = b"", resource: bytes = b"", top: bytes = b"") -> bytes:
    """A request of one span of trace `n` with `span`, `value`, `resource` and `top` appended to the
    span, its first attribute's value, the resource and the request itself."""
    attribute = field(1, 2, b"tier") + field(2, 2, AnyValue(string_value="gold").SerializeToString() + value)
    body = Span(
        trace_id=n.to_bytes(16, "big"),
        span_id=(n + 1).to_bytes(8, "big"),
        name="checkout",
        kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=START,
        end_time_unix_nano=START + 5_000_000,
        attributes=[KeyValue(key="count", value=AnyValue(int_value=3))],
    ).SerializeToString()
    body += field(9, 2, attribute) + span
    service = KeyValue(key="service.name", value=AnyValue(string_value="unknown-fields"))
    res = Resource(attributes=[service]).SerializeToString() + resource
    scope = field(1, 2, InstrumentationScope(name="t").SerializeToString()) + field(2, 2, body)
    return field(1, 2, field(1, 2, res) + field(2, 2, scope)) + top


def accepted(body: bytes) -> dict:
    """What the receiver accepts of `body`, as OTLP/JSON."""
    decoded = decode_protobuf(body)
    req = ExportTraceServiceRequest()
    for payload in decoded.batch.payloads:
        req.MergeFromString(bytes(payload))
    return to_otlp_json(req)


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with its log on: requests are answered once logged, and a read commits the log."""
    server = ServerProcess(Path(tmp_path_factory.mktemp("unknown")) / "data", wal=True).start()
    yield server
    server.stop()


def stored(server: ServerProcess, n: int) -> dict:
    doc = server.trace(n.to_bytes(16, "big").hex())
    assert doc is not None, f"trace {n} was not stored"
    return doc


def test_known_numbers_with_the_wrong_wire_type_at_every_level_are_stored_as_accepted(
    logged: ServerProcess,
) -> None:
    extras = {
        # the span's name as a varint, its start as a varint, its kind as 64 bits, its trace id as 32
        "span": field(5, 0, 7) + field(7, 0, 1) + field(6, 1, 2) + field(1, 5, 9) + field(99, 2, SECRET),
        "value": field(1, 0, 5) + field(3, 2, b"x") + field(77, 2, SECRET),  # string_value as a varint
        "resource": field(1, 0, 1) + field(2, 2, SECRET),  # attributes as a varint
        "top": field(1, 0, 4) + field(1000, 2, SECRET),
    }
    bodies = {1001: request(1001, **extras), 1003: request(1003)}  # the second one clean, logged beside
    for body in bodies.values():
        answer = logged.post_otlp(body)
        assert answer.status_code == 200 and answer.content == b"", answer.content
    for n, body in bodies.items():
        doc = stored(logged, n)
        assert canonical_spans(doc) == canonical_spans(accepted(body))
        assert "hunter2" not in str(doc)
    [span] = canonical_spans(stored(logged, 1001)).values()
    assert span["span"]["name"] == "checkout" and span["span"]["kind"] == 2
    assert span["span"]["startTimeUnixNano"] == str(START)


NUMBERS = st.sampled_from([*range(1, 17), 99, 2**29 - 1])
# the message each place appends to: a field there is unknown to the receiver when its number is not
# one of the message's, or its wire type not one the field's type is written with
PLACES = {"span": Span, "value": AnyValue, "resource": Resource, "top": ExportTraceServiceRequest}
_FIXED64 = {FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64, FieldDescriptor.TYPE_DOUBLE}
_FIXED32 = {FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_SFIXED32, FieldDescriptor.TYPE_FLOAT}
_LENGTH = {FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES, FieldDescriptor.TYPE_MESSAGE}


def unknown_to(message: type, number: int, wire: int) -> bool:
    known = message.DESCRIPTOR.fields_by_number.get(number)
    if known is None:
        return True
    if known.type in _LENGTH:
        return wire != 2
    scalar = 1 if known.type in _FIXED64 else 5 if known.type in _FIXED32 else 0
    packed = wire == 2 and known.is_repeated
    return wire != scalar and not packed


PAYLOADS = {
    0: st.integers(0, 2**64 - 1),
    1: st.binary(min_size=8, max_size=8),
    2: st.lists(st.sampled_from(b"xyz\x00\x01\x08\x12\x80\xff"), max_size=12).map(bytes),
    5: st.binary(min_size=4, max_size=4),
}
TRACES = itertools.count(2000, 2)
EXTRA = st.sampled_from(sorted(PLACES)).flatmap(
    lambda where: st.sampled_from(sorted(PAYLOADS)).flatmap(
        lambda wire: st.tuples(
            st.just(where),
            st.tuples(NUMBERS, st.just(wire), PAYLOADS[wire])
            .filter(lambda t: unknown_to(PLACES[where], t[0], t[1]))
            .map(lambda t: field(*t)),
        )
    )
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(extras=st.lists(EXTRA, min_size=1, max_size=4))
def test_any_field_the_receiver_does_not_know_is_dropped_and_the_rest_stored_as_accepted(
    logged: ServerProcess, extras: list[tuple[str, bytes]]
) -> None:
    n = next(TRACES)  # a trace of its own: examples (and their replays) share the server
    parts = {where: b"".join(raw for w, raw in extras if w == where) for where, _ in extras}
    body = request(n, **parts)
    expected = accepted(body)
    assert canonical_spans(expected) == canonical_spans(accepted(request(n)))  # the same, known fields
    answer = logged.post_otlp(body)
    assert answer.status_code == 200, answer.content
    sent = canonical_spans(expected)
    traces = {span["span"]["traceId"] for span in sent.values()}
    got: dict = {}
    for trace in traces:
        got |= canonical_spans(stored(logged, int(trace, 16)))
    assert got == sent


def log_request(span: int, record: bytes = b"", value: bytes = b"", resource: bytes = b"") -> bytes:
    """OTLP logs: one record of trace 3000's span `span`, with `record`, `value` and `resource`
    appended to the record, its body and the resource."""
    body = AnyValue(string_value="disk almost full").SerializeToString() + value
    fields = LogRecord(
        time_unix_nano=START,
        severity_number=13,
        severity_text="WARN",
        trace_id=(3000).to_bytes(16, "big"),
        span_id=span.to_bytes(8, "big"),
    ).SerializeToString()
    fields += field(5, 2, body) + record
    service = KeyValue(key="service.name", value=AnyValue(string_value="unknown-fields"))
    res = Resource(attributes=[service]).SerializeToString() + resource
    return field(1, 2, field(1, 2, res) + field(2, 2, field(2, 2, fields)))


def test_log_records_with_fields_the_receiver_does_not_know_are_stored_as_accepted(
    logged: ServerProcess,
) -> None:
    extras = {
        # the severity text and the time as varints, the trace id as 32 bits, the body as a varint
        "record": field(3, 0, 1) + field(1, 0, 2) + field(9, 5, 3) + field(5, 0, 4) + field(99, 2, SECRET),
        "value": field(1, 0, 5) + field(50, 2, SECRET),
        "resource": field(1, 0, 6) + field(30, 2, SECRET),
    }
    for body in (log_request(1, **extras), log_request(2)):
        answer = httpx.post(
            f"{logged.otlp_http_url}/v1/logs",
            content=body,
            headers={"Content-Type": "application/x-protobuf"},
            timeout=30,
        )
        assert answer.status_code == 200 and answer.content == b"", answer.content
    response = httpx.get(
        f"{logged.http_url}/api/v1/traces/{(3000).to_bytes(16, 'big').hex()}/logs", timeout=30
    )
    logs = response.json()["logs"]
    assert [(log["spanId"], log["severityText"], log["body"]) for log in logs] == [
        ((n).to_bytes(8, "big").hex(), "WARN", "disk almost full") for n in (1, 2)
    ]
    assert all(int(log["timeUnixNano"]) == START for log in logs)
    assert "hunter2" not in response.text


def test_kinds_and_status_codes_outside_their_enums_are_stored_as_unspecified(logged: ServerProcess) -> None:
    """OTLP's enums are open, so the receiver takes any value; the store keeps the defined ones and
    stores the rest as unspecified (kind) and unset (status), as it does the logs' severity, instead of
    wrapping them into a byte: a kind of 257 read back as INTERNAL, a status of 258 as ERROR."""
    cases = {4000: (257, 258), 4002: (2**31 - 1, -1), 4004: (3, 2)}
    for n, (kind, code) in cases.items():
        extra = field(6, 0, kind % 2**64) + field(15, 2, field(3, 0, code % 2**64))
        assert logged.post_otlp(request(n, span=extra)).status_code == 200
    got = {n: next(iter(canonical_spans(stored(logged, n)).values()))["span"] for n in cases}
    assert [(got[n].get("kind", 0), got[n].get("status", {}).get("code", 0)) for n in cases] == [
        (0, 0),
        (0, 0),
        (3, 2),
    ]
