"""Time to the first screen of a 10,000-span trace in headless Chromium, through a real server.

    python bench/ui.py [--spans 10000] [--runs 5]

Prints the API fetch alone (`/api/v1/traces/{id}` as OTLP/JSON) and the page: from navigation to
the waterfall's first rows on screen, as a user opening a shared link would wait.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import ServerProcess  # noqa: E402
from tests.test_ui import ARGS, CHROMIUM  # noqa: E402
from tests.ui_data import G, big  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spans", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        server = ServerProcess(Path(directory) / "data").start()
        try:
            response = httpx.post(f"{server.otlp_http_url}/v1/traces", json=big(args.spans), timeout=120)
            response.raise_for_status()
            api = []
            for _ in range(args.runs):
                began = time.perf_counter()
                body = httpx.get(f"{server.http_url}/api/v1/traces/{G}", timeout=60)
                api.append(time.perf_counter() - began)
            size = len(body.content)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                page_times = []
                for _ in range(args.runs):
                    page = browser.new_page(viewport={"width": 1280, "height": 800})
                    began = time.perf_counter()
                    page.goto(f"{server.http_url}/trace/{G}")
                    page.wait_for_selector("#waterfall .span-row", timeout=60_000)
                    page_times.append(time.perf_counter() - began)
                    rows = page.locator("#waterfall .span-row").count()
                    page.close()
                browser.close()
        finally:
            server.stop()
    print(f"trace of {args.spans:,} spans, OTLP/JSON {size / 1e6:.1f} MB")
    print(
        f"API /api/v1/traces/{{id}}: median {statistics.median(api) * 1000:.0f} ms, max {max(api) * 1000:.0f} ms"
    )
    print(
        f"first screen in Chromium: median {statistics.median(page_times) * 1000:.0f} ms, "
        f"max {max(page_times) * 1000:.0f} ms ({rows} rows in the DOM; target < 2000 ms)"
    )


if __name__ == "__main__":
    main()
