"""The README's screenshots, taken from the demo shop as a new user would see it.

    python docs/screenshots.py [--wait 90]

Starts `clew serve --demo` on free ports in a temporary directory, lets the shop's load run until
traces with errors are stored, then opens the search page, a failed checkout's trace, the service
map and the monitor page in headless Chromium and saves each under docs/screenshots/.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import Page, sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import ServerProcess  # noqa: E402
from tests.test_ui import ARGS, CHROMIUM  # noqa: E402

OUT = Path(__file__).parent / "screenshots"


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


def shoot(page: Page, server: ServerProcess, path: str, name: str, ready: str) -> None:
    page.goto(server.http_url + path)
    page.wait_for_selector("body[data-ready]", timeout=30_000)
    page.wait_for_selector(ready, timeout=30_000)
    page.wait_for_timeout(1000)  # layouts and charts settle
    page.screenshot(path=str(OUT / name))
    print(f"docs/screenshots/{name}: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--wait", type=float, default=90, help="seconds of demo load before the pictures")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as directory:
        server = ServerProcess(Path(directory) / "data", extra_args=["--demo"]).start()
        try:
            trace = wait_for_errors(server, args.wait)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                shoot(page, server, "/search?service=frontend&lookback=15m", "search.png", ".result")
                shoot(page, server, f"/trace/{trace}", "trace.png", "#waterfall .span-row")
                shoot(page, server, "/dependencies?lookback=1h", "service-map.png", "#dependency-table")
                shoot(page, server, "/monitor?range=15m", "monitor.png", "#monitor-chart")
                browser.close()
        finally:
            server.stop()


if __name__ == "__main__":
    main()
