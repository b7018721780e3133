"""Redaction through the real ingest path: secrets sent over OTLP and Zipkin are absent from every
API answer and from every byte of the data directory, while ordinary data is untouched."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from clew.assembly import open_embedded
from clew.components.redaction import RedactionConfig, RedactionError
from clew.core.otlp import to_traces_data
from clew.receivers.otlp import decode_json, to_otlp_json
from tests.chfiles import readable_bytes
from tests.conftest import CLICKHOUSE, ServerProcess, counters

NOW = time.time_ns()
TRACE = "ab" * 16
SECRETS = [
    "alice@example.com",
    "4111 1111 1111 1111",
    "203.0.113.77",
    "hunter2-very-secret",
    "abc.def.bearer-token-xyz",
    "s3cr3tpw-in-url",
    "tok123-in-query",
    "pw999-in-name",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl",
    "10.99.88.77",
    "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
]


def attr(key: str, value: object) -> dict:
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": value}}


def leaky_trace() -> dict:
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [attr("service.name", "accounts"), attr("host.ip", "10.99.88.77")]
                },
                "scopeSpans": [
                    {
                        "scope": {
                            "name": "lib",
                            "attributes": [attr("api.key", "sk_live_4eC39HqLyjWDarjtT1zdp7dc")],
                        },
                        "spans": [
                            {
                                "traceId": TRACE,
                                "spanId": "cd" * 8,
                                "name": "GET /reset?password=pw999-in-name",
                                "kind": 2,
                                "startTimeUnixNano": str(NOW),
                                "endTimeUnixNano": str(NOW + 10**8),
                                "status": {"code": 2, "message": "failed for alice@example.com"},
                                "attributes": [
                                    attr("user.email", "alice@example.com"),
                                    attr("payment.card", "4111 1111 1111 1111"),
                                    attr("order.ref", "4111111111111112"),  # fails the Luhn check: not a card
                                    attr("client.address", "203.0.113.77"),
                                    attr("password", "hunter2-very-secret"),
                                    attr(
                                        "http.request.header.authorization", "Bearer abc.def.bearer-token-xyz"
                                    ),
                                    attr(
                                        "url.full",
                                        "https://bob:s3cr3tpw-in-url@example.com/x?token=tok123-in-query&page=2",
                                    ),
                                    attr("http.route", "/reset"),
                                    attr("retries", 3),
                                ],
                                "events": [
                                    {
                                        "timeUnixNano": str(NOW + 10**6),
                                        "name": "mail sent to alice@example.com",
                                        "attributes": [
                                            attr(
                                                "exception.message",
                                                "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl rejected",
                                            )
                                        ],
                                    }
                                ],
                            }
                        ],
                    }
                ],
            }
        ]
    }


def all_bytes(directory: Path) -> bytes:
    """Every byte under `directory`, column files decompressed (tests/chfiles.py)."""
    return readable_bytes(directory)


def test_secrets_never_reach_the_disk_or_the_apis(data_dir: Path, storage: Callable[[Path], str]) -> None:
    """On either store: with a ClickHouse server, its data directory is scanned too."""
    store = storage(data_dir)
    server = ServerProcess(data_dir, extra_args=["--storage", store]).start()
    try:
        response = httpx.post(f"{server.otlp_http_url}/v1/traces", json=leaky_trace(), timeout=30)
        assert response.status_code == 200, response.text
        zipkin = [
            {
                "traceId": "ef" * 16,
                "id": "12" * 8,
                "name": "login",
                "timestamp": NOW // 1000,
                "duration": 1000,
                "localEndpoint": {"serviceName": "accounts"},
                "tags": {"user.email": "alice@example.com", "session_token": "hunter2-very-secret"},
            }
        ]
        assert httpx.post(f"{server.zipkin_url}/api/v2/spans", json=zipkin, timeout=30).status_code == 202
        answers = [
            httpx.get(f"{server.http_url}/api/v1/traces/{TRACE}", timeout=30).text,
            httpx.get(f"{server.http_url}/api/traces/{TRACE}", timeout=30).text,
            httpx.get(f"{server.http_url}/api/v1/traces/{'ef' * 16}", timeout=30).text,
            httpx.get(f"{server.http_url}/api/v1/search", params={"q": "{ }"}, timeout=30).text,
            httpx.get(f"{server.http_url}/api/services/accounts/operations", timeout=30).text,
        ]
        doc = json.loads(answers[0])
        spans = len(doc["resourceSpans"][0]["scopeSpans"][0]["spans"]) + 1  # and the Zipkin span
        values = counters(server.http_url, {"clew_redaction_spans_total": spans})
    finally:
        server.stop()
    assert values["clew_redaction_spans_total"] == spans
    assert values["clew_redaction_redacted_spans_total"] == spans  # each of them carried a secret
    for secret in SECRETS:
        for answer in answers:
            assert secret not in answer, secret
    raw = all_bytes(data_dir)
    if store != "embedded" and CLICKHOUSE.directory is not None:
        raw += all_bytes(CLICKHOUSE.directory)  # the test server's engine, where the spans went
    if store == "embedded" or CLICKHOUSE.directory is not None:  # a remote server's disk is not ours
        assert b"GET /reset" in raw  # the scan reads where the spans are
    for secret in SECRETS:
        assert secret.encode() not in raw, f"{secret!r} is on disk"
    # what was kept, and how
    (span,) = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
    attrs = {a["key"]: next(iter(a["value"].values())) for a in span["attributes"]}
    assert "password" not in attrs and "http.request.header.authorization" not in attrs
    assert attrs["payment.card"] == "[REDACTED:card]"
    assert attrs["order.ref"] == "4111111111111112"
    assert attrs["client.address"] == "[REDACTED:ip]"
    assert attrs["url.full"] == "https://bob:[REDACTED]@example.com/x?token=[REDACTED]&page=2"
    assert attrs["http.route"] == "/reset" and attrs["retries"] == "3"
    email = attrs["user.email"]
    assert email.startswith("[email:") and len(email) == len("[email:]") + 16
    assert span["status"]["message"] == f"failed for {email}"  # keyed hash: equal values stay joinable
    assert span["events"][0]["name"] == f"mail sent to {email}"
    assert span["name"] == "GET /reset"  # the name template cut the query string; redaction would mask it


def test_rules_come_from_clew_toml(tmp_path: Path) -> None:
    config = tmp_path / "clew.toml"
    config.write_text(
        """
