"""The README's screenshots, taken from the demo shop as a new user would see it.

    python docs/screenshots.py [--wait 90]

Starts `clew serve --demo` on free ports in a temporary directory, puts an SLO on the demo's failing
payments (as the README's curl does), lets the shop's load run until traces with errors are stored
and the SLO's alert fires, then opens the search page, a failed checkout's trace, the service map,
the monitor page, the alerts page and a trace with the payment provider's error in its logs in
headless Chromium and saves each under docs/screenshots/.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Page, sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import ServerProcess  # noqa: E402
from tests.test_ui import ARGS, CHROMIUM  # noqa: E402

OUT = Path(__file__).parent / "screenshots"
WIDTH = 1280
SLO = {"name": "payment-up", "service": "payment", "objective": 99.5, "window": "1h"}


def wait_for_errors(server: ServerProcess, seconds: float) -> str:
    """After `seconds` of load, the id of a stored trace with an error and at least 8 spans (waiting
    up to a minute more for one)."""
    time.sleep(seconds)
    for _ in range(12):
        found = httpx.get(
            f"{server.http_url}/api/v1/search", params={"q": "{ status = error }", "limit": 50}, timeout=30
        ).json()["traces"]
        big = [t for t in found if t["spanCount"] >= 8]
        if big:
            return str(big[0]["traceID"])
        time.sleep(5)
    raise SystemExit("the demo made no failed trace of 8 spans or more")


def put_slo(server: ServerProcess) -> None:
    """The README's `curl -X PUT .../api/v1/slos`: an SLO on the demo's failing payments."""
    response = httpx.put(f"{server.http_url}/api/v1/slos", json={"slos": [SLO]}, timeout=30)
    response.raise_for_status()


def wait_for_alert(server: ServerProcess, seconds: float = 180) -> str:
    """The name of a firing alert of the SLO with example traces (waiting up to `seconds` for one;
    the alerts are evaluated every 30 s)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        alerts = httpx.get(f"{server.http_url}/api/v1/alerts", timeout=30).json()["alerts"]
        for alert in alerts:
            if alert["labels"].get("slo") == SLO["name"] and alert["state"] == "firing" and alert["examples"]:
                return str(alert["name"])
        time.sleep(5)
    raise SystemExit(f"the SLO {SLO['name']} fired no alert with example traces in {seconds:g} s")


def error_log_trace(server: ServerProcess) -> tuple[str, str]:
    """A trace whose logs include the payment provider's error, and the span that logged it: of the
    latest such traces (logged at least 10 s ago, so that the trace is whole), the one with nearest
    to 8 log lines, which fit under its waterfall."""
    records: list[dict[str, Any]] = httpx.get(
        f"{server.http_url}/api/v1/logs",
        params={"q": "severity:error service:payment", "limit": 200},
        timeout=30,
    ).json()["logs"]
    settled = time.time_ns() - 10 * 10**9
    spans: dict[str, str] = {}
    for r in records:
        if r["traceId"] and r["spanId"] and int(r["timeUnixNano"]) < settled:
            spans.setdefault(r["traceId"], r["spanId"])
    if not spans:
        raise SystemExit("the demo logged no payment error in a trace")
    lines = {
        trace: len(httpx.get(f"{server.http_url}/api/v1/traces/{trace}/logs", timeout=30).json()["logs"])
        for trace in list(spans)[:20]
    }
    trace = min(lines, key=lambda t: abs(lines[t] - 8))
    return trace, spans[trace]


def open_page(page: Page, server: ServerProcess, path: str, ready: str) -> None:
    page.goto(server.http_url + path)
    page.wait_for_selector("body[data-ready]", timeout=30_000)
    page.wait_for_selector(ready, timeout=30_000)


def save(page: Page, path: str, name: str, down_to: str | None = None) -> None:
    """The viewport as docs/screenshots/`name`; with `down_to`, cut 20 px under that element."""
    page.wait_for_timeout(1000)  # layouts and charts settle
    box = page.locator(down_to).bounding_box() if down_to else None
    if box is None:
        page.screenshot(path=str(OUT / name))
    else:
        viewport = page.viewport_size or {"width": WIDTH, "height": 800}
        height = min(viewport["height"], box["y"] + box["height"] + 20)
        page.screenshot(
            path=str(OUT / name), clip={"x": 0, "y": 0, "width": viewport["width"], "height": height}
        )
    print(f"docs/screenshots/{name}: {path}")


def shoot(
    page: Page, server: ServerProcess, path: str, name: str, ready: str, down_to: str | None = None
) -> None:
    open_page(page, server, path, ready)
    save(page, path, name, down_to)


def shoot_trace_logs(page: Page, server: ServerProcess, trace: str, span: str, name: str) -> None:
    """The trace with its logs under the waterfall, the payment error's row clicked: its span
    selected, the detail panel's Logs with that line marked."""
    path = f"/trace/{trace}"
    open_page(page, server, path, "#trace-logs-table tr.log-row")
    row = page.locator(f'#trace-logs-table tr.log-row.level-error[data-span-id="{span}"]').first
    row.locator("td").first.click()  # the offset cell: a click on the attributes only opens them
    page.wait_for_selector(
        f'#span-detail[data-span-id="{span}"] #detail-logs .log-item.current', timeout=30_000
    )
    page.wait_for_selector("#detail-loading", state="detached", timeout=30_000)
    page.evaluate("window.scrollTo(0, 0)")  # the pick scrolled to the waterfall; the header back in view
    save(page, f"{path}?span={span}", name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--wait", type=float, default=90, help="seconds of demo load before the pictures")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as directory:
        server = ServerProcess(Path(directory) / "data", extra_args=["--demo"]).start()
        try:
            put_slo(server)  # first: its alert fires on the load that follows
            trace = wait_for_errors(server, args.wait)
            alert = wait_for_alert(server)
            logged, span = error_log_trace(server)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                page = browser.new_page(viewport={"width": WIDTH, "height": 800})
                shoot(page, server, "/search?service=frontend&lookback=15m", "search.png", ".result")
                shoot(page, server, f"/trace/{trace}", "trace.png", "#waterfall .span-row")
                shoot(page, server, "/dependencies?lookback=1h", "service-map.png", "#dependency-table")
                shoot(page, server, "/monitor?range=15m", "monitor.png", "#monitor-chart")
                ready = f'#alerts-table tr[data-state="firing"][data-name="{alert}"] a'
                shoot(page, server, "/alerts", "alerts.png", ready, down_to="#slo-table")
                # taller: the waterfall with the logs under it, and the span's detail beside them
                tall = browser.new_page(viewport={"width": WIDTH, "height": 1100})
                shoot_trace_logs(tall, server, logged, span, "trace-logs.png")
                browser.close()
        finally:
            server.stop()


if __name__ == "__main__":
    main()
