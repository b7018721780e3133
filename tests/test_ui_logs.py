"""Logs in the web UI, in Debian's Chromium driven by Playwright, against a real server: a trace's logs
beside its spans (the timeline under the waterfall, each span's own in its details) and the /logs
search page. The traces and logs go in as OTLP/JSON, as an SDK would send them.

Screenshots go to tests/output/ui/, as tests/test_ui.py's do.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from tests.conftest import ServerProcess
from tests.shop_data import MS, attr, span
from tests.test_ui import ARGS, CHROMIUM, OUTPUT, open_page

XSS = "<img src=x onerror=alert(1)>"
SCRIPT = "<script>window.clewPwned = 1</script>"
T = "7e1a" * 8  # frontend -> payments, cart: six logs across its three spans
S = "5ce1" * 8  # four spans: over full_trace_spans (3), so it opens from its skeleton
V = "0dd5" * 8  # no logs at all
W = "3a11" * 8  # a long service name, a long body, long attribute keys: the layout under strain
L = "1a4e" * 8  # 1,200 logs on one span: more than the timeline draws at first
W_ROOT, W_MID, W_LEAF, L_SPAN = "1b" * 8, "2c" * 8, "3d" * 8, "4e" * 8
WIDE = "inventory-reservation-service"
LONG_BODY = ("reservation table scan " + "lorem ipsum dolor sit amet " * 80)[:2000]
LONG_KEY = "messaging.rabbitmq.destination.routing_key.with_a_very_long_suffix_name"
ROOT, PAY, CART = "a1" * 8, "b2" * 8, "c3" * 8
JOB, STEP1, STEP2, STEP3 = "d4" * 8, "e5" * 8, "f6" * 8, "a7" * 8
NOW = time.time_ns()
START = NOW - 5 * 60 * 10**9  # T's root starts five minutes ago
WIDE_START = NOW - 10 * 60 * 10**9  # W's, ten


def any_value(value: object) -> dict:
    if isinstance(value, dict):
        return {"kvlistValue": {"values": [{"key": k, "value": any_value(v)} for k, v in value.items()]}}
    return attr("", value)["value"]


def record(
    at: int, number: int, text: str, body: object, trace: str = "", span_id: str = "", **attrs: object
) -> dict:
    out: dict = {
        "timeUnixNano": str(at),
        "severityNumber": number,
        "body": any_value(body),
        "attributes": [attr(k, v) for k, v in attrs.items()],
    }
    if text:
        out["severityText"] = text
    if trace:
        out["traceId"], out["spanId"] = trace, span_id
    return out


def logs_of(service: str, records: list[dict]) -> dict:
    return {
        "resourceLogs": [
            {
                "resource": {"attributes": [attr("service.name", service)]},
                "scopeLogs": [{"scope": {"name": "shop.logging"}, "logRecords": records}],
            }
        ]
    }


def spans_of(service: str, spans: list[dict]) -> dict:
    return {"resourceSpans": [{"resource": {"attributes": [attr("service.name", service)]},
                               "scopeSpans": [{"scope": {"name": "shop"}, "spans": spans}]}]}  # fmt: skip


def trace_docs() -> list[dict]:
    batch = START - 60 * 10**9
    return [
        spans_of("frontend", [span(T, ROOT, None, "GET /checkout", 2, START, 300)]),
        spans_of(
            "payments", [{**span(T, PAY, None, "charge card", 2, START + 50 * MS, 200), "parentSpanId": ROOT}]
        ),
        spans_of(
            "cart", [{**span(T, CART, None, "reserve items", 2, START + 100 * MS, 50), "parentSpanId": ROOT}]
        ),
        spans_of("frontend", [span(V, "9" * 16, None, "GET /quiet", 2, START, 20)]),
        spans_of("storefront", [span(W, W_ROOT, None, "POST /orders", 2, WIDE_START, 400)]),
        spans_of(
            WIDE,
            [
                {
                    **span(
                        W,
                        W_MID,
                        None,
                        "reserve stock for every line",
                        2,
                        WIDE_START + 50 * MS,
                        200,
                        error="out of stock",
                    ),
                    "parentSpanId": W_ROOT,
                },
                {**span(W, W_LEAF, None, "SELECT stock", 3, WIDE_START + 60 * MS, 50), "parentSpanId": W_MID},
            ],
        ),
        spans_of("importer", [span(L, L_SPAN, None, "bulk import", 1, WIDE_START - 5 * 60 * 10**9, 9000)]),
        spans_of(
            "batch",
            [
                span(S, JOB, None, "nightly job", 1, batch, 900),
                {**span(S, STEP1, None, "step one", 1, batch + 100 * MS, 100), "parentSpanId": JOB},
                {**span(S, STEP2, None, "step two", 1, batch + 300 * MS, 100), "parentSpanId": JOB},
                {
                    **span(S, STEP3, None, "step three", 1, batch + 500 * MS, 100, {"step": 3}),
                    "parentSpanId": JOB,
                },
            ],
        ),
    ]


def log_docs() -> list[dict]:
    """T's logs, sent out of time order and one service at a time; S's; W's and L's (none an error);
    and a newer error outside any trace."""
    batch = START - 60 * 10**9
    bulk = WIDE_START - 5 * 60 * 10**9
    return [
        logs_of("payments", [
            record(START + 240 * MS, 17, "ERROR", "payment declined by bank", T, PAY, code="card_declined"),
            record(START + 60 * MS, 9, "INFO", "charging card", T, PAY, amount=42),
        ]),
        logs_of("cart", [
            record(START + 130 * MS, 5, "", {"items": 3, "sku": "A-1"}, T, CART),  # DEBUG by its number
            record(START + 120 * MS, 13, "WARN", XSS, T, CART, note=SCRIPT),
        ]),
        logs_of("frontend", [
            record(START + 290 * MS, 9, "INFO", "response sent", T, ROOT),
            record(START + 10 * MS, 9, "INFO", "request received", T, ROOT, **{"user.id": 7}),
        ]),
        logs_of("batch", [
            record(batch + 550 * MS, 13, "WARN", "step three retried", S, STEP3),
            record(batch + 150 * MS, 9, "INFO", "step one began", S, STEP1),
            record(batch + 160 * MS, 9, "INFO", "step one read 10 rows", S, STEP1),
        ]),
        logs_of("storefront", [record(WIDE_START + 10 * MS, 9, "INFO", "order accepted", W, W_ROOT)]),
        logs_of(WIDE, [
            record(WIDE_START + 70 * MS, 5, "DEBUG", {"rows": 2, "table": "stock"}, W, W_LEAF),
            record(WIDE_START + 80 * MS, 9, "INFO", LONG_BODY, W, W_MID),
            record(WIDE_START + 90 * MS, 13, "WARN", "stock low", W, W_MID, **{
                LONG_KEY: "orders.reserve",
                "http.request.header.x_forwarded_for_the_original_caller": "gateway-7",
                "url.full": "https://shop.example/" + "reserve/" * 30,
            }),
            record(WIDE_START + 95 * MS, 9, "INFO", "retry scheduled outside any span", W),
        ]),
        logs_of("importer", [record(bulk + i * MS, 9, "INFO", f"imported row {i}", L, L_SPAN, row=i) for i in range(1200)]),
        logs_of("ops", [record(NOW - 60 * 10**9, 17, "ERROR", "disk almost full on db-2")]),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def logs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("ui-logs")
    config = root / "clew.toml"
    config.write_text("[serve]\nfull_trace_spans = 3\n")
    proc = ServerProcess(root / "data", extra_args=["--config", str(config)]).start()
    try:
        for doc in trace_docs():
            response = httpx.post(f"{proc.otlp_http_url}/v1/traces", json=doc, timeout=60)
            assert response.status_code == 200 and response.json() == {}, response.text
        for doc in log_docs():
            response = httpx.post(f"{proc.otlp_http_url}/v1/logs", json=doc, timeout=60)
            assert response.status_code == 200 and "rejected" not in response.text, response.text
        deadline = time.monotonic() + 30
        for trace, count in ((T, 6), (W, 5), (L, 1200)):
            while (
                len(httpx.get(f"{proc.http_url}/api/v1/traces/{trace}/logs", timeout=30).json()["logs"])
                < count
            ):
                assert time.monotonic() < deadline, "the logs never became readable"
                time.sleep(0.2)
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser, logs_server: ServerProcess, request: pytest.FixtureRequest) -> Iterator[Page]:
    # bypass_csp: Playwright evaluates its waits as strings; escaping is tested without the policy
    context = browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=True)
    pg = context.new_page()
    errors: list[str] = []
    dialogs: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    yield pg
    OUTPUT.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(OUTPUT / f"{request.node.name}.png"), full_page=True)
    context.close()
    assert not errors, errors
    assert not dialogs, f"a dialog opened (script ran?): {dialogs}"


def timeline(page: Page, key: str) -> list[str]:
    return page.locator("#trace-logs-table > tbody > tr").evaluate_all(f"trs => trs.map(tr => tr.{key})")


def cells(page: Page, column: int) -> list[str]:
    return page.locator(f"#trace-logs-table > tbody > tr > td:nth-child({column})").all_inner_texts()


def test_the_trace_page_lists_its_logs_in_time_order_across_spans(
    page: Page, logs_server: ServerProcess
) -> None:
    open_page(page, logs_server, f"/trace/{T}")
    expect(page.locator("#fact-logs")).to_have_text("6")
    assert timeline(page, "dataset.service") == [
        "frontend",
        "payments",
        "cart",
        "cart",
        "payments",
        "frontend",
    ]
    assert timeline(page, "dataset.spanId") == [ROOT, PAY, CART, CART, PAY, ROOT]
    assert cells(page, 1) == ["+10.0ms", "+60.0ms", "+120.0ms", "+130.0ms", "+240.0ms", "+290.0ms"]
    assert cells(page, 2) == ["INFO", "INFO", "WARN", "DEBUG", "ERROR", "INFO"]
    assert cells(page, 4) == ["GET /checkout", "charge card", "reserve items", "reserve items", "charge card", "GET /checkout"]  # fmt: skip
    bodies = page.locator("#trace-logs-table .log-body").all_inner_texts()
    assert bodies == ["request received", "charging card", XSS, '{"items":3,"sku":"A-1"}', "payment declined by bank", "response sent"]  # fmt: skip
    # coloured by level
    levels = page.locator("#trace-logs-table .sev").evaluate_all("els => els.map(e => e.className)")
    assert levels == ["sev sev-info", "sev sev-info", "sev sev-warn", "sev sev-debug", "sev sev-error", "sev sev-info"]  # fmt: skip
    error_colour = page.locator("#trace-logs-table .sev-error").evaluate(
        "e => getComputedStyle(e).backgroundColor"
    )
    info_colour = page.locator("#trace-logs-table .sev-info").first.evaluate(
        "e => getComputedStyle(e).backgroundColor"
    )
    assert error_colour != info_colour
    # each span with logs says how many in the waterfall, red when one is an error
    expect(page.locator(f".span-row[data-span-id='{PAY}'] .log-badge")).to_have_text("2 logs")
    expect(page.locator(f".span-row[data-span-id='{PAY}'] .log-badge-error")).to_have_count(1)
    expect(page.locator(f".span-row[data-span-id='{CART}'] .log-badge-error")).to_have_count(0)
    # the filter narrows the timeline
    page.fill("#trace-logs-filter", "card")
    assert cells(page, 1) == ["+60.0ms", "+240.0ms"]  # "charging card", and code=card_declined
    page.fill("#trace-logs-filter", "")
    page.select_option("#trace-logs-level", "warn")
    assert cells(page, 2) == ["WARN", "ERROR"]
    # a trace without logs says so in a line
    open_page(page, logs_server, f"/trace/{V}")
    expect(page.locator("#trace-logs-none")).to_have_text("No logs for this trace.")
    expect(page.locator("#trace-logs-table")).to_have_count(0)
    expect(page.locator(".log-badge")).to_have_count(0)


def test_a_log_row_selects_its_span_whose_details_list_only_its_logs(
    page: Page, logs_server: ServerProcess
) -> None:
    open_page(page, logs_server, f"/trace/{T}")
    expect(page.locator("#span-detail")).to_be_hidden()  # no error span: nothing selected yet
    page.locator("#trace-logs-table > tbody > tr", has_text="payment declined by bank").locator(
        ".log-body"
    ).click()
    detail = page.locator("#span-detail")
    expect(detail.locator("#detail-span-id")).to_have_text(PAY)
    expect(detail.locator("#detail-name")).to_have_text("charge card")
    expect(page.locator(".span-row.selected")).to_have_attribute("data-span-id", PAY)
    assert f"span={PAY}" in page.url
    expect(detail.locator("#detail-logs-title")).to_have_text("Logs (2)")
    items = detail.locator("#detail-logs li")
    expect(items).to_have_count(2)
    expect(items.nth(0)).to_contain_text("+60.0ms")
    expect(items.nth(0)).to_contain_text("charging card")
    expect(items.nth(1)).to_contain_text("payment declined by bank")
    expect(items.nth(1)).to_have_class("log-item level-error current")  # the one clicked
    expect(detail.locator("#detail-logs")).not_to_contain_text("request received")
    # its attributes unfold
    expect(items.nth(1).locator(".log-attributes")).to_be_hidden()
    items.nth(1).locator("summary").click()
    expect(items.nth(1).locator(".log-attributes")).to_contain_text("card_declined")
    # the rows of the selected span are marked in the timeline
    marked = page.locator("#trace-logs-table > tbody > tr.of-selected").evaluate_all(
        "trs => trs.map(tr => tr.dataset.spanId)"
    )
    assert marked == [PAY, PAY]
    # another span's row: its details, its two logs
    page.locator("#trace-logs-table > tbody > tr", has_text="request received").locator(".log-body").click()
    expect(detail.locator("#detail-span-id")).to_have_text(ROOT)
    expect(detail.locator("#detail-logs li")).to_have_count(2)
    expect(detail.locator("#detail-logs")).to_contain_text("response sent")
    expect(detail.locator("#detail-logs")).not_to_contain_text("charging card")
    # a span picked in the waterfall shows its own logs too
    page.click(f".span-row[data-span-id='{CART}']")
    expect(detail.locator("#detail-logs-title")).to_have_text("Logs (2)")
    expect(detail.locator("#detail-logs li").nth(0)).to_contain_text(XSS)


def test_html_in_bodies_and_attributes_stays_text(page: Page, logs_server: ServerProcess) -> None:
    open_page(page, logs_server, f"/trace/{T}")
    row = page.locator("#trace-logs-table > tbody > tr", has_text="reserve items").first
    expect(row.locator(".log-body")).to_have_text(XSS)
    row.locator("summary").click()
    expect(row.locator(".log-attributes")).to_contain_text(SCRIPT)
    page.click(f".span-row[data-span-id='{CART}']")
    page.locator("#detail-logs summary").first.click()
    expect(page.locator("#detail-logs")).to_contain_text(SCRIPT)
    assert page.locator("img").count() == 0
    assert page.locator("main script").count() == 0
    assert page.evaluate("window.clewPwned") is None
    open_page(page, logs_server, "/logs?q=onerror")
    expect(page.locator("#logs-table .log-body")).to_have_text([XSS])
    page.locator("#logs-table summary").click()
    expect(page.locator("#logs-table .log-attributes")).to_contain_text(SCRIPT)
    assert page.locator("img").count() == 0 and page.locator("main script").count() == 0


def test_the_logs_page_searches_by_word_and_severity_and_links_to_the_span(
    page: Page, logs_server: ServerProcess
) -> None:
    open_page(page, logs_server, "/logs")
    expect(page.locator("#logs-hint")).to_contain_text("severity>=warn")
    expect(page.locator("nav.topnav a[href='/logs']")).to_have_text("Logs")
    # with no query: the newest records of the last hour, newest first
    expect(page.locator("#logs-table > tbody > tr").first).to_contain_text("disk almost full on db-2")
    page.fill("#q", "declined")
    page.click("#find-logs")
    expect(page.locator("#logs-status")).to_have_text("1 log record")
    assert "q=declined" in page.url
    rows = page.locator("#logs-table > tbody > tr")
    expect(rows).to_have_count(1)
    expect(rows.locator(".log-body")).to_have_text("payment declined by bank")
    expect(rows.locator("td").nth(2)).to_have_text("payments")
    # by level: both errors, newest first (the one outside any trace has no link)
    page.fill("#q", "severity:error")
    page.keyboard.press("Enter")
    expect(page.locator("#logs-status")).to_have_text("2 log records")
    assert "q=severity%3Aerror" in page.url
    assert rows.locator(".log-body").all_inner_texts() == [
        "disk almost full on db-2",
        "payment declined by bank",
    ]
    assert rows.evaluate_all("trs => trs.map(tr => tr.dataset.service)") == ["ops", "payments"]
    expect(rows.nth(0).locator("a[href^='/trace/']")).to_have_count(0)
    # the address alone brings the search back
    page.reload()
    page.wait_for_selector("body[data-ready]")
    expect(page.locator("#q")).to_have_value("severity:error")
    expect(rows).to_have_count(2)
    # severity>=warn and an attribute
    open_page(page, logs_server, "/logs?q=" + httpx.QueryParams({"q": "severity>=warn service:cart"})["q"])
    expect(rows).to_have_count(1)
    open_page(page, logs_server, "/logs?" + str(httpx.QueryParams({"q": "amount>40"})))
    expect(rows.locator(".log-body")).to_have_text(["charging card"])
    # a query the server cannot read says why
    open_page(page, logs_server, "/logs?q=severity:loud")
    expect(page.locator("#logs-error")).to_contain_text("severity must be one of")
    # the trace link opens the trace with the record's span selected
    open_page(page, logs_server, "/logs?q=severity:error")
    link = rows.nth(1).locator("a[href^='/trace/']")
    expect(link).to_have_attribute("href", f"/trace/{T}?span={PAY}")
    link.click()
    page.wait_for_selector("#trace-header")
    assert f"/trace/{T}?span={PAY}" in page.url
    expect(page.locator("#detail-span-id")).to_have_text(PAY)
    expect(page.locator("#detail-logs li")).to_have_count(2)
    expect(page.locator("#trace-logs-table > tbody > tr")).to_have_count(6)


def test_a_trace_opened_from_its_skeleton_fetches_its_logs_once_by_trace_id(
    page: Page, logs_server: ServerProcess
) -> None:
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    open_page(page, logs_server, f"/trace/{S}")
    expect(page.locator("#skeleton-banner")).to_contain_text("4 spans")
    assert cells(page, 5) == ["step one began", "step one read 10 rows", "step three retried"]
    assert timeline(page, "dataset.spanId") == [STEP1, STEP1, STEP3]
    page.locator("#trace-logs-table > tbody > tr", has_text="step three retried").locator(".log-body").click()
    detail = page.locator("#span-detail")
    expect(detail.locator("#detail-span-id")).to_have_text(STEP3)
    expect(detail.locator("#detail-attributes")).to_contain_text("step")  # its details, loaded now
    expect(detail.locator("#detail-loading")).to_have_count(0)
    expect(detail.locator("#detail-logs li")).to_have_count(1)
    expect(detail.locator("#detail-logs li.current")).to_contain_text("step three retried")
    log_calls = [u for u in requested if "/api/" in u and "/logs" in u]
    assert log_calls == [f"{logs_server.http_url}/api/v1/traces/{S}/logs"]  # not one a span
    assert not any(u.endswith(f"/api/v1/traces/{S}") for u in requested)  # nor the whole trace


def volume_totals(page: Page) -> dict[str, int]:
    """The records per level that the volume chart's bars stand for."""
    return page.locator("#logs-volume-chart rect.stack-bar").evaluate_all(
        "rs => rs.reduce((t, r) => ({ ...t, [r.dataset.stack]: (t[r.dataset.stack] || 0) + Number(r.dataset.count) }), {})"
    )


