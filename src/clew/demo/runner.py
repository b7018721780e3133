"""`clew demo`: start the shop's services as processes, drive the flows, stop everything.

Every service process gets PR_SET_PDEATHSIG, so it goes when this process goes, even on SIGKILL;
on a normal stop the runner terminates them and waits.
"""

from __future__ import annotations

import ctypes
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

from clew.demo.shop import SERVICES, Faults, ShopConfig, wait_ready

USERS = [f"shopper{i}@example.com" for i in range(50)]
FLOWS = [("sign-in", 0.2), ("browse", 0.3), ("add-to-cart", 0.25), ("checkout", 0.25)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """Linux: SIGTERM this child when the process that started it dies."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def die_with(parent: int) -> None:
    """The same, set by the child itself: for a parent that must not fork (a gRPC server). A watchdog
    thread backs it up: when the parent is gone, this process gets SIGTERM and stops its services."""
    _die_with_parent()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="clew-demo-watchdog", daemon=True).start()


@dataclass
class Shop:
    endpoint: str
    faults: Faults = field(default_factory=Faults)
    seed: int = 0
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self) -> ShopConfig:
        names = list(SERVICES) + (["checkout-canary"] if self.faults.canary_share > 0 else [])
        self._tmp = tempfile.TemporaryDirectory(prefix="clew-demo-")
        config = ShopConfig(
            ports={n: _free_port() for n in names},
            endpoint=self.endpoint,
            faults=self.faults,
            run_id=self.run_id,
            data_dir=self._tmp.name,
            seed=self.seed,
        )
        env = {**os.environ, "CLEW_DEMO_CONFIG": config.to_json(), "PYTHONUNBUFFERED": "1"}
        for name in names:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "clew.demo.service", name, f"--clew-demo-run={self.run_id}"],
                env=env,
                preexec_fn=_die_with_parent,
                stdout=subprocess.DEVNULL,
            )
        try:
            wait_ready([config.url(n) for n in names])
        except RuntimeError:
            self.stop()
            raise
        self.config = config
        return config

    def stop(self, timeout: float = 30) -> dict[str, int]:
        """SIGTERM every service, then kill what is left after `timeout` seconds: long enough for a
        service's last export to a busy clew (the exporter's own deadline is 10 s, with retries).
        Answers the services that did not exit cleanly, with their exit status: their last spans
        and logs may be lost (a service exits 0 only after flushing them)."""
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.processes.values():
            try:
                proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if hasattr(self, "_tmp"):
            self._tmp.cleanup()
        return {name: proc.returncode for name, proc in self.processes.items() if proc.returncode != 0}


class LoadGenerator:
    """Sign-in, browse, add to cart and checkout against the frontend at `rps` flows a second."""

    def __init__(self, frontend: str, rps: float, seed: int = 0) -> None:
        self.frontend, self.rps = frontend, rps
        self.rng = random.Random(seed)
        # a plain flag, not an Event: it is set from a signal handler, where taking a lock can
        # deadlock against the interrupted thread (seen: SIGTERM twice inside Event.set)
        self.stopped = False
        self.counts: dict[str, int] = {name: 0 for name, _ in FLOWS}
        self.failures = 0

    def flow(self, client: httpx.Client, name: str, user: str) -> None:
        try:
            if name == "sign-in":
                client.post(f"{self.frontend}/login", json={"user": user})
            elif name == "browse":
                client.get(f"{self.frontend}/products")
            elif name == "add-to-cart":
                client.post(f"{self.frontend}/cart", json={"user": user, "product": self.rng.randint(1, 40)})
            else:
                client.post(f"{self.frontend}/checkout", json={"user": user})
            self.counts[name] += 1
        except httpx.HTTPError:
            self.failures += 1

    def run(self, duration: float) -> None:
        deadline = time.monotonic() + duration if duration > 0 else float("inf")
        names, weights = zip(*FLOWS, strict=True)
        with httpx.Client(timeout=15) as client, ThreadPoolExecutor(max_workers=16) as pool:
            next_at = time.monotonic()
            while not self.stopped and time.monotonic() < deadline:
                pool.submit(self.flow, client, self.rng.choices(names, weights)[0], self.rng.choice(USERS))
                next_at += 1 / self.rps
                while not self.stopped and time.monotonic() < next_at:
                    time.sleep(min(0.05, max(0.0, next_at - time.monotonic())))


def run_demo(
    endpoint: str, rps: float, duration: float, faults: Faults, seed: int, echo: bool = True
) -> dict[str, int]:
    shop = Shop(endpoint=endpoint, faults=faults, seed=seed)
    load: LoadGenerator | None = None
    stopping = False

    def stop(signum: int, frame: object) -> None:
        if load is not None:
            load.stopped = True
        elif not stopping:
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        config = shop.start()
        if echo:
            ports = " ".join(f"{n}={p}" for n, p in config.ports.items())
            print(
                f"clew demo running ({len(config.ports)} services: {ports}); spans to {endpoint}", flush=True
            )
        load = LoadGenerator(config.url("frontend"), rps, seed)
        load.run(duration)
        time.sleep(0.5)  # let the last flows' async steps finish
        return load.counts
    except KeyboardInterrupt:
        return load.counts if load else {}
    finally:
        stopping = True
        unclean = shop.stop()
        if unclean:
            ended = ", ".join(f"{name} ({code})" for name, code in sorted(unclean.items()))
            print(
                f"clew demo: services ended before flushing their spans: {ended}", file=sys.stderr, flush=True
            )
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if echo:
            print("clew demo stopped: all services ended", flush=True)
