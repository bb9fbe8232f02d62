"""Alerts: what an operator must hear about at once, raised anywhere without slowing the code that raises it.

:func:`raise_alert` logs the alert and appends it to this process's bounded in-memory outbox (a ``deque``
append: no I/O, no await, nothing to wait on). The service's :class:`AlertPublisher` task moves the outbox to
the Redis Stream ``tt:stream:alerts`` (pipelined ``XADD``), off the code path that raised them; control's deliverer
(:mod:`services.control.alert_delivery`) sends them to the webhook with retries, deduplication and a rate limit per
key, and trims the stream by age (its retention, a day). When the outbox is full (Redis down for long), the
oldest alert goes first and is counted (``alerts_dropped_total{stage="outbox"}``); it was logged when raised.
The stream's length cap :data:`ALERTS_MAXLEN` only bounds Redis's memory against a runaway: far above what a day
of incidents raises, and what it trims is counted (``alerts_dropped_total{stage="stream"}``) and logged.

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
ALERTS_MAXLEN = 100_000  # ~75 MB of Redis (~750 bytes an alert): ten incidents of 10,000 alerts waiting at once
OUTBOX_MAX = 10_000
PUBLISH_BACKOFF = Backoff(0.2, 10.0)
FIELD = b"a"

_meter = metrics.get_meter("tradingtools.alerts")
_RAISED = _meter.create_counter("alerts.raised", description="Alerts raised in this process, by kind")
_DROPPED = _meter.create_counter("alerts.dropped", description="Alerts lost before delivery, by kind and stage: "
                                 "outbox (full: Redis away long), stream (trimmed by its length cap; kind UNKNOWN)")


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
    VENUE_ANSWER_IMPLAUSIBLE = "VENUE_ANSWER_IMPLAUSIBLE"
    FILL_NOT_BOOKED = "FILL_NOT_BOOKED"
    RESOLUTION_CONTRADICTED = "RESOLUTION_CONTRADICTED"
    SETTLED_WITHOUT_COUNT = "SETTLED_WITHOUT_COUNT"
    REDEMPTION_OVERDUE = "REDEMPTION_OVERDUE"


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

    def held_notice(self, held: int) -> str:
        """The text saying ``held`` alerts of this key were held back by the rate limit, this one the last."""
        were = "alert was" if held == 1 else "alerts were"
        return f"{held} `{self.key}` {were} held back by the rate limit; the last of them:\n{self.text()}"


def _nothing() -> None:
    return None


class Outbox:
    """Alerts raised and not yet in Redis: bounded, oldest dropped first; safe to fill from any thread."""

    def __init__(self, maxlen: int = OUTBOX_MAX) -> None:
        self.items: deque[Alert] = deque()
        self.maxlen = maxlen
        self.notify: Callable[[], None] = _nothing
        self.dropped = 0
        self._dropping = False  # dropping since the outbox was last emptied (logged once)

    def put(self, alert: Alert) -> None:
        """Queue one alert (never blocks)."""
        self.items.append(alert)
        while len(self.items) > self.maxlen:
            lost = self.items.popleft()
            self.dropped += 1
            _DROPPED.add(1, {"kind": lost.kind, "stage": "outbox"})
            if not self._dropping:
                self._dropping = True
                log.error("alert outbox full: the oldest alerts are dropped until it empties (each was logged when "
                          "raised)", extra={"maxlen": self.maxlen, "alert_id": lost.dedupe_id})
        self.notify()

    def take(self, n: int) -> list[Alert]:
        """Up to ``n`` of the oldest alerts."""
        out: list[Alert] = []
        while self.items and len(out) < n:
            out.append(self.items.popleft())
        if not self.items:
            self._dropping = False
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
                 backoff: Backoff = PUBLISH_BACKOFF, maxlen: int = ALERTS_MAXLEN) -> None:
        self.redis = redis
        self.service = service
        self.outbox = OUTBOX if outbox is None else outbox
        self.batch = batch
        self.backoff = backoff
        self.maxlen = maxlen
        self.published = 0
        self.trimmed = 0  # entries this publisher's appends trimmed off the stream's start (its length cap)

    async def run(self) -> None:
        """Publish what is raised, as it is raised, until cancelled (what is left is tried once more)."""
        for kind in AlertKind:  # every kind exported from the start (alerting rules read them)
            _RAISED.add(0, {"kind": kind.value})
        _DROPPED.add(0, {"kind": "UNKNOWN", "stage": "stream"})
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
                pipe.xadd(ALERTS_STREAM, {FIELD: alert.to_json()})
            pipe.xtrim(ALERTS_STREAM, maxlen=self.maxlen, approximate=True)
            replies = await pipe.execute()
        except BaseException:
            self.outbox.give_back(alerts)
            raise
        self.published += len(alerts)
        self.trimmed += _count_trimmed(int(replies[-1]), self.maxlen)
        return len(alerts)


def _count_trimmed(n: int, maxlen: int) -> int:
    """Count and log ``n`` entries trimmed off the stream by its length cap (delivered or not: they are gone)."""
    if n:
        _DROPPED.add(n, {"kind": "UNKNOWN", "stage": "stream"})
        log.error("alerts trimmed off tt:stream:alerts by its length cap; those not delivered yet are lost",
                  extra={"trimmed": n, "maxlen": maxlen})
    return n


def publish_now(redis_url: str, alert: Alert, *, timeout_s: float = 2.0) -> None:
    """Append one alert to the stream with a blocking client (for a process without an event loop)."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        pipe = client.pipeline(transaction=False)
        pipe.xadd(ALERTS_STREAM, {FIELD: alert.to_json()})
        pipe.xtrim(ALERTS_STREAM, maxlen=ALERTS_MAXLEN, approximate=True)
        _count_trimmed(int(pipe.execute()[-1]), ALERTS_MAXLEN)
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