def address(page: Page) -> httpx.QueryParams:
    return httpx.URL(page.url).params


def test_the_logs_page_draws_the_volume_of_its_search_by_level(
    page: Page, logs_server: ServerProcess
) -> None:
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    open_page(page, logs_server, "/logs")
    chart = page.locator("#logs-volume-chart")
    expect(chart).to_be_visible()
    # asked for beside the search, over the same range and query, in 60 to 120 steps
    [volume_url] = [u for u in requested if "/api/v1/logs/volume?" in u]
    [search_url] = [u for u in requested if "/api/v1/logs?" in u]
    asked, searched = httpx.URL(volume_url).params, httpx.URL(search_url).params
    assert [asked.get(k) for k in ("q", "start", "end")] == [searched.get(k) for k in ("q", "start", "end")]
    answer = httpx.get(volume_url, timeout=30).json()
    assert answer["step"] == str(int(asked["step"]) * 10**9)
    assert 60 <= answer["buckets"] <= 121, answer["buckets"]
    totals = {level["level"]: sum(level["counts"]) for level in answer["levels"]}
    assert totals == {"error": 2, "warn": 3, "info": 1208, "debug": 2}  # most severe first
    assert list(totals) == ["error", "warn", "info", "debug"]
    # the bars hold what the API counted, level by level, a bar a step that has any
    assert volume_totals(page) == totals
    buckets = chart.locator("g.stack-bucket")
    expect(buckets).to_have_count(
        sum(1 for i in range(answer["buckets"]) if any(level["counts"][i] for level in answer["levels"]))
    )
    legend = page.locator("#logs-volume-legend .sev")
    expect(legend).to_have_text(["2 error", "3 warn", "1,208 info", "2 debug"])
    # in the severity badges' colours
    fills = chart.locator("rect.stack-bar").evaluate_all(
        "rs => Object.fromEntries(rs.map((r) => [r.dataset.stack, getComputedStyle(r).fill]))"
    )
    colours = legend.evaluate_all(
        "els => Object.fromEntries(els.map((e) => [e.dataset.level, getComputedStyle(e).color]))"
    )
    assert fills == colours and len(set(fills.values())) == 4, (fills, colours)
    # a bar's title gives its time and counts: the bulk import's 1.2 s (one step, or two when a
    # step's edge falls inside it), 15 minutes ago
    bulk_ms = (WIDE_START - 5 * 60 * 10**9) / 1e6
    titles = buckets.evaluate_all(
        "(gs, [t0, t1]) => gs.filter((g) => +g.dataset.start < t1 && t0 < +g.dataset.end)"
        ".map((g) => g.querySelector('title').textContent)",
        [bulk_ms, bulk_ms + 1200],
    )
    assert 1 <= len(titles) <= 2 and all(":" in title.splitlines()[0] for title in titles), titles
    infos = [re.search(r"([\d,]+) info", title) for title in titles]
    assert sum(int(m.group(1).replace(",", "")) for m in infos if m) == 1200, titles
    # with a query, the volume of what it matches
    open_page(page, logs_server, "/logs?" + str(httpx.QueryParams({"q": "severity>=warn"})))
    expect(page.locator("#logs-volume-legend .sev")).to_have_text(["2 error", "3 warn"])
    assert volume_totals(page) == {"error": 2, "warn": 3}
    # a query the server cannot read: the search says why, the chart says nothing
    open_page(page, logs_server, "/logs?q=severity:loud")
    expect(page.locator("#logs-error")).to_contain_text("severity must be one of")
    expect(page.locator("#logs-volume *")).to_have_count(0)


