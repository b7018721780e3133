"""`clew.instrument()` in a fresh process per case (the SDK's providers are set once per process),
sending to a real server."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
import time

import httpx
import pytest

from clew import instrument
from tests.conftest import ServerProcess


def run(code: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def trace_logs(server: ServerProcess, trace_id: str) -> list[dict]:
    response = httpx.get(f"{server.http_url}/api/v1/traces/{trace_id}/logs", timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["logs"]


def search_logs(server: ServerProcess, q: str) -> list[dict]:
    response = httpx.get(f"{server.http_url}/api/v1/logs", params={"q": q, "limit": 1000}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["logs"]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_log_records_arrive_joined_to_the_span_they_were_written_in(
    server: ServerProcess, protocol: str
) -> None:
    endpoint = server.otlp_http_url if protocol == "http" else f"http://127.0.0.1:{server.grpc_port}"
    result = run(
        f"""
        import logging, time
        from clew import instrument
        from opentelemetry import trace
        # every record is created (urllib3 logs each export request at DEBUG); the handler ships
        # DEBUG and above, and nothing about exporting: else each export would log the next one
        logging.getLogger().setLevel(1)
        provider = instrument(service_name="payment-{protocol}", endpoint="{endpoint}", protocol="{protocol}",
                              export_delay_ms=50, log_level="debug")
        log = logging.getLogger("shop.payment")
        with trace.get_tracer("test").start_as_current_span("charge card") as span:
            log.log(5, "card reader bytes")  # below the handler's level
            log.debug("charging card ending %s", "4242", extra={{"order.id": "o-17"}})
            try:
                raise ValueError("insufficient funds")
            except ValueError:
                log.exception("payment declined")
            context = span.get_span_context()
        log.warning("settlement file late")  # in no span
        logging.getLogger("urllib3.connectionpool").warning("Retrying (Retry(total=2)) after connection broken")
        logging.getLogger("opentelemetry.sdk._shared_internal").warning("Queue full, dropping logs.")
        time.sleep(1)  # some twenty export rounds, each of which would log if they fed back
        assert provider.force_flush(10000)
        print(format(context.trace_id, "032x"), format(context.span_id, "016x"))
        """
    )
    assert result.returncode == 0, result.stderr
    trace_id, span_id = result.stdout.split()
    logs = trace_logs(server, trace_id)
    assert [(r["severityText"], r["severityNumber"], r["body"]) for r in logs] == [
        ("DEBUG", 5, "charging card ending 4242"),
        ("ERROR", 17, "payment declined"),
    ]
    for record in logs:
        assert (record["traceId"], record["spanId"]) == (trace_id, span_id)
        assert record["service"] == f"payment-{protocol}"
        assert record["scope"]["name"] == "shop.payment"
        assert record["attributes"]["code.function.name"] == "<module>"
        assert not any(key.startswith("otel") for key in record["attributes"])  # ids are fields, once
    assert logs[0]["attributes"]["order.id"] == "o-17"
    declined = logs[1]["attributes"]
    assert declined["exception.type"] == "ValueError"
    assert declined["exception.message"] == "insufficient funds"
    assert "Traceback" in declined["exception.stacktrace"]
    # everything the service shipped: the records above and the one in no span, nothing about exporting
    shipped = [
        r
        for r in search_logs(server, f"service:payment-{protocol}")
        if r["scope"]["name"] != "clew.instrumentation"
    ]
    assert sorted(r["body"] for r in shipped) == [
        "charging card ending 4242",
        "payment declined",
        "settlement file late",
    ]
    (late,) = [r for r in shipped if r["body"] == "settlement file late"]
    assert late["severityText"] == "WARN" and not late["traceId"] and not late["spanId"]


def test_one_handler_however_often_instrument_runs_and_logging_config_keeps_it() -> None:
    result = run(
        """
        import logging, logging.config, sys
        from clew import instrument
        from clew.instrumentation import _ShippingHandler

        def ours():
            return [h for h in logging.getLogger().handlers if isinstance(h, _ShippingHandler)]

        provider = instrument(service_name="s", endpoint="http://127.0.0.1:9", log_level="warning")
        instrument(service_name="s", endpoint="http://127.0.0.1:9")
        print(len(ours()), ours()[0].level)
        # configured after instrument(): basicConfig still adds its console handler, and a
        # dictConfig that resets the root keeps ours
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
        print(len(ours()), [type(h).__name__ for h in logging.getLogger().handlers if h not in ours()])
        logging.config.dictConfig({"version": 1, "root": {"level": "INFO"}, "incremental": False})
        print(len(ours()), logging.getLogger().level)
        instrument(service_name="s", endpoint="http://127.0.0.1:9", logs=False)
        print(len(ours()))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["1 20", "1 ['StreamHandler']", "1 20", "0"]


def test_an_unreachable_endpoint_does_not_break_the_app() -> None:
    result = run(
        """
        from clew import instrument
        from opentelemetry import trace
        import logging
        provider = instrument(service_name="lonely", endpoint="http://127.0.0.1:9")
        with trace.get_tracer("t").start_as_current_span("work"):
            total = sum(range(10))
            logging.getLogger("app").error("logged while clew is away")
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
    with pytest.raises(ValueError, match="log_level"):
        instrument(service_name="x", log_level="chatty")


@pytest.mark.parametrize("app_handler", [False, True])
def test_a_uvicorn_app_stopped_by_sigterm_sends_its_last_spans_and_logs(
    server: ServerProcess, app_handler: bool
) -> None:
    """uvicorn shuts down on SIGTERM and raises it again; with the default handler back, exit handlers
    (where the SDK flushes) never ran and the queued spans were lost. The export delay here is a
    minute, so only the flush at SIGTERM can send them. An application's own SIGTERM handler is
    left in place (it exits 0 here through its `finally`, which flushes)."""
    service = f"stopped-{int(app_handler)}"
    code = f"""
        import logging, signal, sys
        import uvicorn
        {"signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))" if app_handler else ""}
        from clew import instrument
        provider = instrument(service_name="{service}", endpoint="{server.otlp_http_url}", export_delay_ms=60000)
        # after instrument(), which patches Starlette's constructor
        from starlette.applications import Starlette
        from starlette.responses import PlainTextResponse
        from starlette.routing import Route

        async def hello(request):
            logging.getLogger("app").warning("said hello")
            return PlainTextResponse("hello")

        app = Starlette(routes=[Route("/hello", hello)])
        try:
            uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
        finally:
            provider.shutdown()
        """
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), str(port)], stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/hello", timeout=5).text == "hello"
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
                time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        returncode = proc.wait(60)
    finally:
        proc.kill()
    assert returncode == (0 if app_handler else -signal.SIGTERM)  # ended by the signal, as before
    (found,) = search(server, f'{{ resource.service.name = "{service}" && name = "GET /hello" }}')
    assert [r["body"] for r in trace_logs(server, found["traceID"])] == ["said hello"]