[redaction]
extra_deny_keys = ["http.route"]
deny_action = "mask"
allow_keys = ["client.address"]

[redaction.detectors]
email = "mask"
card = "off"
"""
    )
    server = ServerProcess(tmp_path / "data", extra_args=["--config", str(config)]).start()
    try:
        assert (
            httpx.post(f"{server.otlp_http_url}/v1/traces", json=leaky_trace(), timeout=30).status_code == 200
        )
        doc = httpx.get(f"{server.http_url}/api/v1/traces/{TRACE}", timeout=30).json()
    finally:
        server.stop()
    (span,) = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
    attrs = {a["key"]: next(iter(a["value"].values())) for a in span["attributes"]}
    assert attrs["http.route"] == "[REDACTED]" and attrs["password"] == "[REDACTED]"  # masked, not dropped
    assert "retries" in attrs
    assert attrs["client.address"] == "203.0.113.77"  # allowed key: detectors skip it
    assert attrs["user.email"] == "[REDACTED:email]"
    assert attrs["payment.card"] == "4111 1111 1111 1111"  # card detector off


def test_redaction_can_be_switched_off(tmp_path: Path) -> None:
    config = tmp_path / "clew.toml"
    config.write_text("[redaction]\nenabled = false\n")
    server = ServerProcess(tmp_path / "data", extra_args=["--config", str(config)]).start()
    try:
        assert (
            httpx.post(f"{server.otlp_http_url}/v1/traces", json=leaky_trace(), timeout=30).status_code == 200
        )
        text = httpx.get(f"{server.http_url}/api/v1/traces/{TRACE}", timeout=30).text
    finally:
        server.stop()
    assert "hunter2-very-secret" in text and "alice@example.com" in text
    # and the byte scan of the other test would see a secret that was stored
    assert b"hunter2-very-secret" in all_bytes(tmp_path / "data")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"deny_action": "shred"}, "deny_action must be one of drop, mask, hash"),
        ({"detectors": {"phone": "mask"}}, "unknown detector 'phone'"),
        ({"detectors": {"email": "encrypt"}}, "email must be mask, hash or off"),
        ({"deny": ["x"]}, "unknown setting 'deny'"),
    ],
)
def test_bad_rules_are_refused_by_name(doc: dict, message: str) -> None:
    with pytest.raises(RedactionError, match=message):
        RedactionConfig.from_toml(doc)


def test_a_bad_rules_file_stops_the_server_with_the_reason(tmp_path: Path) -> None:
    import subprocess
    import sys

    config = tmp_path / "clew.toml"
    config.write_text('[redaction]\ndeny_action = "shred"\n')
    result = subprocess.run(
        [sys.executable, "-m", "clew.cli", "serve", "--config", str(config), "--data-dir", str(tmp_path / "d")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "deny_action must be one of drop, mask, hash" in result.stderr


@pytest.mark.parametrize("action", ["drop", "mask"])
def test_every_string_goes_back_to_its_own_place(tmp_path: Path, action: str) -> None:
    """The detectors scrub all strings of a span in one array that is then cut back into names,
    attribute maps, scope, event and link lists of varying sizes; nothing may shift."""

    def attrs(*pairs: tuple[str, object]) -> list[dict]:
        return [attr(k, v) for k, v in pairs]

    spans = []
    for i in range(3):  # spans of different shapes in one insert
        events = [
            {
                "timeUnixNano": str(NOW),
                "name": f"ev{i}a",
                "attributes": attrs(("a", f"x{i}"), ("b", "bob@example.org")),
            },
            {"timeUnixNano": str(NOW), "name": f"ev{i}b to carol@example.org"},
            {
                "timeUnixNano": str(NOW),
                "name": f"ev{i}c",
                "attributes": attrs(("n", i), ("token", "t0ps3cret"), ("c", f"y{i}")),
            },
        ][: i + 1]
        links = [
            {"traceId": "11" * 16, "spanId": "22" * 8, "attributes": attrs(("d", f"z{i}"))},
            {
                "traceId": "33" * 16,
                "spanId": "44" * 8,
                "attributes": attrs(("e", "10.1.2.3"), ("f", f"keep{i}")),
            },
        ][: 2 - i % 2]
        spans.append(
            {
                "traceId": TRACE,
                "spanId": f"{i + 1:016x}",
                "name": f"op{i}",
                "startTimeUnixNano": str(NOW),
                "endTimeUnixNano": str(NOW + 1000),
                "status": {"message": f"st{i}"},
                "attributes": attrs(
                    *[(f"k{j}", f"v{i}.{j}") for j in range(i)], ("secret", "s3"), ("mail", "dan@example.org")
                ),
                "events": events,
                "links": links,
            }
        )
    doc = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": attrs(("service.name", "svc"), ("r1", "res"), ("r.ip", "192.0.2.1"))
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "s", "attributes": attrs(("sc", "scoped"), ("cookie", "c"))},
                        "spans": spans,
                    }
                ],
            }
        ]
    }
    config = RedactionConfig(
        deny_action=action,
        detectors={"url_password": "mask", "token": "mask", "email": "mask", "card": "mask", "ip": "mask"},
    )
    store = open_embedded(tmp_path / "data", redaction=config)
    try:
        store.writer.write(decode_json(json.dumps(doc).encode()).batch)
        got = to_otlp_json(to_traces_data(store.reader.get_trace(bytes.fromhex(TRACE))))
    finally:
        store.close()
    denied = "[REDACTED]" if action == "mask" else None

    def values(items: list[dict]) -> dict:
        return {a["key"]: next(iter(a["value"].values())) for a in items}

    def expect(pairs: dict) -> dict:
        return {k: v for k, v in pairs.items() if v is not None}

    (rs,) = got["resourceSpans"]
    assert values(rs["resource"]["attributes"]) == {
        "service.name": "svc",
        "r1": "res",
        "r.ip": "[REDACTED:ip]",
    }
    (ss,) = rs["scopeSpans"]
    assert values(ss["scope"]["attributes"]) == expect({"sc": "scoped", "cookie": denied})
    for i, span in enumerate(sorted(ss["spans"], key=lambda s: s["name"])):
        assert span["name"] == f"op{i}" and span["status"]["message"] == f"st{i}"
        assert values(span["attributes"]) == expect(
            {**{f"k{j}": f"v{i}.{j}" for j in range(i)}, "secret": denied, "mail": "[REDACTED:email]"}
        )
        events = [
            (f"ev{i}a", {"a": f"x{i}", "b": "[REDACTED:email]"}),
            (f"ev{i}b to [REDACTED:email]", {}),
            (f"ev{i}c", expect({"n": str(i), "token": denied, "c": f"y{i}"})),
        ][: i + 1]
        assert [(e["name"], values(e.get("attributes", []))) for e in span.get("events", [])] == events
        links = [{"d": f"z{i}"}, {"e": "[REDACTED:ip]", "f": f"keep{i}"}][: 2 - i % 2]
        assert [values(link.get("attributes", [])) for link in span.get("links", [])] == links