def test_a_bar_or_a_range_dragged_on_the_volume_narrows_the_search(
    page: Page, logs_server: ServerProcess
) -> None:
    status = page.locator("#logs-status")
    open_page(page, logs_server, "/logs")
    chart = page.locator("#logs-volume-chart")
    expect(chart).to_be_visible()
    # a click on the bar of the error outside any trace, a minute ago: that step's records
    disk_ms = (NOW - 60 * 10**9) / 1e6
    at = chart.locator("g.stack-bucket").evaluate_all(
        "(gs, t) => gs.findIndex((g) => +g.dataset.start <= t && t < +g.dataset.end)", disk_ms
    )
    chart.locator("g.stack-bucket").nth(at).click()
    expect(status).to_have_text("1 log record")
    expect(page.locator("#logs-table .log-body")).to_have_text(["disk almost full on db-2"])
    params = address(page)
    assert params["lookback"] == "custom" and params.get("q") is None
    start, end = int(params["start"]), int(params["end"])  # µs
    assert start <= disk_ms * 1000 <= end and end - start <= 30 * 10**6 + 1, (start, end)  # a step, to the µs
    expect(page.locator("#lookback")).to_have_value("custom")
    # the chart of the narrower range (its own request: wait for its legend before the bars)
    expect(page.locator("#logs-volume-legend .sev")).to_have_text(["1 error"])
    assert volume_totals(page) == {"error": 1}
    # a drag from twelve minutes ago to three: W's, S's and T's logs, not the bulk import's
    page.go_back()
    page.wait_for_selector("#logs-volume-chart")
    expect(status).to_have_text(
        "100 log records (the newest 100: narrow the query or the time range, or raise the limit, to see more)"
    )
    t0, t1 = (float(v) for v in chart.evaluate("c => [c.dataset.from, c.dataset.to]"))
    box = chart.locator(".plot-area").bounding_box()
    assert box

    def x(ns: int) -> float:
        return box["x"] + (ns / 1e6 - t0) / (t1 - t0) * box["width"]

    y = box["y"] + box["height"] / 2
    page.mouse.move(x(NOW - 12 * 60 * 10**9), y)
    page.mouse.down()
    page.mouse.move(x(NOW - 3 * 60 * 10**9), y, steps=5)
    page.mouse.up()
    expect(status).to_have_text("14 log records")
    params = address(page)
    start, end = int(params["start"]), int(params["end"])
    assert params["lookback"] == "custom"
    assert (
        abs(start - (NOW - 12 * 60 * 10**9) / 1000) < 30 * 10**6
        and abs(end - (NOW - 3 * 60 * 10**9) / 1000) < 30 * 10**6
    )
    expect(page.locator("#logs-volume-legend .sev")).to_have_text(["1 error", "3 warn", "8 info", "2 debug"])
    assert volume_totals(page) == {"error": 1, "warn": 3, "info": 8, "debug": 2}
    # the address keeps the range, to the microsecond, through a reload and a new query
    page.reload()
    page.wait_for_selector("body[data-ready]")
    expect(status).to_have_text("14 log records")
    page.fill("#q", "severity>=warn")
    page.click("#find-logs")
    expect(status).to_have_text("4 log records")
    assert (address(page)["start"], address(page)["end"]) == (str(start), str(end))


