"""Enrichment and span-name templates through the real ingest path (clew.toml, OTLP, the APIs)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from clew.components.enrichment import EnrichConfig, EnrichError
from tests.conftest import ServerProcess, counters

NOW = time.time_ns()
NAMES = [
    "GET /users/12345",
    "GET /users/98765/orders/678?expand=items",
    "GET /files/0f8fad5b-d9cb-469f-a165-70867728950e/content",
    "GET /blobs/0123456789abcdef0123",
    "GET /v2/users",
]


def doc(service: str, extra_resource: dict[str, str] | None = None) -> dict:
    attrs = [{"key": "service.name", "value": {"stringValue": service}}]
    attrs += [{"key": k, "value": {"stringValue": v}} for k, v in (extra_resource or {}).items()]
    spans = [
        {
            "traceId": f"{i + 1:032x}",
            "spanId": f"{i + 1:016x}",
            "name": name,
            "kind": 2,
            "startTimeUnixNano": str(NOW),
            "endTimeUnixNano": str(NOW + 10**6),
        }
        for i, name in enumerate(NAMES)
    ]
    return {"resourceSpans": [{"resource": {"attributes": attrs}, "scopeSpans": [{"spans": spans}]}]}


def resource_of(server: ServerProcess, trace_id: str, tenant: str | None = None) -> dict[str, str]:
    headers = {"X-Scope-OrgID": tenant} if tenant else {}
    body = httpx.get(f"{server.http_url}/api/v1/traces/{trace_id}", headers=headers, timeout=30).json()
    return {a["key"]: a["value"]["stringValue"] for a in body["resourceSpans"][0]["resource"]["attributes"]}


def test_names_become_templates_and_resources_are_enriched(tmp_path: Path) -> None:
    config = tmp_path / "clew.toml"
    config.write_text(
        """
[enrich.resource]
"deployment.environment" = "staging"

[enrich.tenants.acme.resource]
team = "payments"
"""
    )
    server = ServerProcess(tmp_path / "data", extra_args=["--config", str(config)]).start()
    try:
        url = f"{server.otlp_http_url}/v1/traces"
        assert httpx.post(url, json=doc("users"), timeout=30).status_code == 200
        own = doc("users", {"deployment.environment": "prod"})
        assert httpx.post(url, json=own, headers={"X-Scope-OrgID": "acme"}, timeout=30).status_code == 200
        operations = httpx.get(f"{server.http_url}/api/services/users/operations", timeout=30).json()["data"]
        default_resource = resource_of(server, f"{1:032x}")
        acme_resource = resource_of(server, f"{1:032x}", "acme")
        expected = {"clew_templates_spans_total": 2 * len(NAMES), "clew_templates_templated_names_total": 8}
        values = counters(server.http_url, expected)
    finally:
        server.stop()
    assert operations == [
        "GET /blobs/{id}",
        "GET /files/{id}/content",
        "GET /users/{id}",
        "GET /users/{id}/orders/{id}",
        "GET /v2/users",
    ]
    assert default_resource["deployment.environment"] == "staging" and "team" not in default_resource
    assert acme_resource["team"] == "payments"
    assert acme_resource["deployment.environment"] == "prod"  # what the span's resource says wins
    assert {k: values.get(k) for k in expected} == expected  # all but GET /v2/users, twice


def test_name_templates_can_be_switched_off(tmp_path: Path) -> None:
    config = tmp_path / "clew.toml"
    config.write_text("[enrich]\nnormalize_names = false\n")
    server = ServerProcess(tmp_path / "data", extra_args=["--config", str(config)]).start()
    try:
        assert (
            httpx.post(f"{server.otlp_http_url}/v1/traces", json=doc("users"), timeout=30).status_code == 200
        )
        operations = httpx.get(f"{server.http_url}/api/services/users/operations", timeout=30).json()["data"]
    finally:
        server.stop()
    assert sorted(operations) == sorted(NAMES)


def test_bad_enrich_settings_are_named() -> None:
    with pytest.raises(EnrichError, match="unknown setting 'colour'"):
        EnrichConfig.from_toml({"colour": "red"})
    with pytest.raises(EnrichError, match=r"\[enrich.tenants.acme\]: unknown setting 'attrs'"):
        EnrichConfig.from_toml({"tenants": {"acme": {"attrs": {}}}})
