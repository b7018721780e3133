"""Fuzzing the receivers with Hypothesis: whatever a client sends, clew answers with a reason or stores
it, never with a server error, and a refused request changes nothing.

At the decoder level (fast, many examples): arbitrary bytes, arbitrary JSON-ish documents (deep, huge
and non-finite numbers, lone surrogates, wrong types) and almost-valid OTLP/JSON, Zipkin and protobuf
requests go into `decode_protobuf`, `decode_json`, `decode_zipkin` and the file importer's
`parse_file`. The property: only `BadRequest` (clew's own, with a reason) escapes, and what is accepted
is a request the store can hold (ids, times, events in range).

Through one real `clew serve` (fewer examples): the same bodies POSTed to /v1/traces (JSON and
protobuf) and /api/v2/spans. The property: no 5xx, every 4xx has a reason, spans that were accepted
read back, and a trace sent at the start still reads back identically after every case.

Cases found are kept in tests/corpus/receivers/ (`<target>--<name>.<ext>`, target one of otlp-json,
otlp-proto, zipkin, file), replayed by `test_corpus_*`. Every run is derandomized, so CI sees the same
examples each time.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.rpc.status_pb2 import Status
from hypothesis import HealthCheck, currently_in_test_context, event, example, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from clew.core.errors import BadRequest
from clew.receivers.files import parse_file
from clew.receivers.otlp import Decoded, decode_json, decode_protobuf, invalid_reason
from clew.receivers.zipkin import decode_zipkin
from tests.conftest import CONFORMANCE, ServerProcess

CORPUS = Path(__file__).resolve().parent / "corpus" / "receivers"
REFERENCE = CONFORMANCE / "otlp" / "trace.json"
KNOWN_TRACE = "5b8efff798038103d269b633813fc60c"
MAX_NS = (1 << 63) - 1

DECODERS: dict[str, Callable[[bytes], Any]] = {
    "otlp-json": decode_json,
    "otlp-proto": decode_protobuf,
    "zipkin": decode_zipkin,
    "file": parse_file,
}

FAST = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
SERVED = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# --- strategies ---------------------------------------------------------------------------------------

SURROGATE = st.characters(categories=["Cs"])
TEXT = st.one_of(
    st.text(max_size=12),
    st.lists(st.one_of(st.characters(), SURROGATE), max_size=6).map("".join),
)
HUGE = st.sampled_from(
    [2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64 - 1, 2**64, 2**70, 10**30, -1]
)
NUMBER = st.one_of(
    st.integers(-(2**70), 2**70),
    HUGE,
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e30, 1.5e300, -0.0, 0.5, 1e-300]),
)
HEX = st.one_of(
    st.binary(min_size=0, max_size=20).map(bytes.hex),
    st.binary(min_size=16, max_size=16).map(bytes.hex),
    st.binary(min_size=8, max_size=8).map(bytes.hex),
    st.sampled_from(["", "0" * 32, "0" * 16, "zz", "1", "5af7183fb1d4cf5f"]),
)
KEYS = st.one_of(
    st.sampled_from(
        [
            "resourceSpans",
            "scopeSpans",
            "spans",
            "resource",
            "scope",
            "attributes",
            "key",
            "value",
            "stringValue",
            "intValue",
            "doubleValue",
            "boolValue",
            "bytesValue",
            "arrayValue",
            "kvlistValue",
            "values",
            "traceId",
            "spanId",
            "parentSpanId",
            "name",
            "kind",
            "startTimeUnixNano",
            "endTimeUnixNano",
            "events",
            "links",
            "status",
            "code",
            "message",
            "timeUnixNano",
            "flags",
            "id",
            "parentId",
            "timestamp",
            "duration",
            "localEndpoint",
            "remoteEndpoint",
            "serviceName",
            "ipv4",
            "ipv6",
            "port",
            "tags",
            "annotations",
            "shared",
            "data",
            "processes",
            "traceID",
            "spanID",
            "processID",
            "startTime",
            "references",
            "logs",
            "fields",
            "type",
            "operationName",
        ]  # fmt: skip
    ),
    TEXT,
)
LEAF = st.one_of(st.none(), st.booleans(), NUMBER, TEXT, HEX)
JSONISH = st.recursive(
    LEAF,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(KEYS, children, max_size=5)),
    max_leaves=25,
)


def _deep_text(depth: int, opener: str, filler: str) -> str:
    if opener == "[":
        return "[" * depth + filler + "]" * depth
    return '{"a":' * depth + filler + "}" * depth


DEEP = st.builds(
    _deep_text,
    st.integers(60, 3000),
    st.sampled_from(["[", "{"]),
    st.sampled_from(["1", '"[[[["', '"\\"]]"', "[]", ""]),
)


def _encode(doc: Any, ascii_only: bool) -> bytes:
    """JSON as clients may write it: NaN/Infinity literals, surrogates escaped or as raw bytes."""
    text = json.dumps(doc, allow_nan=True, ensure_ascii=ascii_only)
    return text.encode("utf-8", "surrogatepass")


# escaped surrogates mostly (valid JSON, U+FFFD when stored), raw surrogate bytes (refused) sometimes
ASCII_ONLY = st.sampled_from([True, True, True, True, False])


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


# A value of the wrong type, cheap to draw. Mutable values are built anew for every draw, since
# mutations change documents in place.
WRONG = st.one_of(
    LEAF,
    st.lists(LEAF, max_size=2),
    st.dictionaries(KEYS, LEAF, max_size=2),
    st.builds(lambda: [[[]]]),
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from _paths(value, (*prefix, i))


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[Any]) -> Any:
    """A valid document with up to two places replaced by a wrong value (or removed)."""
    doc = draw(valid)
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2]))):
        paths = list(_paths(doc))[1:]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent, dict) and draw(st.integers(0, 3)) == 0:
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(st.one_of(WRONG, WRONG, WRONG, JSONISH))
    return doc


NONZERO = st.integers(1, 255).map(lambda b: bytes([b]))
TRACE_ID = st.tuples(st.binary(min_size=15, max_size=15), NONZERO).map(lambda p: (p[0] + p[1]).hex())
SPAN_ID = st.tuples(st.binary(min_size=7, max_size=7), NONZERO).map(lambda p: (p[0] + p[1]).hex())
START_NS = st.integers(1_600_000_000_000_000_000, 1_800_000_000_000_000_000)
EXTREME_NS = st.one_of(HUGE, HUGE.map(str), st.sampled_from([0, "0", 2**63 - 1, 2**63, 2**64 - 1]))
INT64 = st.integers(-(2**63), 2**63 - 1)

ANY_VALUE: st.SearchStrategy[Any] = st.recursive(
    st.one_of(
        st.builds(lambda v: {"stringValue": v}, TEXT),
        st.builds(lambda v: {"intValue": v}, st.one_of(INT64, INT64.map(str), HUGE, HUGE.map(str), NUMBER)),
        st.builds(
            lambda v: {"doubleValue": v},
            st.one_of(st.floats(allow_nan=False), st.sampled_from(["NaN", "Infinity"])),
        ),
        st.builds(lambda v: {"boolValue": v}, st.booleans()),
        st.builds(lambda v: {"bytesValue": v}, st.binary(max_size=8).map(_b64)),
        st.builds(dict),
    ),
    lambda children: st.one_of(
        st.builds(lambda vs: {"arrayValue": {"values": vs}}, st.lists(children, max_size=3)),
        st.builds(
            lambda kvs: {"kvlistValue": {"values": kvs}},
            st.lists(st.builds(lambda k, v: {"key": k, "value": v}, TEXT, children), max_size=3),
        ),
    ),
    max_leaves=6,
)
ATTRIBUTES = st.lists(st.builds(lambda k, v: {"key": k, "value": v}, TEXT, ANY_VALUE), max_size=3)


@st.composite
def otlp_span(draw: st.DrawFn, trace_id: str) -> dict[str, Any]:
    start = draw(START_NS)
    end = start + draw(st.integers(0, 10**9))
    extreme = draw(st.integers(0, 5)) == 0  # a well-typed value no span can hold: a per-span drop
    span: dict[str, Any] = {
        "traceId": trace_id,
        "spanId": draw(SPAN_ID),
        "name": draw(TEXT),
        "kind": draw(st.one_of(st.integers(0, 5), st.sampled_from(["SPAN_KIND_SERVER", "SPAN_KIND_CLIENT"]))),
        "startTimeUnixNano": draw(st.one_of(st.just(str(start)), st.just(start))),
        "endTimeUnixNano": draw(EXTREME_NS) if extreme else str(end),
        "attributes": draw(ATTRIBUTES),
    }
    if draw(st.booleans()):
        times = st.one_of(st.just(str(start)), EXTREME_NS) if extreme else st.just(str(start))
        span["events"] = draw(
            st.lists(
                st.builds(
                    lambda t, n, a: {"timeUnixNano": t, "name": n, "attributes": a}, times, TEXT, ATTRIBUTES
                ),
                max_size=2,
            )
        )
    if draw(st.booleans()):
        span["links"] = draw(
            st.lists(st.builds(lambda t, s: {"traceId": t, "spanId": s}, TRACE_ID, SPAN_ID), max_size=2)
        )
    if draw(st.booleans()):
        span["status"] = {"code": draw(st.integers(0, 2)), "message": draw(TEXT)}
    return span


@st.composite
def valid_otlp(draw: st.DrawFn) -> dict[str, Any]:
    trace_id = draw(TRACE_ID)
    spans = draw(st.lists(otlp_span(trace_id), min_size=1, max_size=4))
    scope = {"name": draw(TEXT), "attributes": draw(ATTRIBUTES)}
    resource = {"attributes": draw(ATTRIBUTES)}
    return {"resourceSpans": [{"resource": resource, "scopeSpans": [{"scope": scope, "spans": spans}]}]}


MICROS = st.integers(1_600_000_000_000_000, 1_800_000_000_000_000)
EXTREME_MICROS = st.sampled_from([0, 2**63 // 1000 + 1, 2**64, 1e30, 1.5e300, 2**70])
ENDPOINT = st.fixed_dictionaries(
    {},
    optional={
        "serviceName": TEXT,
        "ipv4": st.sampled_from(["10.1.2.3", "192.168.0.1", ""]),
        "ipv6": st.sampled_from(["::1", "fe80::1"]),
        "port": st.one_of(st.integers(-10, 65535), st.just("8080")),
    },
)


@st.composite
def zipkin_span(draw: st.DrawFn, trace_id: str) -> dict[str, Any]:
    extreme = draw(st.integers(0, 5)) == 0
    micros = EXTREME_MICROS if extreme else MICROS
    return draw(
        st.fixed_dictionaries(
            {"traceId": st.just(trace_id), "id": SPAN_ID, "timestamp": micros},
            optional={
                "parentId": SPAN_ID,
                "name": TEXT,
                "kind": st.sampled_from(["CLIENT", "SERVER", "PRODUCER", "CONSUMER", "x"]),
                "duration": st.one_of(st.integers(0, 10**7), micros),
                "shared": st.booleans(),
                "localEndpoint": ENDPOINT,
                "remoteEndpoint": ENDPOINT,
                "tags": st.dictionaries(TEXT, TEXT, max_size=3),
                "annotations": st.lists(
                    st.fixed_dictionaries({"timestamp": micros, "value": TEXT}), max_size=2
                ),
            },
        )
    )


@st.composite
def valid_zipkin(draw: st.DrawFn) -> list[Any]:
    trace_id = draw(st.one_of(TRACE_ID, SPAN_ID))  # 128- or 64-bit
    return draw(st.lists(zipkin_span(trace_id), min_size=1, max_size=4))


def otlp_documents() -> st.SearchStrategy[Any]:
    """OTLP/JSON requests, valid but for a wrong or extreme value here and there."""
    return mutated(valid_otlp())


def zipkin_documents() -> st.SearchStrategy[Any]:
    """Zipkin v2 span lists, valid but for a wrong or extreme value here and there."""
    return mutated(valid_zipkin())


def _any_value_message(depth: int = 0) -> st.SearchStrategy[AnyValue]:
    leaf = st.one_of(
        st.builds(lambda v: AnyValue(string_value=v), st.text(max_size=8)),
        st.builds(lambda v: AnyValue(int_value=v), INT64),
        st.builds(lambda v: AnyValue(double_value=v), st.floats()),
        st.builds(lambda v: AnyValue(bool_value=v), st.booleans()),
        st.builds(lambda v: AnyValue(bytes_value=v), st.binary(max_size=8)),
        st.builds(AnyValue),
    )
    if depth >= 2:
        return leaf

    def array(values: list[AnyValue]) -> AnyValue:
        value = AnyValue()
        value.array_value.values.extend(values)
        return value

    def kvlist(pairs: list[tuple[str, AnyValue]]) -> AnyValue:
        value = AnyValue()
        value.kvlist_value.values.extend(KeyValue(key=k, value=v) for k, v in pairs)
        return value

    inner = _any_value_message(depth + 1)
    return st.one_of(
        leaf,
        st.lists(inner, max_size=3).map(array),
        st.lists(st.tuples(st.text(max_size=5), inner), max_size=3).map(kvlist),
    )


KEY_VALUES = st.lists(st.builds(KeyValue, key=st.text(max_size=8), value=_any_value_message()), max_size=3)
U64 = st.integers(0, 2**64 - 1)


@st.composite
def protobuf_requests(draw: st.DrawFn) -> bytes:
    """Serialized requests, mostly valid, with any field free some of the time: enum values out of
    range, times over the whole of uint64, ids of any length; sometimes cut short or a byte changed."""
    request = ExportTraceServiceRequest()
    trace_id = bytes.fromhex(draw(TRACE_ID))
    for _ in range(draw(st.integers(1, 2))):
        rs = request.resource_spans.add()
        rs.resource.attributes.extend(draw(KEY_VALUES))
        ss = rs.scope_spans.add()
        ss.scope.name = draw(st.text(max_size=8))
        for _ in range(draw(st.integers(1, 3))):
            free = draw(st.integers(0, 3)) == 0
            start = draw(U64 if free else START_NS)
            span = ss.spans.add(
                trace_id=draw(st.binary(max_size=20)) if free else trace_id,
                span_id=bytes.fromhex(draw(SPAN_ID)) if not free else draw(st.binary(max_size=12)),
                parent_span_id=draw(st.binary(max_size=10)) if free else b"",
                name=draw(st.text(max_size=10)),
                kind=draw(st.integers(-(2**31), 2**31 - 1) if free else st.integers(0, 5)),
                start_time_unix_nano=start,
                end_time_unix_nano=draw(U64) if free else start + draw(st.integers(0, 10**9)),
                flags=draw(st.integers(0, 2**32 - 1)),
                trace_state=draw(st.text(max_size=10)),
                dropped_attributes_count=draw(st.integers(0, 2**32 - 1)),
            )
            span.attributes.extend(draw(KEY_VALUES))
            for _ in range(draw(st.integers(0, 2))):
                # any time on an otherwise valid span: past 2262 it must be dropped, not stored
                when = draw(st.one_of(st.just(start), st.just(start), U64, st.integers(2**63, 2**64 - 1)))
                span.events.add(time_unix_nano=when, name=draw(st.text(max_size=6)))
            for _ in range(draw(st.integers(0, 1))):
                span.links.add(trace_id=draw(st.binary(max_size=20)), span_id=draw(st.binary(max_size=10)))
            span.status.code = draw(st.integers(-(2**31), 2**31 - 1) if free else st.integers(0, 2))
            span.status.message = draw(st.text(max_size=6))
    wire = request.SerializeToString()
    mutation = draw(st.integers(0, 7))
    if mutation == 0:
        wire = wire[: draw(st.integers(0, len(wire) - 1))]
    elif mutation == 1:
        at = draw(st.integers(0, len(wire) - 1))
        wire = wire[:at] + bytes([draw(st.integers(0, 255))]) + wire[at + 1 :]
    return wire


def _json_bodies(documents: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """Bodies for one JSON endpoint: mostly its own documents, some bytes, JSON-ish and deep ones."""
    own = st.builds(_encode, documents, ASCII_ONLY)
    return st.one_of(
        own, own, own, st.binary(max_size=200), st.builds(_encode, JSONISH, ASCII_ONLY), DEEP.map(str.encode)
    )


OTLP_JSON_BODIES = _json_bodies(otlp_documents())
ZIPKIN_BODIES = _json_bodies(zipkin_documents())
PROTOBUF_BODIES = st.one_of(st.binary(max_size=300), protobuf_requests(), protobuf_requests())

# Found cases, kept as explicit examples (the corpus directory holds them as files too).
FOUND_JSON = [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"resourceSpans": ' + b'{"a":' * 100_000 + b"1" + b"}" * 100_001,
    b'[{"traceId": "5af7183fb1d4cf5f", "id": "352bff9a74ca9ad2", "timestamp": 1e30}]',
    b'[{"traceId": "5af7183fb1d4cf5f", "id": "352bff9a74ca9ad2", "timestamp": 18446744073709551616}]',
    b'[{"traceId": "5af7183fb1d4cf5f", "id": "352bff9a74ca9ad2", "timestamp": NaN}]',
    b'[{"traceId": "5af7183fb1d4cf5f", "id": "352bff9a74ca9ad2", "timestamp": 1, "duration": Infinity}]',
    b'[{"traceId": "5af7183fb1d4cf5f", "id": "352bff9a74ca9ad2", "remoteEndpoint": {"port": 1180591620717411303424}}]',
    b'[{"traceId": "5af7183fb1d4cf5f", "id": "352bff9a74ca9ad2", "remoteEndpoint": {"port": true}}]',
    b'[{"traceId": "5af7183fb1d4cf5f", "id": "352bff9a74ca9ad2", "annotations": 5}]',
    b'[{"traceId": "5af7183fb1d4cf5f", "id": "352bff9a74ca9ad2", "timestamp": 1, "tags": {"a": "\\ud800"}}]',
    b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "11111111111111111111111111111111", '
    b'"spanId": "2222222222222222", "kind": "\\ud800", "startTimeUnixNano": "1", "endTimeUnixNano": "2"}]}]}]}',
    b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "11111111111111111111111111111111", '
    b'"spanId": "2222222222222222", "startTimeUnixNano": "1", "endTimeUnixNano": "2", '
    b'"attributes": [{"key": "k", "value": {"intValue": 1.5e+300}}]}]}]}]}',
    b'{"data": [{"spans": [], "processes": []}]}',
]


# a span whose event is at 2**64 - 1 ns: accepted, then every read of its trace failed
FOUND_PROTOBUF = (CORPUS / "otlp-proto--event-past-2262.bin").read_bytes()


# --- checks ---------------------------------------------------------------------------------------


def _check_accepted(decoded: Decoded) -> None:
    """What a decoder accepts is a request the store can hold, and its counts add up."""
    assert decoded.rejected >= 0
    assert bool(decoded.error_message) == bool(decoded.rejected)
    spans = 0
    for payload in decoded.batch.payloads:
        request = ExportTraceServiceRequest.FromString(payload)
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    spans += 1
                    assert invalid_reason(span) is None
                    assert all(e.time_unix_nano <= MAX_NS for e in span.events)
    assert spans == decoded.batch.spans


def _event(name: str) -> None:
    """Outcomes counted in `pytest --hypothesis-show-statistics`."""
    if currently_in_test_context():
        event(name)


def _decode(target: str, body: bytes) -> Decoded | None:
    """Run a decoder: None if it refused with a reason; any other exception fails the test."""
    try:
        result = DECODERS[target](body)
    except BadRequest as exc:
        assert exc.message
        _event(f"{target}: refused")
        return None
    if isinstance(result, Decoded):
        _check_accepted(result)
        _event(f"{target}: {'spans stored' if result.batch.spans else 'nothing stored'}")
        if result.rejected:
            _event(f"{target}: some spans rejected")
        return result
    assert isinstance(result, ExportTraceServiceRequest)  # the file importer hands a request on
    return None


# --- decoder level ------------------------------------------------------------------------------------


@settings(FAST, max_examples=500)
@given(body=st.binary(max_size=400))
def test_any_bytes_into_every_decoder(body: bytes) -> None:
    for target in DECODERS:
        _decode(target, body)


@FAST
@given(body=PROTOBUF_BODIES)
@example(body=FOUND_PROTOBUF)
def test_protobuf_decoder(body: bytes) -> None:
    _decode("otlp-proto", body)


@FAST
@given(doc=JSONISH, ascii_only=st.booleans())
def test_jsonish_documents_into_json_decoders(doc: Any, ascii_only: bool) -> None:
    body = _encode(doc, ascii_only)
    for target in ("otlp-json", "zipkin", "file"):
        _decode(target, body)


@settings(FAST, max_examples=150)
@given(doc=otlp_documents(), ascii_only=ASCII_ONLY)
def test_almost_valid_otlp_json(doc: dict[str, Any], ascii_only: bool) -> None:
    body = _encode(doc, ascii_only)
    _decode("otlp-json", body)
    _decode("file", body)


@FAST
@given(doc=zipkin_documents(), ascii_only=ASCII_ONLY)
def test_almost_valid_zipkin(doc: list[Any], ascii_only: bool) -> None:
    body = _encode(doc, ascii_only)
    _decode("zipkin", body)
    _decode("file", body)


@settings(FAST, max_examples=100)
@given(text=DEEP)
def test_deep_json_is_refused_naming_the_limit_or_parsed(text: str) -> None:
    for target in ("otlp-json", "zipkin", "file"):
        try:
            DECODERS[target](text.encode())
        except BadRequest as exc:
            assert exc.message
            if text.count("[") + text.count('{"a":') > 70:  # deeper than the limit, whatever the filler
                assert "nested deeper than 64 levels" in exc.message


@pytest.mark.parametrize("body", FOUND_JSON, ids=range(len(FOUND_JSON)))
def test_found_cases_at_the_decoders(body: bytes) -> None:
    for target in ("otlp-json", "zipkin", "file"):
        _decode(target, body)


def _corpus() -> list[Path]:
    return sorted(p for p in CORPUS.iterdir() if "--" in p.name)


@pytest.mark.parametrize("path", _corpus(), ids=lambda p: p.name)
def test_corpus_at_the_decoders(path: Path) -> None:
    target = path.name.split("--", 1)[0]
    _decode(target, path.read_bytes())


# --- through a real server ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict]]:
    """One server for the module, with a known trace stored before any case runs."""
    server = ServerProcess(tmp_path_factory.mktemp("fuzz") / "data").start()
    try:
        response = httpx.post(
            f"{server.otlp_http_url}/v1/traces",
            content=REFERENCE.read_bytes(),
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        known = server.trace(KNOWN_TRACE)
        assert known is not None
        yield server, known
    finally:
        server.stop()


ENDPOINTS = {
    "otlp-json": ("otlp_http_url", "/v1/traces", "application/json"),
    "otlp-proto": ("otlp_http_url", "/v1/traces", "application/x-protobuf"),
    "zipkin": ("zipkin_url", "/api/v2/spans", "application/json"),
}


def _reason(response: httpx.Response) -> str:
    if response.headers.get("content-type", "").startswith("application/x-protobuf"):
        return str(Status.FromString(response.content).message)
    body = response.json()
    return str(body.get("message") or body.get("error") or "")


def _trace_ids(decoded: Decoded) -> set[str]:
    ids: set[str] = set()
    for payload in decoded.batch.payloads:
        request = ExportTraceServiceRequest.FromString(payload)
        ids.update(
            sp.trace_id.hex() for rs in request.resource_spans for ss in rs.scope_spans for sp in ss.spans
        )
    return ids


def _post_and_check(served: tuple[ServerProcess, dict], target: str, body: bytes) -> None:
    server, known = served
    attribute, path, ctype = ENDPOINTS[target]
    response = httpx.post(
        getattr(server, attribute) + path, content=body, headers={"Content-Type": ctype}, timeout=60
    )
    assert response.status_code < 500, (response.status_code, response.text[:300])
    _event(f"{target}: {response.status_code}")
    if response.status_code >= 400:
        assert _reason(response), response.content[:300]
    else:
        decoded = DECODERS[target](body)  # what the server stored, as the decoder sees it
        for trace_id in sorted(_trace_ids(decoded))[:3]:
            read = httpx.get(f"{server.http_url}/api/v1/traces/{trace_id}", timeout=30)
            assert read.status_code == 200, (trace_id, read.status_code, read.text[:300])
            _event(f"{target}: stored trace read back")
    assert server.trace(KNOWN_TRACE) == known


@SERVED
@given(body=OTLP_JSON_BODIES)
@example(body=FOUND_JSON[0])
@example(body=FOUND_JSON[4])
@example(body=FOUND_JSON[10])
@example(body=FOUND_JSON[11])
def test_otlp_json_through_the_server(served: tuple[ServerProcess, dict], body: bytes) -> None:
    _post_and_check(served, "otlp-json", body)


@SERVED
@given(body=PROTOBUF_BODIES)
@example(body=FOUND_PROTOBUF)
def test_otlp_protobuf_through_the_server(served: tuple[ServerProcess, dict], body: bytes) -> None:
    _post_and_check(served, "otlp-proto", body)


@SERVED
@given(body=ZIPKIN_BODIES)
@example(body=FOUND_JSON[1])
@example(body=FOUND_JSON[2])
@example(body=FOUND_JSON[6])
@example(body=FOUND_JSON[9])
def test_zipkin_through_the_server(served: tuple[ServerProcess, dict], body: bytes) -> None:
    _post_and_check(served, "zipkin", body)


@pytest.mark.parametrize(
    "path", [p for p in _corpus() if not p.name.startswith("file--")], ids=lambda p: p.name
)
def test_corpus_through_the_server(served: tuple[ServerProcess, dict], path: Path) -> None:
    _post_and_check(served, path.name.split("--", 1)[0], path.read_bytes())