def test_logs_page_is_a_ui_address(logs_server: ServerProcess) -> None:
    response = httpx.get(f"{logs_server.http_url}/logs?q=x", timeout=30)
    assert response.status_code == 200 and '<main id="main">' in response.text
    assert "script-src 'self'" in response.headers["content-security-policy"]


def test_a_narrow_waterfall_keeps_each_log_count_and_error_mark_whole(
    page: Page, logs_server: ServerProcess
) -> None:
    page.set_viewport_size({"width": 900, "height": 800})
    open_page(page, logs_server, f"/trace/{W}")
    expect(page.locator("#detail-span-id")).to_have_text(W_MID)  # the error: the details take a third
    labels = page.locator("#waterfall .span-row").evaluate_all(
        """rows => rows.map((row) => {
          const label = row.querySelector('.span-label').getBoundingClientRect();
          const badge = row.querySelector('.log-badge').getBoundingClientRect();
          const mark = row.querySelector('.error-mark');
          return [row.dataset.spanId, badge.right <= label.right + 0.5 && badge.left >= label.left,
                  mark ? Math.round(mark.getBoundingClientRect().width) : null];
        })"""
    )
    # the service name gives way (to an ellipsis) rather than the count after it, or the error mark
    assert labels == [[W_ROOT, True, None], [W_MID, True, 14], [W_LEAF, True, None]]
    clipped = page.locator(f".span-row[data-span-id='{W_LEAF}'] .svc").evaluate(
        "e => e.scrollWidth > e.clientWidth"
    )
    assert clipped  # WIDE does not fit beside its name at this width
    expect(page.locator(f".span-row[data-span-id='{W_MID}'] .log-badge")).to_have_text("2 logs")


