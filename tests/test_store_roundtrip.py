"""Decode -> ClickHouse engine -> OTLP: every field of the span model, on the real embedded engine."""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from clew.assembly import open_embedded
from clew.core.otlp import to_traces_data
from clew.receivers.otlp import accept_request, to_otlp_json
from tests.conftest import canonical_spans


def python_to_anyvalue(value: object) -> AnyValue:
    """A plain Python value as an OTLP AnyValue."""
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, Mapping):
        return AnyValue(
            kvlist_value=KeyValueList(
                values=[KeyValue(key=str(k), value=python_to_anyvalue(v)) for k, v in value.items()]
            )
        )
    if isinstance(value, list | tuple):
        av = AnyValue()
        av.array_value.values.extend(python_to_anyvalue(v) for v in value)
        return av
    return AnyValue(string_value=str(value))


def _kv(target, key, value):
    target.add(key=key).value.CopyFrom(python_to_anyvalue(value))


def _request() -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    for service in ("api", "db"):
        rs = request.resource_spans.add(schema_url="https://opentelemetry.io/schemas/1.24.0")
        rs.resource.dropped_attributes_count = 1
        _kv(rs.resource.attributes, "service.name", service)
        _kv(rs.resource.attributes, "host.ids", [1, 2])
        for scope_name in ("lib.a", "lib.b"):
            ss = rs.scope_spans.add(schema_url="https://example.com/scope")
            ss.scope.name = scope_name
            ss.scope.version = "0.9"
            ss.scope.dropped_attributes_count = 2
            _kv(ss.scope.attributes, "scope.flag", True)
            span = ss.spans.add(
                trace_id=bytes.fromhex("0123456789abcdef0123456789abcdef"),
                span_id=f"{service}-{scope_name}".encode()[:8].ljust(8, b"."),
                parent_span_id=bytes.fromhex("00000000000000aa"),
                trace_state="k=v",
                flags=0x301,
                name=f"{service} work",
                kind=3,
                start_time_unix_nano=1_700_000_000_123_456_789,
                end_time_unix_nano=1_700_000_000_223_456_789,
                dropped_attributes_count=3,
                dropped_events_count=4,
                dropped_links_count=5,
            )
            span.status.code = 2
            span.status.message = "boom"
            _kv(span.attributes, "s", "text")
            _kv(span.attributes, "empty", "")
            _kv(span.attributes, "i", -(2**63))
            _kv(span.attributes, "f", 1e-300)
            _kv(span.attributes, "b", True)
            _kv(span.attributes, "raw", b"\x00\xffbytes")
            _kv(span.attributes, "nested", {"a": [1, "two", 3.0, {"deep": False}]})
            _kv(span.attributes, "mixed", ["x", 1, True])
            span.attributes.add(key="novalue")
            ev = span.events.add(
                time_unix_nano=1_700_000_000_200_000_001, name="retry", dropped_attributes_count=6
            )
            _kv(ev.attributes, "attempt", 2)
            _kv(ev.attributes, "why", ["timeout"])
            span.events.add(time_unix_nano=1_700_000_000_200_000_002, name="bare")
            ln = span.links.add(
                trace_id=b"\x09" * 16,
                span_id=b"\x08" * 8,
                trace_state="a=b",
                dropped_attributes_count=7,
                flags=1,
            )
            _kv(ln.attributes, "link.kind", "follows")
    return request


