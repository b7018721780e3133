"""Time to the first screen of a big trace in headless Chromium, through a real server.

    python bench/ui.py [--spans 10000] [--runs 5]

Prints the API fetches alone (`/api/v1/traces/{id}` as OTLP/JSON, and the columnar
`/api/v1/traces/{id}/skeleton` a trace over `full_trace_spans` opens from) and the page: from
navigation to the waterfall's first rows on screen, as a user opening a shared link would wait; then
the frame times while the waterfall scrolls through the trace, and the page's JavaScript heap.
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

# Scroll the waterfall by 10 rows a frame for 240 frames (a fling through ~2,400 rows), returning
# each frame's duration in ms (requestAnimationFrame to requestAnimationFrame).
SCROLL = """async () => {
  const w = document.querySelector('#waterfall');
  const out = [];
  let last = await new Promise(requestAnimationFrame);
  for (let i = 0; i < 240; i++) {
    w.scrollTop += 260;
    const now = await new Promise(requestAnimationFrame);
    out.push(now - last);
    last = now;
  }
  return out;
}"""


def chunks(doc: dict, size: int = 5000) -> list[dict]:
    """The document's spans in requests of at most `size` spans, each with its resource."""
    out = []
    for rs in doc["resourceSpans"]:
        spans = rs["scopeSpans"][0]["spans"]
        for i in range(0, len(spans), size):
            part = {**rs, "scopeSpans": [{**rs["scopeSpans"][0], "spans": spans[i : i + size]}]}
            out.append({"resourceSpans": [part]})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spans", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        server = ServerProcess(Path(directory) / "data").start()
        try:
            for chunk in chunks(big(args.spans)):  # within the request size limit
                response = httpx.post(f"{server.otlp_http_url}/v1/traces", json=chunk, timeout=120)
                response.raise_for_status()
            api, skeleton = [], []
            for _ in range(args.runs):
                began = time.perf_counter()
                body = httpx.get(f"{server.http_url}/api/v1/traces/{G}", timeout=60)
                api.append(time.perf_counter() - began)
                began = time.perf_counter()
                columns = httpx.get(f"{server.http_url}/api/v1/traces/{G}/skeleton", timeout=60)
                skeleton.append(time.perf_counter() - began)
            size, skeleton_size = len(body.content), len(columns.content)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                page_times, frames, heaps = [], [], []
                for _ in range(args.runs):
                    page = browser.new_page(viewport={"width": 1280, "height": 800})
                    began = time.perf_counter()
                    page.goto(f"{server.http_url}/trace/{G}")
                    page.wait_for_selector("#waterfall .span-row", timeout=60_000)
                    page_times.append(time.perf_counter() - began)
                    rows = page.locator("#waterfall .span-row").count()
                    frames += page.evaluate(SCROLL)
                    cdp = page.context.new_cdp_session(page)
                    cdp.send("Performance.enable")
                    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
                    heaps.append(metrics["JSHeapUsedSize"])
                    page.close()
                browser.close()
        finally:
            server.stop()
    frames.sort()
    print(
        f"trace of {args.spans:,} spans, OTLP/JSON {size / 1e6:.1f} MB, skeleton {skeleton_size / 1e6:.1f} MB"
    )
    for label, times in (("/api/v1/traces/{id}", api), ("/api/v1/traces/{id}/skeleton", skeleton)):
        print(f"API {label}: median {statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms")
    print(
        f"first screen in Chromium: median {statistics.median(page_times) * 1000:.0f} ms, "
        f"max {max(page_times) * 1000:.0f} ms ({rows} rows in the DOM)"
    )
    print(
        f"scrolling ({len(frames)} frames): p50 {frames[len(frames) // 2]:.1f} ms, "
        f"p95 {frames[int(len(frames) * 0.95)]:.1f} ms, max {frames[-1]:.1f} ms a frame"
    )
    print(f"JavaScript heap after opening: median {statistics.median(heaps) / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