def test_long_keys_and_bodies_keep_the_timeline_readable_beside_the_details(
    page: Page, logs_server: ServerProcess
) -> None:
    page.set_viewport_size({"width": 900, "height": 800})
    open_page(page, logs_server, f"/trace/{W}")
    detail = page.locator("#span-detail")
    expect(detail).to_be_visible()
    row = page.locator("#trace-logs-table > tbody > tr", has_text="stock low")
    row.locator("summary").click()
    expect(row.locator(".log-attributes")).to_contain_text("orders.reserve")
    # the attribute keys wrap at their dots, so the table stays in its column, not under the details
    table = page.locator("#trace-logs-table").bounding_box()
    panel = detail.bounding_box()
    assert table and panel and table["x"] + table["width"] <= panel["x"], (table, panel)
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    # the span's name is not cut into a letter or two a line by the 2,000-character body beside it
    widths = page.locator("#trace-logs-table td.log-span").evaluate_all(
        "tds => tds.map((td) => td.clientWidth)"
    )
    assert min(widths) >= 100, widths
    expect(page.locator("#trace-logs-table td.log-span").first).to_have_text("POST /orders")
    # that body scrolls in its own box in the timeline and in its span's details alike
    page.locator("#trace-logs-table > tbody > tr", has_text="reservation table scan").locator(
        ".log-body"
    ).click()
    expect(detail.locator("#detail-span-id")).to_have_text(W_MID)
    body = detail.locator("#detail-logs li.current .log-body")
    expect(body).to_have_text(LONG_BODY)
    height, scrolls = body.evaluate(
        "e => [e.getBoundingClientRect().height, e.scrollHeight > e.clientHeight]"
    )
    assert height < 250 and scrolls, height
    # the other log of the span, below it, is in the panel's first screen
    warn = detail.locator("#detail-logs li", has_text="stock low")
    box, panel = warn.bounding_box(), detail.bounding_box()
    assert box and box["y"] < panel["y"] + panel["height"], (box, panel)


