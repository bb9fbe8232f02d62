"""Alerts: what an operator must hear about at once, raised anywhere without slowing the code that raises it.

:func:`raise_alert` logs the alert and appends it to this process's bounded in-memory outbox (a ``deque``
append: no I/O, no await, nothing to wait on). The service's :class:`AlertPublisher` task moves the outbox to
the Redis Stream ``tt:stream:alerts`` (pipelined ``XADD``, capped at :data:`ALERTS_MAXLEN`), off the code
path that raised them; control's deliverer (:mod:`services.control.alert_delivery`) sends them to the webhook
with retries, deduplication and a rate limit per key. When the outbox is full (Redis down for long), the
oldest alert goes first and is counted (``alerts_dropped_total``); it was logged when raised.

An alert has a ``key`` (what it is about, the unit of the rate limit: ``breaker:insiders``, ``feed_stalled:rtds``)
and a ``dedupe_id`` (this occurrence: the same one raised twice is sent once).

The webhook's body is signed: ``X-TT-Signature: sha256=<hex HMAC-SHA256 of "<X-TT-Timestamp>.<body>">`` with
``TT_ALERT_WEBHOOK_SECRET`` (:func:`signature` / :func:`verify`).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import hmac
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from opentelemetry import metrics

from common.cancel import reraise_if_cancelling
from common.retry import Backoff

log = logging.getLogger(__name__)

ALERTS_STREAM = "tt:stream:alerts"
ALERTS_MAXLEN = 10_000  # the stream's length cap (approximate); control's deliverer also trims it by age
OUTBOX_MAX = 10_000
PUBLISH_BACKOFF = Backoff(0.2, 10.0)
FIELD = b"a"

_meter = metrics.get_meter("tradingtools.alerts")
_RAISED = _meter.create_counter("alerts.raised", description="Alerts raised in this process, by kind")
_DROPPED = _meter.create_counter("alerts.dropped",
                                 description="Alerts dropped before reaching Redis (the outbox was full), by kind")


class AlertKind(enum.StrEnum):
    """What happened (the ``kind`` label of the alert metrics)."""

    ORDER_LOST = "ORDER_LOST"
    BREAKER_OPENED = "BREAKER_OPENED"
    BREAKER_CLOSED = "BREAKER_CLOSED"
    SUBSCRIPTION_PAUSED = "SUBSCRIPTION_PAUSED"
    FEED_STALLED = "FEED_STALLED"
    REDEMPTION_FAILED = "REDEMPTION_FAILED"
    RECONCILIATION_FAILED = "RECONCILIATION_FAILED"
    SERVICE_CRASH_LOOP = "SERVICE_CRASH_LOOP"
    DEAD_LETTERED = "DEAD_LETTERED"
    RESOLUTION_UNCLEAR = "RESOLUTION_UNCLEAR"
    ORDER_CANCEL_REFUSED = "ORDER_CANCEL_REFUSED"


class Severity(enum.StrEnum):
    """How urgent."""

    CRITICAL = "CRITICAL"
    WARNING = "WARNING"
    INFO = "INFO"


_LOG_LEVEL = {Severity.CRITICAL: logging.ERROR, Severity.WARNING: logging.WARNING, Severity.INFO: logging.INFO}


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert: kind, what it is about (``key``), this occurrence (``dedupe_id``), a line for humans, details."""

    kind: str
    key: str
    dedupe_id: str
    severity: str
    summary: str
    at_ms: int
    service: str = ""
    fields: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> bytes:
        """The stream entry's payload."""
        return orjson.dumps({"kind": self.kind, "key": self.key, "dedupe_id": self.dedupe_id,
                             "severity": self.severity, "summary": self.summary, "at_ms": self.at_ms,
                             "service": self.service, "fields": dict(self.fields)})

    @classmethod
    def from_json(cls, raw: bytes | str) -> Alert:
        """Parse a stream entry's payload (ValueError when it is not an alert)."""
        try:
            d = orjson.loads(raw)
            return cls(str(d["kind"]), str(d["key"]), str(d["dedupe_id"]), str(d["severity"]), str(d["summary"]),
                       int(d["at_ms"]), str(d.get("service", "")),
                       {str(k): str(v) for k, v in (d.get("fields") or {}).items()})
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not an alert: {exc}") from None

    def text(self, suppressed: int = 0) -> str:
        """Slack-compatible text (mrkdwn): severity, summary, where, then one line per detail."""
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.at_ms / 1000))
        lines = [f"*{self.severity}* {self.summary}", f"_{self.kind}_ from *{self.service or '?'}* at {when}"]
        lines += [f"• {k}: {v}" for k, v in sorted(self.fields.items())]
        if suppressed:
            lines.append(f"(+{suppressed} more `{self.key}` alerts were held back by the rate limit)")
        return "\n".join(lines)


def _nothing() -> None:
    return None


class Outbox:
    """Alerts raised and not yet in Redis: bounded, oldest dropped first; safe to fill from any thread."""

    def __init__(self, maxlen: int = OUTBOX_MAX) -> None:
        self.items: deque[Alert] = deque()
        self.maxlen = maxlen
        self.notify: Callable[[], None] = _nothing

    def put(self, alert: Alert) -> None:
        """Queue one alert (never blocks)."""
        self.items.append(alert)
        while len(self.items) > self.maxlen:
            lost = self.items.popleft()
            _DROPPED.add(1, {"kind": lost.kind})
        self.notify()

    def take(self, n: int) -> list[Alert]:
        """Up to ``n`` of the oldest alerts."""
        out: list[Alert] = []
        while self.items and len(out) < n:
            out.append(self.items.popleft())
        return out

    def give_back(self, alerts: list[Alert]) -> None:
        """Put alerts that could not be published back in front, in order."""
        self.items.extendleft(reversed(alerts))


