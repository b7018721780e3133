"""The engine reads OTLP with clew's own schema: it must agree with opentelemetry-proto on the wire."""

from __future__ import annotations

import re

import pytest
from google.protobuf.descriptor import FieldDescriptor as F
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from clew.components.logs.table import WIRE_PROTO as LOGS_WIRE_PROTO
from clew.store.otlp_wire import WIRE_PROTO, length_delimited

OTLP = {
    "Request": trace_service_pb2.ExportTraceServiceRequest,
    "ResourceSpans": trace_pb2.ResourceSpans,
    "Resource": resource_pb2.Resource,
    "ScopeSpans": trace_pb2.ScopeSpans,
    "Scope": common_pb2.InstrumentationScope,
    "Span": trace_pb2.Span,
    "Event": trace_pb2.Span.Event,
    "Link": trace_pb2.Span.Link,
    "Status": trace_pb2.Status,
    "KeyValue": common_pb2.KeyValue,
    "AnyValue": common_pb2.AnyValue,
}
# Fields clew does not store: dictionary references of the profiles signal, and entity references.
NOT_STORED = {"string_value_strindex", "key_strindex", "entity_refs"}
WIRE_OF_PROTO_TYPE = {
    "string": 2, "bytes": 2, "fixed64": 1, "double": 1, "fixed32": 5,
    "int32": 0, "int64": 0, "uint32": 0, "uint64": 0, "bool": 0,
}  # fmt: skip
WIRE_OF_DESCRIPTOR = {
    F.TYPE_STRING: 2, F.TYPE_BYTES: 2, F.TYPE_MESSAGE: 2, F.TYPE_FIXED64: 1, F.TYPE_DOUBLE: 1,
    F.TYPE_FIXED32: 5, F.TYPE_INT32: 0, F.TYPE_INT64: 0, F.TYPE_UINT32: 0, F.TYPE_UINT64: 0,
    F.TYPE_BOOL: 0, F.TYPE_ENUM: 0,
}  # fmt: skip


LOGS_OTLP = {
    **{k: v for k, v in OTLP.items() if k in ("Resource", "Scope", "KeyValue", "AnyValue")},
    "Request": logs_service_pb2.ExportLogsServiceRequest,
    "ResourceLogs": logs_pb2.ResourceLogs,
    "ScopeLogs": logs_pb2.ScopeLogs,
    "LogRecord": logs_pb2.LogRecord,
}


def _messages(proto: str = WIRE_PROTO) -> dict[str, dict[str, tuple[int, int, bool]]]:
    """name -> field -> (number, wire type, repeated), read from a wire schema."""
    out: dict[str, dict[str, tuple[int, int, bool]]] = {}
    for name, body in re.findall(r"message (\w+) \{(.*?)\n?\}\n", proto, re.S):
        fields = {}
        for repeated, ftype, fname, number in re.findall(r"(repeated )?(\w+) (\w+) = (\d+);", body):
            wire = WIRE_OF_PROTO_TYPE.get(ftype, 2)  # other names are messages
            fields[fname] = (int(number), wire, bool(repeated))
        out[name] = fields
    return out


@pytest.mark.parametrize(
    ("proto", "otlp"), [(WIRE_PROTO, OTLP), (LOGS_WIRE_PROTO, LOGS_OTLP)], ids=["traces", "logs"]
)
def test_wire_schema_matches_opentelemetry_proto(proto: str, otlp: dict) -> None:
    messages = _messages(proto)
    assert set(messages) == set(otlp)
    for name, cls in otlp.items():
        ours = messages[name]
        theirs = {f.name: f for f in cls.DESCRIPTOR.fields if f.name not in NOT_STORED}
        assert set(ours) == set(theirs), name
        for fname, (number, wire, repeated) in ours.items():
            field = theirs[fname]
            assert number == field.number, f"{name}.{fname}"
            assert wire == WIRE_OF_DESCRIPTOR[field.type], f"{name}.{fname}"
            assert repeated == field.is_repeated, f"{name}.{fname}"


def test_length_delimited_framing():
    bodies = [b"", b"x" * 5, b"y" * 300]
    framed = length_delimited(bodies)
    assert framed == b"\x00" + b"\x05" + b"x" * 5 + b"\xac\x02" + b"y" * 300