def test_dark_mode_keeps_names_and_keys_readable(page: Page, logs_server: ServerProcess) -> None:
    page.emulate_media(color_scheme="dark")
    open_page(page, logs_server, f"/trace/{W}")
    row = page.locator("#trace-logs-table > tbody > tr", has_text="stock low")
    row.locator("summary").click()
    # the attributes are drawn on the details' toggle event, a task after the click: wait for them
    expect(row.locator(".log-attributes")).to_contain_text("orders.reserve")
    contrast = """els => {
      const luminance = (colour) => {
        const [r, g, b] = colour.match(/[\\d.]+/g).slice(0, 3).map((v) => {
          const c = Number(v) / 255;
          return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
        });
        return 0.2126 * r + 0.7152 * g + 0.0722 * b;
      };
      const ground = luminance(getComputedStyle(document.body).backgroundColor);
      return els.map((e) => {
        const l = luminance(getComputedStyle(e).color);
        return [e.textContent, (Math.max(l, ground) + 0.05) / (Math.min(l, ground) + 0.05)];
      });
    }"""
    for selector in (
        ".span-label .svc",
        "#detail-resource th",
        "#trace-logs-table .log-attributes th",
        ".toolbar .tab",
    ):
        ratios = page.locator(selector).evaluate_all(contrast)
        assert ratios and all(ratio >= 4.5 for _, ratio in ratios), (selector, ratios)  # WCAG AA


