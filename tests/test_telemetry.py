"""Declared telemetry: `/metrics` is rendered from each component's declarations, and what it renders
is valid OpenMetrics (parsed by prometheus_client), exact for large counts, and names no metric that
was not declared. Also the one error mapping every edge shares."""

from __future__ import annotations

import grpc
import httpx
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from clew.core.errors import (
    Backpressure,
    BadRequest,
    ClewError,
    NotFound,
    StoreError,
    TooLarge,
    UnsupportedMedia,
)
from clew.core.language import QuerySyntaxError
from clew.core.telemetry import Exemplar, Metric, Sample, render
from clew.gateway.errors import problem
from tests.conftest import ServerProcess

SPANS = Metric("clew_test_spans", "counter", "Spans.")
QUEUE = Metric("clew_test_queue", "gauge", 'A "queue"\nof spans.')
LATENCY = Metric("clew_test_latency_seconds", "histogram", "Latency.", unit="seconds")


def test_render_is_openmetrics_from_the_declarations():
    text = render(
        [SPANS, QUEUE, LATENCY],
        [
            Sample(QUEUE, 3),
            Sample(SPANS, 123_456_789, {"service": 'a"b\\c'}, Exemplar({"trace_id": "ab" * 16}, 1)),
            Sample(LATENCY, 2, {"le": "0.5"}, None, "_bucket"),
            Sample(LATENCY, 3, {"le": "+Inf"}, Exemplar({"trace_id": "cd" * 16}, 0.75), "_bucket"),
            Sample(LATENCY, 1.25, {}, None, "_sum"),
            Sample(LATENCY, 3, {}, None, "_count"),
        ],
    )
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert [f.type for f in families.values()] == ["counter", "gauge", "histogram"]
    [spans] = families["clew_test_spans"].samples
    assert spans.value == 123_456_789 and spans.labels == {"service": 'a"b\\c'}  # not 1.23457e+08
    assert spans.exemplar.labels == {"trace_id": "ab" * 16}
    assert families["clew_test_queue"].documentation == 'A "queue"\nof spans.'
    assert families["clew_test_latency_seconds"].unit == "seconds"
    assert text.index("clew_test_spans") < text.index("clew_test_queue")  # declaration order
    assert text.endswith("# EOF\n")


def test_an_undeclared_metric_is_refused():
    with pytest.raises(ValueError, match="not declared"):
        render([SPANS], [Sample(QUEUE, 1)])


def test_every_declared_metric_of_a_server_is_on_metrics(tmp_path):
    from clew.assembly import open_embedded
    from clew.ingest.writer import TELEMETRY

    store = open_embedded(tmp_path / "probe")
    try:
        declared = {m.name for m in [*TELEMETRY, *store.telemetry()]}
    finally:
        store.close()
    server = ServerProcess(tmp_path / "data").start()
    try:
        text = httpx.get(f"{server.http_url}/metrics", timeout=30).text
    finally:
        server.stop()
    families = {f.name for f in text_string_to_metric_families(text)}
    assert declared <= families
    assert "clew_sampling_kept_by_policy" in declared and "clew_ingest_committed_spans" in declared


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (BadRequest("x"), 400, grpc.StatusCode.INVALID_ARGUMENT),
        (QuerySyntaxError("x", 3), 400, grpc.StatusCode.INVALID_ARGUMENT),
        (TooLarge("x"), 413, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (UnsupportedMedia("x"), 415, grpc.StatusCode.INVALID_ARGUMENT),
        (NotFound("x"), 404, grpc.StatusCode.NOT_FOUND),
        (Backpressure(2), 503, grpc.StatusCode.UNAVAILABLE),
        (StoreError("x"), 503, grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_one_mapping_from_domain_errors_to_statuses(error: ClewError, status: int, code: grpc.StatusCode):
    p = problem(error)
    assert (p.status, p.code) == (status, code)
    if status == 503:
        assert p.headers["Retry-After"] == ("2" if isinstance(error, Backpressure) else "1")
