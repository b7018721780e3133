"""`clew.instrument()` in a fresh process per case (the SDK's providers are set once per process),
sending to a real server."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import httpx
import pytest

from clew import instrument
from tests.conftest import ServerProcess


def run(code: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout
    )


def search(server: ServerProcess, q: str) -> list[dict]:
    response = httpx.get(f"{server.http_url}/api/v1/search", params={"q": q}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["traces"]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_spans_arrive_with_resource_attributes_and_logs_carry_trace_ids(
    server: ServerProcess, protocol: str
) -> None:
    endpoint = server.otlp_http_url if protocol == "http" else f"http://127.0.0.1:{server.grpc_port}"
    result = run(
        f"""
        import logging, sqlite3
        from clew import instrument
        from opentelemetry import trace
        records = []
        class Keep(logging.Handler):
            def emit(self, record):
                records.append(record)
        logging.getLogger("app").addHandler(Keep())
        logging.getLogger("app").setLevel(logging.INFO)
        provider = instrument(service_name="checkout", service_version="1.5.0", environment="prod",
                              endpoint="{endpoint}", protocol="{protocol}")
        with trace.get_tracer("test").start_as_current_span("place order") as span:
            db = sqlite3.connect(":memory:")
            db.cursor().execute("SELECT 1").fetchall()  # cursors are what sqlite3's instrumentation traces
            logging.getLogger("app").info("order placed")
            trace_id = format(span.get_span_context().trace_id, "032x")
        assert provider.force_flush(10000)
        print(trace_id, records[0].otelTraceID)
        """
    )
    assert result.returncode == 0, result.stderr
    trace_id, logged = result.stdout.split()
    assert logged == trace_id  # trace ids are injected into log records
    doc = httpx.get(f"{server.http_url}/api/v1/traces/{trace_id}", timeout=30).json()
    (resource_spans,) = doc["resourceSpans"]
    resource = {a["key"]: a["value"] for a in resource_spans["resource"]["attributes"]}
    assert resource["service.name"] == {"stringValue": "checkout"}
    assert resource["service.version"] == {"stringValue": "1.5.0"}
    assert resource["deployment.environment"] == {"stringValue": "prod"}
    assert resource["host.name"]["stringValue"]
    names = {s["name"] for ss in resource_spans["scopeSpans"] for s in ss["spans"]}
    assert "place order" in names
    assert any(n.startswith("SELECT") for n in names)  # sqlite3 was instrumented


def test_an_unreachable_endpoint_does_not_break_the_app() -> None:
    result = run(
        """
        from clew import instrument
        from opentelemetry import trace
        provider = instrument(service_name="lonely", endpoint="http://127.0.0.1:9")
        with trace.get_tracer("t").start_as_current_span("work"):
            total = sum(range(10))
        provider.force_flush(3000)
        provider.shutdown()
        print("still running", total)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "still running 45"


def test_parent_based_sampling_and_propagators() -> None:
    result = run(
        """
        from clew import instrument
        from opentelemetry import context, propagate, trace
        instrument(service_name="s", endpoint="http://127.0.0.1:9", sample_ratio=0.0, b3=True)
        tracer = trace.get_tracer("t")
        with tracer.start_as_current_span("own root") as span:
            print("root recorded:", span.is_recording())
        carrier = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "baggage": "user.id=u-1"}
        context.attach(propagate.extract(carrier))
        with tracer.start_as_current_span("child of a sampled caller") as span:
            print("child recorded:", span.is_recording())
            out = {}
            propagate.inject(out)
            print(sorted(out))
        """
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "root recorded: False"  # ratio 0 for traces this service starts
    assert lines[1] == "child recorded: True"  # the caller's decision is followed
    assert lines[2] == str(sorted(["baggage", "traceparent", "x-b3-sampled", "x-b3-spanid", "x-b3-traceid"]))


def test_bad_arguments_are_refused_before_anything_is_set_up() -> None:
    with pytest.raises(ValueError, match="sample_ratio"):
        instrument(service_name="x", sample_ratio=1.5)
    with pytest.raises(ValueError, match="protocol"):
        instrument(service_name="x", protocol="udp")  # type: ignore[arg-type]