def test_typing_a_filter_over_many_logs_draws_the_timeline_once(
    page: Page, logs_server: ServerProcess
) -> None:
    open_page(page, logs_server, f"/trace/{L}")
    rows = page.locator("#trace-logs-table > tbody > tr")
    expect(rows).to_have_count(1000)
    page.click("#trace-logs-more")
    expect(rows).to_have_count(1200)
    page.evaluate(
        """() => {
          window.paints = 0;
          new MutationObserver((records) => { window.paints += records.filter((r) => r.addedNodes.length).length; })
            .observe(document.querySelector('#trace-logs-table > tbody'), { childList: true });
        }"""
    )
    # each key used to draw every matching row again: over a second a key after "Show all" of 5,000
    page.locator("#trace-logs-filter").press_sequentially("row 11")
    expect(page.locator("#trace-logs-count")).to_have_text("111 of 1200")  # 11, 110-119, 1100-1199
    expect(rows).to_have_count(111)
    assert page.evaluate("window.paints") <= 2, "the timeline was drawn again at each key"
    # the level filter still answers at once
    page.select_option("#trace-logs-level", "warn")
    expect(page.locator("#trace-logs-count")).to_have_text("0 of 1200")


def test_the_waterfall_is_drawn_while_the_logs_are_on_their_way(
    page: Page, logs_server: ServerProcess
) -> None:
    held: list[Route] = []
    page.route("**/api/v1/traces/*/logs", lambda route: held.append(route))  # answered when the test says
    page.goto(f"{logs_server.http_url}/trace/{T}?span={PAY}")
    rows = page.locator("#waterfall .span-row")
    expect(rows).to_have_count(3)
    assert len(held) == 1  # asked for, not answered
    expect(page.locator("#trace-logs-loading")).to_have_text("Loading logs…")
    expect(page.locator("#fact-logs")).to_have_text("…")
    expect(page.locator(".log-badge")).to_have_count(0)
    expect(page.locator("#detail-span-id")).to_have_text(PAY)
    expect(page.locator("#detail-logs-loading")).to_be_visible()
    # the logs come: the timeline, each span's count, the selected span's own
    held.pop().continue_()
    expect(page.locator("#trace-logs-table > tbody > tr")).to_have_count(6)
    expect(page.locator("#trace-logs-loading")).to_have_count(0)
    expect(page.locator("#fact-logs")).to_have_text("6")
    expect(page.locator(f".span-row[data-span-id='{PAY}'] .log-badge")).to_have_text("2 logs")
    expect(page.locator(f".span-row[data-span-id='{PAY}'] .log-badge-error")).to_have_count(1)
    expect(page.locator("#detail-logs-title")).to_have_text("Logs (2)")
    expect(page.locator("#detail-logs li")).to_have_count(2)
    marked = page.locator("#trace-logs-table > tbody > tr.of-selected")
    expect(marked).to_have_count(2)
    page.wait_for_selector("body[data-ready]")
    # logs that cannot be had: their one line, under the waterfall drawn already
    page.goto(f"{logs_server.http_url}/trace/{W}")
    expect(rows).to_have_count(3)
    expect(page.locator("#trace-logs-loading")).to_be_visible()
    held.pop().fulfill(status=503, json={"error": "the log store is busy"})
    expect(page.locator("#trace-logs-error")).to_have_text("Logs could not be loaded: the log store is busy")
    expect(page.locator("#fact-logs")).to_have_count(0)
    expect(page.locator("#detail-logs-loading")).to_have_count(0)
    expect(rows).to_have_count(3)