def test_every_field_survives_the_store(tmp_path, storage):
    request = _request()
    decoded = accept_request(_request())
    assert decoded.rejected == 0 and len(decoded.batch) == 4
    store = open_embedded(tmp_path / "data", storage=storage(tmp_path))
    try:
        store.writer.write(decoded.batch)
        batch = store.reader.get_trace(bytes.fromhex("0123456789abcdef0123456789abcdef"))
        assert store.reader.services() == ["api", "db"]
        assert store.reader.operations("api") == [("api work", 3)]
        assert store.reader.operations("api", kind=2) == []
        assert store.reader.span_count() == 4
    finally:
        store.close()
    sent = to_otlp_json(TracesData(resource_spans=request.resource_spans))
    got = to_otlp_json(to_traces_data(batch))
    # parent id of all zeros means "no parent" in OTLP; clew stores it as empty
    for rs in sent["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for span in ss["spans"]:
                assert span["parentSpanId"] == "00000000000000aa"
    assert canonical_spans(got) == canonical_spans(sent)
    # grouped by resource and scope as sent
    assert [len(rs["scopeSpans"]) for rs in got["resourceSpans"]] == [2, 2]


def test_zero_parent_means_root_and_types_are_kept(tmp_path, storage):
    request = _request()
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            ss.spans[0].parent_span_id = bytes(8)
    store = open_embedded(tmp_path / "data", storage=storage(tmp_path))
    try:
        store.writer.write(accept_request(request).batch)
        table = store.reader.get_trace(bytes.fromhex("0123456789abcdef0123456789abcdef")).table
    finally:
        store.close()
    assert set(table.column("parent_span_id").to_pylist()) == {b""}
    row = table.slice(0, 1).to_pylist()[0]
    assert dict(row["attributes_int"]) == {"i": -(2**63)}
    assert dict(row["attributes_bool"]) == {"b": True}
    assert dict(row["attributes_float"]) == {"f": 1e-300}
    assert dict(row["attributes_string"]) == {"s": "text", "empty": ""}
    complex_ = dict(row["attributes_complex"])
    assert complex_["raw"] == b"b\x00\xffbytes"
    assert complex_["novalue"] == b""
    assert complex_["mixed"][:1] == b"a" and complex_["nested"][:1] == b"k"


def test_trace_ids_ending_in_zero_bytes_are_found(tmp_path, storage):
    """A String ending in \\0 once failed to match its FixedString(16) inside IN: 1 trace in 256 lost."""
    request = ExportTraceServiceRequest()
    ids = [bytes.fromhex("254dcb3359ff4bbfe22747ae524dc100"), bytes(15) + b"\x01", b"\x01" + bytes(15)]
    scope = request.resource_spans.add().scope_spans.add()
    for n, trace_id in enumerate(ids):
        span = scope.spans.add(trace_id=trace_id, span_id=bytes(7) + bytes([n + 1]), name=f"s{n}")
        span.start_time_unix_nano, span.end_time_unix_nano = (
            1_700_000_000_000_000_000,
            1_700_000_000_000_000_001,
        )
    store = open_embedded(tmp_path / "data", storage=storage(tmp_path))
    try:
        store.writer.write(accept_request(request).batch)
        for trace_id in ids:
            assert store.reader.get_trace(trace_id).table.column("name").to_pylist() == [
                f"s{ids.index(trace_id)}"
            ]
        assert len(store.reader.get_traces(ids)) == 3
    finally:
        store.close()


def test_nothing_is_written_where_clew_was_started(tmp_path):
    """The engine caches a Protobuf schema given as text under `__cache__/` in the working
    directory: the embedded store keeps it in the data directory instead."""
    import json
    import subprocess
    import sys

    from tests.shop_data import shop

    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "shop.json").write_text(json.dumps(shop()))
    done = subprocess.run(
        [sys.executable, "-m", "clew.cli", "import", str(tmp_path / "shop.json"), "--data-dir", str(tmp_path / "data")],
        cwd=work, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert list(work.iterdir()) == []
    assert list((tmp_path / "data" / "format_schemas").glob("*.proto"))


def test_attributes_come_back_in_the_order_they_were_sent(tmp_path, storage):
    """Typed maps group attributes by type; the order sent is kept beside them where it differs
    (issue 15), and costs nothing where it does not."""
    import json

    from clew.api.jaeger_model import to_jaeger_traces
    from clew.receivers.otlp import decode_json

    def kv(key: str, value: dict) -> dict:
        return {"key": key, "value": value}

    mixed = [kv("n", {"intValue": "1"}), kv("s", {"stringValue": "x"}), kv("b", {"boolValue": True}),
             kv("a", {"arrayValue": {"values": [{"stringValue": "y"}]}}), kv("t", {"stringValue": "z"})]  # fmt: skip
    plain = [kv("p", {"stringValue": "1"}), kv("q", {"stringValue": "2"})]
    doc = {"resourceSpans": [{
        "resource": {"attributes": [kv("service.name", {"stringValue": "o"}), kv("pid", {"intValue": "7"}), kv("host", {"stringValue": "h"})]},
        "scopeSpans": [{"spans": [
            {"traceId": "ab" * 16, "spanId": "01" * 8, "name": "mixed", "kind": 1, "startTimeUnixNano": "1700000000000000000",
             "endTimeUnixNano": "1700000000001000000", "attributes": mixed},
            {"traceId": "ab" * 16, "spanId": "02" * 8, "name": "plain", "kind": 1, "startTimeUnixNano": "1700000000000000000",
             "endTimeUnixNano": "1700000000001000000", "attributes": plain},
        ]}],
    }]}  # fmt: skip
    store = open_embedded(tmp_path / "data", storage=storage(tmp_path))
    try:
        store.writer.write(decode_json(json.dumps(doc).encode()).batch)
        batch = store.reader.get_trace(bytes.fromhex("ab" * 16))
        orders = store.conn.query(
            f"SELECT name, attributes_order FROM {store.conn.database}.spans ORDER BY name"
        ).to_pylist()
    finally:
        store.close()
    got = to_otlp_json(to_traces_data(batch))
    spans = {s["name"]: s for rs in got["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]}
    assert [a["key"] for a in spans["mixed"]["attributes"]] == ["n", "s", "b", "a", "t"]
    assert [a["key"] for a in spans["plain"]["attributes"]] == ["p", "q"]
    assert [a["key"] for a in got["resourceSpans"][0]["resource"]["attributes"]] == [
        "service.name",
        "pid",
        "host",
    ]
    (trace,) = to_jaeger_traces(batch)
    mixed_tags = next(s for s in trace["spans"] if s["operationName"] == "mixed")["tags"]
    assert [t["key"] for t in mixed_tags][:5] == ["n", "s", "b", "a", "t"]
    assert orders == [
        {"name": "mixed", "attributes_order": "isbcs"},  # int, string, bool, the array, string
        {"name": "plain", "attributes_order": ""},  # grouped by type already: nothing kept
    ]
