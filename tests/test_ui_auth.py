"""The web UI on a server with API keys (issue 12): a sign-in page asks for the key, keeps it in the
tab's sessionStorage only (no cookie, no localStorage) and sends it with every call; a wrong key is
asked for again; a read key sees its tenant's traces and nothing of another's. Real Chromium."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.conftest import ServerProcess
from tests.test_auth import TRACE, _bearer, _clew, _otlp
from tests.test_ui import ARGS, CHROMIUM, OUTPUT


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    data_dir = tmp_path_factory.mktemp("ui-auth") / "data"
    keys = {
        "read": _clew("keys", "create", "--role", "read", "--tenant", "shop", data_dir=data_dir),
        "ingest-shop": _clew("keys", "create", "--role", "ingest", "--tenant", "shop", data_dir=data_dir),
        "ingest-bank": _clew("keys", "create", "--role", "ingest", "--tenant", "bank", data_dir=data_dir),
    }
    server = ServerProcess(data_dir).start()
    try:
        for tenant in ("shop", "bank"):
            assert server.post_otlp(_otlp(tenant), **_bearer(keys[f"ingest-{tenant}"])).status_code == 200
        yield server, keys
    finally:
        server.stop()


@pytest.fixture
def page(keyed: tuple[ServerProcess, dict[str, str]]) -> Iterator[Page]:
    with sync_playwright() as p:
        browser: Browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=True)
        pg = context.new_page()
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        yield pg
        OUTPUT.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(OUTPUT / "sign-in.png"))
        browser.close()
        assert not errors, errors


def _sign_in(page: Page, key: str) -> None:
    page.wait_for_selector("#signin #api-key", timeout=30_000)
    page.fill("#api-key", key)
    page.click("#signin button[type=submit]")


def test_sign_in_keeps_the_key_in_the_tab_and_reads_only_its_tenant(keyed, page: Page) -> None:
    server, keys = keyed
    page.goto(f"{server.http_url}/search")
    _sign_in(page, "clew_not-a-key")
    # asked again, and the wrong key is not kept
    page.wait_for_selector("#signin #api-key", timeout=30_000)
    assert page.evaluate("sessionStorage.getItem('clew.key')") is None
    _sign_in(page, keys["read"])
    page.wait_for_selector("#q", timeout=30_000)
    assert page.evaluate("sessionStorage.getItem('clew.key')") == keys["read"]
    assert page.evaluate("localStorage.length") == 0 and page.evaluate("document.cookie") == ""
    page.goto(f"{server.http_url}/trace/{TRACE['shop']}")
    page.wait_for_selector("#waterfall .span-row", timeout=30_000)
    assert "shop-op" in page.inner_text("#waterfall")
    page.goto(f"{server.http_url}/trace/{TRACE['bank']}")
    page.wait_for_selector("body[data-ready]", timeout=30_000)
    body = page.inner_text("body")
    assert "bank-op" not in body and "bank-svc" not in body
    assert Path(OUTPUT).exists()
