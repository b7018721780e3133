"""Delivering alert notifications to webhooks: clew's JSON, Alertmanager's webhook payload (version 4)
and Slack-compatible messages. A worker thread sends them in order, each with its timeout and
retries with exponential backoff, so a slow receiver never holds up the evaluation; deliveries are
counted by format and outcome for `/metrics`."""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from clew.components.alerts.config import Webhook

log = logging.getLogger(__name__)
BACKOFF_S = 0.5  # the first retry's wait, doubled for each next one


@dataclass(frozen=True, slots=True)
class Event:
    """An alert changing state (firing or resolved), as every notifier describes it."""

    name: str  # the alert's name: the SLO and severity, or `silent:<service>`
    status: str  # firing or resolved
    labels: dict[str, str]
    summary: str
    since: int  # ns: when it started firing
    ended: int | None  # ns: when it resolved
    examples: tuple[str, ...]  # trace ids that broke the objective
    tenant: str


def _iso(ns: int | None) -> str:
    if ns is None:
        return "0001-01-01T00:00:00Z"  # Alertmanager's "not ended"
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat().replace("+00:00", "Z")


def _slack(text: str) -> str:
    """Text as Slack shows it literally: a service named `<!channel>` must not ping anyone."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def payload(event: Event, fmt: str, external_url: str) -> dict[str, Any]:
    links = [f"{external_url}/trace/{t}" for t in event.examples]
    if fmt == "alertmanager":
        labels = {"alertname": event.name, **event.labels}
        fingerprint = hashlib.sha1(repr(sorted(labels.items())).encode()).hexdigest()[:16]
        return {
            "version": "4", "groupKey": f"{{}}:{{alertname={event.name!r}}}", "truncatedAlerts": 0,
            "status": event.status, "receiver": "clew", "groupLabels": {"alertname": event.name},
            "commonLabels": labels, "commonAnnotations": {"summary": event.summary}, "externalURL": external_url,
            "alerts": [{
                "status": event.status, "labels": labels,
                "annotations": {"summary": event.summary, "example_traces": " ".join(links)},
                "startsAt": _iso(event.since), "endsAt": _iso(event.ended),
                "generatorURL": f"{external_url}/alerts", "fingerprint": fingerprint,
            }],
        }  # fmt: skip
    if fmt == "slack":
        examples = ", ".join(f"<{link}|{t[:12]}>" for link, t in zip(links, event.examples, strict=True))
        text = f"*[{event.status.upper()}] {_slack(event.name)}*: {_slack(event.summary)}"
        return {"text": text + (f"\nExample traces: {examples}" if examples else "")}
    return {
        "status": event.status, "alert": event.name, "labels": event.labels, "summary": event.summary,
        "tenant": event.tenant, "startsAt": _iso(event.since), "endsAt": None if event.ended is None else _iso(event.ended),
        "examples": [{"traceID": t, "url": link} for t, link in zip(event.examples, links, strict=True)],
    }  # fmt: skip


class Notifier:
    """Sends each event to every webhook, in order, off the evaluating thread."""

    def __init__(self, webhooks: tuple[Webhook, ...], external_url: str) -> None:
        self.webhooks, self.external_url = webhooks, external_url
        self.counts: Counter[tuple[str, str]] = Counter()  # (format, delivered|failed|retried)
        self._queue: queue.SimpleQueue[Event | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def send(self, event: Event) -> None:
        if not self.webhooks:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="clew-alert-notifier", daemon=True)
            self._thread.start()
        self._queue.put(event)

    def _run(self) -> None:
        with httpx.Client() as client:
            while (event := self._queue.get()) is not None:
                for hook in self.webhooks:
                    self._deliver(client, hook, event)

    def _deliver(self, client: httpx.Client, hook: Webhook, event: Event) -> None:
        body = payload(event, hook.format, self.external_url)
        for attempt in range(hook.retries + 1):
            if attempt:
                self.counts[(hook.format, "retried")] += 1
                time.sleep(BACKOFF_S * 2 ** (attempt - 1))
            try:
                response = client.post(hook.url, json=body, timeout=hook.timeout_s)
                if response.status_code < 300:
                    self.counts[(hook.format, "delivered")] += 1
                    return
                reason = f"HTTP {response.status_code}"
                if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
                    log.warning("alert %s to %s: %s, not retried", event.name, hook.url, reason)
                    break  # the receiver refuses this payload: sending it again will not help
            except Exception as exc:  # any failure of one delivery must not stop the worker
                reason = type(exc).__name__
            log.warning("alert %s to %s: %s (attempt %d)", event.name, hook.url, reason, attempt + 1)
        self.counts[(hook.format, "failed")] += 1

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