OUTBOX = Outbox()


def new_alert(kind: AlertKind, key: str, summary: str, *, dedupe_id: str = "",
              severity: Severity = Severity.WARNING, service: str = "",
              fields: Mapping[str, object] | None = None) -> Alert:
    """An alert raised now; ``dedupe_id`` defaults to ``key`` and the time."""
    at_ms = time.time_ns() // 1_000_000
    return Alert(kind.value, key, dedupe_id or f"{key}:{at_ms}", severity.value, summary, at_ms, service,
                 fields={k: str(v) for k, v in (fields or {}).items()})


def raise_alert(kind: AlertKind, key: str, summary: str, *, dedupe_id: str = "",
                severity: Severity = Severity.WARNING, outbox: Outbox | None = None, **fields: object) -> Alert:
    """Log an alert and hand it to the outbox (no I/O here). ``dedupe_id`` defaults to ``key`` and the time."""
    alert = new_alert(kind, key, summary, dedupe_id=dedupe_id, severity=severity, fields=fields)
    log.log(_LOG_LEVEL[severity], "alert: %s", summary,
            extra={"alert": kind.value, "alert_key": key, "alert_id": alert.dedupe_id, **alert.fields})
    _RAISED.add(1, {"kind": kind.value})
    (OUTBOX if outbox is None else outbox).put(alert)
    return alert


class AlertPublisher:
    """Moves a process's outbox to ``tt:stream:alerts``; run :meth:`run` as a task of the service."""

    def __init__(self, redis: Any, service: str, *, outbox: Outbox | None = None, batch: int = 100,
                 backoff: Backoff = PUBLISH_BACKOFF) -> None:
        self.redis = redis
        self.service = service
        self.outbox = OUTBOX if outbox is None else outbox
        self.batch = batch
        self.backoff = backoff
        self.published = 0

    async def run(self) -> None:
        """Publish what is raised, as it is raised, until cancelled (what is left is tried once more)."""
        for kind in AlertKind:  # every kind exported from the start
            _RAISED.add(0, {"kind": kind.value})
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def notify() -> None:
            loop.call_soon_threadsafe(wake.set)

        self.outbox.notify = notify
        failures = 0
        try:
            while True:
                reraise_if_cancelling()  # redis-py can swallow a cancellation mid-command
                if not self.outbox.items:
                    wake.clear()
                    await wake.wait()
                try:
                    await self.publish_some()
                    failures = 0
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - Redis away: keep them, try again
                    reraise_if_cancelling()
                    delay = self.backoff.delay(min(failures, 10), 0.5)
                    failures += 1
                    log.warning("alerts not published yet; retrying",
                                extra={"pending": len(self.outbox.items), "error": repr(exc)[:300], "delay_s": delay})
                    await asyncio.sleep(delay)
        finally:
            if self.outbox.notify is notify:
                self.outbox.notify = _nothing
            if self.outbox.items:
                with contextlib.suppress(Exception):  # a last try on the way out
                    await asyncio.wait_for(self.publish_some(), timeout=1.0)

    async def publish_some(self) -> int:
        """Append up to one batch of the outbox to the stream (one round trip); given back on failure."""
        alerts = self.outbox.take(self.batch)
        if not alerts:
            return 0
        alerts = [a if a.service else replace(a, service=self.service) for a in alerts]
        try:
            pipe = self.redis.pipeline(transaction=False)
            for alert in alerts:
                pipe.xadd(ALERTS_STREAM, {FIELD: alert.to_json()}, maxlen=ALERTS_MAXLEN, approximate=True)
            await pipe.execute()
        except BaseException:
            self.outbox.give_back(alerts)
            raise
        self.published += len(alerts)
        return len(alerts)


def publish_now(redis_url: str, alert: Alert, *, timeout_s: float = 2.0) -> None:
    """Append one alert to the stream with a blocking client (for a process without an event loop)."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        client.xadd(ALERTS_STREAM, {FIELD: alert.to_json()}, maxlen=ALERTS_MAXLEN, approximate=True)
    finally:
        client.close()


def publish_in_background(redis_url: Callable[[], str], alert: Alert) -> threading.Thread:
    """:func:`publish_now` on a daemon thread (``redis_url()`` resolved there), so a blocking caller's loop
    never waits on Redis; a failure is logged with the alert."""
    def publish() -> None:
        try:
            publish_now(redis_url(), alert)
        except Exception as exc:  # noqa: BLE001 - logged: the alert's text stays in the log
            log.error("alert not published", extra={"alert_id": alert.dedupe_id, "error": repr(exc)[:300],
                                                     "text": alert.text()})
    thread = threading.Thread(target=publish, name="alert-publish", daemon=True)
    thread.start()
    return thread


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of ``<timestamp>.<body>`` with ``secret``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, header: str) -> bool:
    """Whether ``header`` (``X-TT-Signature``) signs ``body`` sent at ``timestamp`` with ``secret``."""
    return hmac.compare_digest(signature(secret, timestamp, body), header)
