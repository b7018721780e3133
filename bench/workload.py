"""A seeded, realistic tracing workload: multi-service traces, 6-12 attributes a span, ~2% errors."""

from __future__ import annotations

import random
from collections.abc import Iterator

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

SERVICES = ["frontend", "cart", "checkout", "payment", "inventory", "shipping", "email", "recommendation"]
ROUTES = ["/", "/cart", "/checkout", "/product/{id}", "/api/orders", "/api/recommendations", "/login"]
DB_STATEMENTS = [
    "SELECT * FROM products WHERE id = ?",
    "UPDATE carts SET items = ? WHERE user_id = ?",
    "INSERT INTO orders (user_id, total) VALUES (?, ?)",
]


def _attributes(rng: random.Random, span: Span, service: str, kind: int) -> None:
    add = span.attributes.add
    pool = [
        ("http.method", rng.choice(["GET", "POST", "PUT"])),
        ("http.route", rng.choice(ROUTES)),
        ("http.status_code", rng.choice([200, 200, 200, 201, 404, 500])),
        ("net.peer.name", rng.choice(SERVICES)),
        ("user.id", f"user-{rng.randrange(50_000)}"),
        ("session.id", f"{rng.getrandbits(64):016x}"),
        ("db.system", rng.choice(["postgresql", "redis", "mysql"])),
        ("db.statement", rng.choice(DB_STATEMENTS)),
        ("thread.id", rng.randrange(1, 64)),
        ("cart.total", round(rng.uniform(1, 500), 2)),
        ("feature.flag", rng.random() < 0.5),
        ("rpc.system", "grpc"),
        ("region", rng.choice(["eu-west-1", "us-east-1", "ap-south-1"])),
        ("component", service),
    ]
    for key, value in rng.sample(pool, rng.randint(6, 12)):
        v = add(key=key).value
        if isinstance(value, bool):
            v.bool_value = value
        elif isinstance(value, int):
            v.int_value = value
        elif isinstance(value, float):
            v.double_value = value
        else:
            v.string_value = value


def requests(seed: int, total_spans: int, spans_per_request: int, start_ns: int) -> Iterator[bytes]:
    """Serialised ExportTraceServiceRequests, each about `spans_per_request` spans, whole traces."""
    rng = random.Random(seed)
    produced = 0
    now = start_ns
    while produced < total_spans:
        request = ExportTraceServiceRequest()
        by_service: dict[str, object] = {}
        in_request = 0
        while in_request < spans_per_request and produced + in_request < total_spans:
            trace_id = rng.getrandbits(128).to_bytes(16, "big")
            n_spans = rng.randint(5, 30)
            n_spans = min(n_spans, total_spans - produced - in_request)
            ids: list[bytes] = []
            trace_start = now
            for i in range(n_spans):
                service = SERVICES[0] if i == 0 else rng.choice(SERVICES[1:])
                scope = by_service.get(service)
                if scope is None:
                    rs = request.resource_spans.add()
                    for key, value in (
                        ("service.name", service),
                        ("service.version", "1.4.2"),
                        ("host.name", f"{service}-{rng.randrange(3)}"),
                        ("telemetry.sdk.language", "python"),
                    ):
                        rs.resource.attributes.add(key=key).value.string_value = value
                    scope = rs.scope_spans.add()
                    scope.scope.name = "opentelemetry.instrumentation.bench"
                    by_service[service] = scope
                span_id = rng.getrandbits(64).to_bytes(8, "big") or b"\x01" * 8
                start = trace_start + i * 1_000_000 + rng.randrange(1_000_000)
                duration = int(rng.lognormvariate(15, 1.2))
                kind = 2 if i == 0 else rng.choice([1, 2, 3])
                span = scope.spans.add(  # type: ignore[attr-defined]
                    trace_id=trace_id,
                    span_id=span_id,
                    parent_span_id=rng.choice(ids) if ids else b"",
                    name=f"{rng.choice(['GET', 'POST'])} {rng.choice(ROUTES)}",
                    kind=kind,
                    start_time_unix_nano=start,
                    end_time_unix_nano=start + duration,
                )
                _attributes(rng, span, service, kind)
                if rng.random() < 0.02:
                    span.status.code = 2
                    span.status.message = "internal error"
                    event = span.events.add(time_unix_nano=start + duration // 2, name="exception")
                    event.attributes.add(key="exception.type").value.string_value = "RuntimeError"
                    event.attributes.add(key="exception.message").value.string_value = "upstream failed"
                ids.append(span_id)
            in_request += n_spans
            now += 10_000_000
        produced += in_request
        yield request.SerializeToString()
