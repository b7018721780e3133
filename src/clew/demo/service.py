"""One demo service in its own process: `python -m clew.demo.service NAME` with CLEW_DEMO_CONFIG set."""

from __future__ import annotations

import logging
import os
import signal
import sys
from types import FrameType

import uvicorn

from clew.demo.shop import VERSIONS, ShopConfig


def _exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main() -> None:
    name = sys.argv[1]
    # uvicorn shuts down on SIGTERM or SIGINT, puts back the handler it found and raises the signal
    # again: with the default one there, the process died before `provider.shutdown()` below, and the
    # last spans and logs of every service were lost. This one exits 0 through the `finally`.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit)
    config = ShopConfig.from_json(os.environ["CLEW_DEMO_CONFIG"])
    from clew import instrument

    # before the app exists: the Starlette and sqlite3 instrumentations patch constructors
    provider = instrument(
        service_name="checkout" if name == "checkout-canary" else name,
        service_version=VERSIONS.get(name, "1.4.2"),
        environment="demo",
        endpoint=config.endpoint,
        resource_attributes={"clew.demo.run": config.run_id},
        export_delay_ms=200,
    )
    # the shop's own lines at INFO, shipped to clew with the spans; the root stays at WARNING, so
    # libraries' INFO chatter (httpx logs every request) is not
    logging.getLogger("clew.demo").setLevel(logging.INFO)
    from clew.demo.shop import build_app

    app = build_app(name, config)
    try:
        uvicorn.run(app, host="127.0.0.1", port=config.ports[name], log_level="warning", access_log=False)
    finally:
        provider.shutdown()  # flush the spans and logs still queued


if __name__ == "__main__":
    main()
