"""The demo shop's services: small Starlette apps that call each other over HTTP, traced by
`clew.instrument()`. One process runs one service (`python -m clew.demo.service NAME`).

Flows: sign-in (frontend → auth), browse (frontend → catalog, SQLite behind a cache), add to cart
(frontend → cart → catalog), checkout (frontend → checkout → cart, payment with retries, inventory,
notifications, which finishes asynchronously in a new trace linked to the request). The services log
what they do through module loggers, a few lines a request, and each injected fault logs its error in
the span that fails; `clew.instrument()` ships those records joined to the spans.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from opentelemetry import baggage, context, trace
from opentelemetry.instrumentation.utils import suppress_http_instrumentation
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from starlette import applications
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

SERVICES = ["frontend", "auth", "catalog", "cart", "checkout", "payment", "inventory", "notifications"]
VERSIONS = {"checkout": "1.4.2", "checkout-canary": "1.5.0"}
REGIONS = ["eu-west-1", "us-east-1", "ap-south-1"]
PRODUCTS = [(i, f"product-{i}", round(5 + i * 3.7, 2)) for i in range(1, 41)]

log = logging.getLogger(__name__)


@dataclass
class Faults:
    """Switchable faults; rates are probabilities per call."""

    slow_payment: float = 0.1  # latency spikes at the payment provider
    payment_failure: float = 0.15  # 503s that checkout retries with backoff
    inventory_error: float = 0.02
    cache_miss: float = 0.3
    canary_share: float = 0.2  # checkout traffic sent to 1.5.0, which is slower
    dropped_propagation: float = 0.1  # checkouts whose audit call loses the trace context

    @classmethod
    def none(cls) -> Faults:
        return cls(0, 0, 0, 0, 0, 0)


@dataclass
class ShopConfig:
    ports: dict[str, int]
    endpoint: str
    faults: Faults = field(default_factory=Faults)
    run_id: str = ""
    data_dir: str = "."
    seed: int = 0

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def to_json(self) -> str:
        return json.dumps({**self.__dict__, "faults": self.faults.__dict__})

    @classmethod
    def from_json(cls, text: str) -> ShopConfig:
        doc = json.loads(text)
        return cls(**{**doc, "faults": Faults(**doc["faults"])})


def pseudonym(user: str) -> str:
    """User ids on spans are pseudonymous: the same user maps to the same id, which is not the name."""
    return "u-" + hashlib.sha256(f"clew-demo:{user}".encode()).hexdigest()[:12]


def build_app(name: str, config: ShopConfig) -> applications.Starlette:
    rng = random.Random(f"{config.seed}:{name}")
    faults = config.faults
    tracer = trace.get_tracer("clew.demo")
    client = httpx.AsyncClient(timeout=10)

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "service": name})

    async def call(service: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return await client.request(method, config.url(service) + path, **kwargs)

    def enrich(request: Request, user: str) -> None:
        """Who and where, on the span and in baggage for the services downstream."""
        span = trace.get_current_span()
        region = REGIONS[int(hashlib.md5(user.encode()).hexdigest(), 16) % len(REGIONS)]
        span.set_attribute("enduser.pseudo.id", pseudonym(user))
        span.set_attribute("user.id", pseudonym(user))
        span.set_attribute("cloud.region", region)
        span.set_attribute("feature_flag.new_checkout", hash(user) % 2 == 0)
        ctx = baggage.set_baggage("user.id", pseudonym(user))
        ctx = baggage.set_baggage("cloud.region", region, context=ctx)
        request.state.token = context.attach(ctx)

    def from_baggage() -> None:
        span = trace.get_current_span()
        for key in ("user.id", "cloud.region"):
            value = baggage.get_baggage(key)
            if value is not None:
                span.set_attribute(key, str(value))

    routes: list[Route] = [Route("/healthz", healthz)]

    if name == "frontend":

        async def login(request: Request) -> JSONResponse:
            body = await request.json()
            enrich(request, body["user"])
            response = await call("auth", "POST", "/verify", json={"user": body["user"]})
            return JSONResponse(response.json(), response.status_code)

        async def products(request: Request) -> JSONResponse:
            response = await call("catalog", "GET", "/products")
            return JSONResponse(response.json(), response.status_code)

        async def add_to_cart(request: Request) -> JSONResponse:
            body = await request.json()
            enrich(request, body["user"])
            response = await call("cart", "POST", "/items", json=body)
            return JSONResponse(response.json(), response.status_code)

        async def checkout(request: Request) -> JSONResponse:
            body = await request.json()
            enrich(request, body["user"])
            target = (
                "checkout-canary"
                if "checkout-canary" in config.ports and rng.random() < faults.canary_share
                else "checkout"
            )
            response = await call(target, "POST", "/checkout", json=body)
            if response.status_code >= 500:
                trace.get_current_span().set_status(Status(StatusCode.ERROR, "checkout failed"))
                log.error(
                    "checkout failed for %s: %s %s",
                    pseudonym(body["user"]), response.status_code, response.json().get("error"),
                )  # fmt: skip
            return JSONResponse(response.json(), response.status_code)

        routes += [
            Route("/login", login, methods=["POST"]),
            Route("/products", products),
            Route("/cart", add_to_cart, methods=["POST"]),
            Route("/checkout", checkout, methods=["POST"]),
        ]

    elif name == "auth":

        async def verify(request: Request) -> JSONResponse:
            body = await request.json()
            from_baggage()
            await asyncio.sleep(rng.uniform(0.003, 0.012))
            log.info("signed in %s", pseudonym(body["user"]))
            return JSONResponse({"token": pseudonym(body["user"])[::-1]})

        routes.append(Route("/verify", verify, methods=["POST"]))

    elif name == "catalog":
        db_path = Path(config.data_dir) / "catalog.sqlite"
        db = sqlite3.connect(db_path, check_same_thread=False)
        db.execute("CREATE TABLE IF NOT EXISTS products (id INTEGER PRIMARY KEY, name TEXT, price REAL)")
        db.executemany("INSERT OR REPLACE INTO products VALUES (?, ?, ?)", PRODUCTS)
        db.commit()
        cache: dict[str, Any] = {}

        async def list_products(request: Request) -> JSONResponse:
            span = trace.get_current_span()
            if "all" in cache and rng.random() >= faults.cache_miss:
                span.set_attribute("cache.hit", True)
                return JSONResponse(cache["all"])
            span.set_attribute("cache.hit", False)
            span.add_event("cache miss", {"cache.key": "products:all"})
            rows = db.cursor().execute("SELECT id, name, price FROM products ORDER BY id").fetchall()
            log.info("cache miss on products:all, loaded %d products from the database", len(rows))
            cache["all"] = [{"id": i, "name": n, "price": p} for i, n, p in rows]
            return JSONResponse(cache["all"])

        async def one_product(request: Request) -> JSONResponse:
            from_baggage()
            row = (
                db.cursor()  # a cursor: what the sqlite3 instrumentation traces
                .execute(
                    "SELECT id, name, price FROM products WHERE id = ?", (int(request.path_params["id"]),)
                )
                .fetchone()
            )
            if row is None:
                log.warning("no product %s", request.path_params["id"])
                return JSONResponse({"error": "no such product"}, 404)
            return JSONResponse({"id": row[0], "name": row[1], "price": row[2]})

        routes += [Route("/products", list_products), Route("/products/{id:int}", one_product)]

    elif name == "cart":
        carts: dict[str, list[dict[str, Any]]] = {}

        async def add(request: Request) -> JSONResponse:
            body = await request.json()
            from_baggage()
            product = await call("catalog", "GET", f"/products/{body['product']}")
            if product.status_code != 200:
                return JSONResponse(product.json(), product.status_code)
            carts.setdefault(body["user"], []).append(product.json())
            log.info("added %s to the cart (%d item(s))", product.json()["name"], len(carts[body["user"]]))
            return JSONResponse({"items": len(carts[body["user"]])})

        async def items(request: Request) -> JSONResponse:
            from_baggage()
            return JSONResponse(carts.get(request.query_params.get("user", ""), []))

        routes += [Route("/items", add, methods=["POST"]), Route("/items", items, methods=["GET"])]

    elif name in ("checkout", "checkout-canary"):
        canary = name == "checkout-canary"

        async def pay(total: float) -> httpx.Response:
            """Three attempts with exponential backoff; each retry is its own span."""
            response = await call("payment", "POST", "/charge", json={"amount": total})
            for attempt in range(1, 3):
                if response.status_code != 503:
                    break
                log.warning(
                    "payment attempt %d: provider unavailable, retrying in %d ms", attempt, 20 * 2**attempt
                )
                await asyncio.sleep(0.02 * 2**attempt)
                with tracer.start_as_current_span(
                    "payment retry",
                    attributes={"http.request.resend_count": attempt, "retry.backoff_ms": 20 * 2**attempt},
                ):
                    response = await call("payment", "POST", "/charge", json={"amount": total})
            return response

        async def audit(order: str) -> None:
            """Broken propagation on purpose: the call goes out without trace headers."""
            with tracer.start_as_current_span(
                "POST /audit",
                kind=SpanKind.CLIENT,
                attributes={"demo.propagation": "dropped", "order.id": order},
            ):
                with suppress_http_instrumentation():
                    await client.post(config.url("inventory") + "/audit", json={"order": order}, headers={})

        async def do_checkout(request: Request) -> JSONResponse:
            body = await request.json()
            from_baggage()
            span = trace.get_current_span()
            if canary:
                await asyncio.sleep(rng.uniform(0.15, 0.3))  # the regression this release shipped
            items = (await call("cart", "GET", "/items", params={"user": body["user"]})).json() or [
                {"price": 9.99}
            ]
            total = round(sum(i["price"] for i in items), 2)
            span.set_attribute("order.total", total)
            span.set_attribute("order.items", len(items))
            log.info("placing order: %d item(s), total %.2f", len(items), total)
            payment = await pay(total)
            if payment.status_code != 200:
                span.set_status(Status(StatusCode.ERROR, "payment failed"))
                log.error("order not placed: payment failed after retries (%s)", payment.json().get("error"))
                return JSONResponse({"error": "payment failed"}, 502)
            reserve = await call("inventory", "POST", "/reserve", json={"items": len(items)})
            if reserve.status_code != 200:
                span.set_status(Status(StatusCode.ERROR, "inventory failed"))
                log.error("order not placed: inventory reservation failed (%s)", reserve.json().get("error"))
                return JSONResponse({"error": "inventory failed"}, 502)
            order = f"o-{rng.getrandbits(40):010x}"
            if rng.random() < faults.dropped_propagation:
                await audit(order)
            await call("notifications", "POST", "/notify", json={"order": order, "user": body["user"]})
            log.info("order %s placed", order)
            return JSONResponse({"order": order, "total": total})

        routes.append(Route("/checkout", do_checkout, methods=["POST"]))

    elif name == "payment":

        async def charge(request: Request) -> JSONResponse:
            body = await request.json()
            from_baggage()
            span = trace.get_current_span()
            span.set_attribute("payment.provider", "acme-pay")
            log.info("charging card ending 4242: %.2f", body["amount"])
            started = time.monotonic()
            if rng.random() < faults.slow_payment:
                span.set_attribute("payment.provider.slow", True)
                await asyncio.sleep(rng.uniform(0.3, 0.8))
                log.warning("acme-pay slow to answer: %d ms", (time.monotonic() - started) * 1000)
            else:
                await asyncio.sleep(rng.uniform(0.01, 0.04))
            if rng.random() < faults.payment_failure:
                span.set_status(Status(StatusCode.ERROR, "provider unavailable"))
                log.error("payment declined: acme-pay answered 503 provider unavailable")
                return JSONResponse({"error": "provider unavailable"}, 503)
            return JSONResponse({"charged": True})

        routes.append(Route("/charge", charge, methods=["POST"]))

    elif name == "inventory":

        def check_stock() -> None:
            """The stock service behind inventory, which times out now and then."""
            if rng.random() < faults.inventory_error:
                raise RuntimeError("stock service timeout")

        async def reserve(request: Request) -> JSONResponse:
            body = await request.json()
            from_baggage()
            span = trace.get_current_span()
            await asyncio.sleep(rng.uniform(0.002, 0.01))
            try:
                check_stock()
            except RuntimeError as error:
                log.exception("reserving %d item(s) failed", body["items"])
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, str(error)))
                return JSONResponse({"error": str(error)}, 500)
            log.info("reserved stock for %d item(s)", body["items"])
            return JSONResponse({"reserved": True})

        async def audit_order(request: Request) -> JSONResponse:
            await request.json()
            return JSONResponse({"audited": True})

        routes += [
            Route("/reserve", reserve, methods=["POST"]),
            Route("/audit", audit_order, methods=["POST"]),
        ]

    elif name == "notifications":

        async def send(order: str, producer: trace.SpanContext) -> None:
            """The asynchronous step: its own trace, linked to the request that queued it."""
            await asyncio.sleep(rng.uniform(0.01, 0.05))
            with tracer.start_as_current_span(
                "send confirmation email",
                context=context.Context(),
                kind=SpanKind.CONSUMER,
                links=[Link(producer, {"link.kind": "follows_from"})],
                attributes={"messaging.operation": "process", "order.id": order},
            ):
                await asyncio.sleep(rng.uniform(0.005, 0.02))
                log.info("sent the confirmation email for order %s", order)

        async def notify(request: Request) -> JSONResponse:
            body = await request.json()
            from_baggage()
            producer = trace.get_current_span().get_span_context()
            log.info("queued the confirmation email for order %s", body["order"])
            return JSONResponse(
                {"queued": True}, 202, background=BackgroundTask(send, body["order"], producer)
            )

        routes.append(Route("/notify", notify, methods=["POST"]))

    else:
        raise ValueError(f"unknown demo service {name!r}")

    # looked up now, not at import: StarletteInstrumentor swaps in its traced subclass
    return applications.Starlette(routes=routes)


def wait_ready(urls: list[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    pending = list(urls)
    while pending and time.monotonic() < deadline:
        try:
            if httpx.get(pending[0] + "/healthz", timeout=1).status_code == 200:
                pending.pop(0)
                continue
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    if pending:
        raise RuntimeError(f"demo services did not start: {pending}")
