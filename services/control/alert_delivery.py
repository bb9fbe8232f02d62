"""Control's alert deliverer: ``tt:stream:alerts`` → the webhook, each alert once, retried, deduplicated and
rate-limited per key.

Why here: control runs in every deployment, is off the copy path and holds Redis already. Its replicas share the
work through the consumer group ``deliverers``: each alert goes to one replica, which acknowledges it once the
webhook took it (2xx) or refused it for good (a 4xx, :data:`MAX_REFUSALS` times). A replica holds one alert at a
time and claims it again while it retries (at least every third of ``claim_idle_s``); what a replica took and
never acknowledged (it died) is taken over by another after ``claim_idle_s``, and by itself when it starts again.
While the webhook is down the oldest alert is retried with backoff and the others wait behind it in the stream; an
alert older than ``retention_s`` is no longer sent (the stream is trimmed to that age): how long the webhook may
be down without losing one.

Before the first POST of an alert one Redis script decides, once per stream entry (a retry or a restart finds
the decision made): ``duplicate`` when another entry already carries its ``dedupe_id`` (within ``dedupe_s``),
``held`` when its key already had ``rate_limit`` alerts in the fixed window (of ``rate_window_s``) of its time
and it is of the kind last sent for its key, ``send`` otherwise. An alert of another kind than the last one sent
for its key (BREAKER_CLOSED after BREAKER_OPENED) is never held: what the operator was told last must be the
state now. What was held is announced once: by the key's next alert sent (which says how many were held), or,
when none has come by the end of the window, by a notice the deliverer appends to the stream once it has decided
every alert waiting there (the last alert held and how many were, sent without the rate limit; not sent when the key
has sent another kind since: the state it would repeat is over).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from opentelemetry import metrics

from common.alerts import ALERTS_STREAM, FIELD, Alert, signature
from common.cancel import reraise_if_cancelling
from common.logtrim import trim_before
from common.retry import Backoff
from services.control.config import AlertSettings

log = logging.getLogger(__name__)

GROUP = "deliverers"
MAX_REFUSALS = 5  # a 4xx other than 408/429 this many times: the alert is given up (logged)
READ_COUNT = 1  # one alert in hand at a time: what waits in the stream is free for another replica
BLOCK_MS = 1000
TRIM_INTERVAL_S = 60.0
NOTICE_INTERVAL_S = 1.0  # how often the windows that ended with alerts held are looked for
HELD_DUE = "tt:alerts:held_due"  # sorted set: alert key → the end (ms) of the last window it had alerts held in
HELD_FIELD = b"h"  # a notice's entry: how many alerts of its key were held back (FIELD: the last of them)

_meter = metrics.get_meter("tradingtools.control")
_OUTCOMES = _meter.create_counter("alerts.delivery", description="Alerts taken off the stream, by kind and outcome "
                                  "(SENT, DUPLICATE, HELD, NOTICE, SUPERSEDED, EXPIRED, REFUSED, MALFORMED)")
_ATTEMPTS = _meter.create_counter("alerts.webhook_posts", description="Webhook POSTs, by result (2xx, 4xx, 5xx, error)")
_LATENCY = _meter.create_histogram("alerts.delivery_delay", unit="ms", description="Alert raised → webhook took it")

# KEYS: decision, dedupe, rate window, held count, kind last sent, last held, HELD_DUE.
# ARGV: entry id, rate limit, window ms, dedupe ms, decision ms, kind, payload, window end ms, alert key.
# Returns 'duplicate', 'held' or 'send:<alerts held before it, now announced by it>'.
_DECIDE = """
local d = redis.call('GET', KEYS[1])
if d then return d end
local owner = redis.call('GET', KEYS[2])
if owner and owner ~= ARGV[1] then
  d = 'duplicate'
else
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[4])
  local n = redis.call('INCR', KEYS[3])
  if n == 1 then redis.call('PEXPIRE', KEYS[3], ARGV[5]) end
  local last = redis.call('GET', KEYS[5])
  if n <= tonumber(ARGV[2]) or (last and last ~= ARGV[6]) then
    d = 'send:' .. (redis.call('GET', KEYS[4]) or '0')
    redis.call('DEL', KEYS[4], KEYS[6])
    redis.call('ZREM', KEYS[7], ARGV[9])
    redis.call('SET', KEYS[5], ARGV[6], 'PX', ARGV[5])
  else
    d = 'held'
    redis.call('INCR', KEYS[4])
    redis.call('PEXPIRE', KEYS[4], ARGV[5])
    redis.call('SET', KEYS[6], ARGV[7], 'PX', ARGV[5])
    local due = redis.call('ZSCORE', KEYS[7], ARGV[9])
    if not due or tonumber(due) < tonumber(ARGV[8]) then redis.call('ZADD', KEYS[7], ARGV[8], ARGV[9]) end
  end
end
redis.call('SET', KEYS[1], d, 'PX', ARGV[5])
return d
"""

# KEYS: HELD_DUE, held count, last held, the stream. ARGV: alert key, now ms, FIELD, HELD_FIELD.
# A key whose window is over: its held alerts not announced yet become one notice entry. Returns how many.
_ANNOUNCE = """
local due = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not due or tonumber(due) > tonumber(ARGV[2]) then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
local held = tonumber(redis.call('GET', KEYS[2]) or '0')
local last = redis.call('GET', KEYS[3])
redis.call('DEL', KEYS[2], KEYS[3])
if held < 1 or not last then return 0 end
redis.call('XADD', KEYS[4], '*', ARGV[3], last, ARGV[4], tostring(held))
return held
"""


@dataclass(frozen=True, slots=True)
class Answer:
    """What the webhook made of one POST."""

    delivered: bool
    retry: bool  # worth trying again (5xx, 408, 429, no answer)
    detail: str


def webhook_body(alert: Alert, entry_id: str, held: int, *, notice: bool = False) -> bytes:
    """The POSTed JSON: Slack's ``text`` plus the alert's fields for machines (a ``notice``: ``held`` alerts of the
    key were held back, ``alert`` the last of them)."""
    return orjson.dumps({"text": alert.held_notice(held) if notice else alert.text(held), "alert": {
        "id": alert.dedupe_id, "entry": entry_id, "kind": alert.kind, "key": alert.key, "severity": alert.severity,
        "service": alert.service, "summary": alert.summary, "at_ms": alert.at_ms, "fields": dict(alert.fields),
        "held_back": held, "held_notice": notice}})


class WebhookSender:
    """POSTs alerts to the webhook, signed when a secret is set."""

    def __init__(self, url: str, secret: str, *, timeout_s: float) -> None:
        self.url = url
        self.secret = secret
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def send(self, alert: Alert, entry_id: str, held: int, *, notice: bool = False) -> Answer:
        """One POST of ``alert`` (see :func:`webhook_body`)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        body = webhook_body(alert, entry_id, held, notice=notice)
        stamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", "X-TT-Alert-Id": alert.dedupe_id, "X-TT-Timestamp": stamp}
        if self.secret:
            headers["X-TT-Signature"] = signature(self.secret, stamp, body)
        try:
            async with self._session.post(self.url, data=body, headers=headers) as resp:
                await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            reraise_if_cancelling()  # a cancel that met the request's own timeout comes back as TimeoutError
            _ATTEMPTS.add(1, {"result": "error"})
            return Answer(False, True, f"{type(exc).__name__}: {exc}"[:300])
        _ATTEMPTS.add(1, {"result": f"{status // 100}xx"})
        if 200 <= status < 300:
            return Answer(True, False, str(status))
        return Answer(False, status >= 500 or status in (408, 429), f"HTTP {status}")

    async def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class AlertDeliverer:
    """Reads ``tt:stream:alerts`` as one consumer of the group and sends each alert (see the module docstring)."""

    def __init__(self, redis: Any, sender: WebhookSender, settings: AlertSettings, *,
                 clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
                 rng: random.Random | None = None) -> None:
        self.redis = redis
        self.sender = sender
        self.settings = settings
        self.clock_ms = clock_ms
        self.rng = rng or random.Random()
        self.backoff = Backoff(settings.retry_base_s, settings.retry_cap_s)
        self.outcomes: dict[str, int] = {}
        self._decide = redis.register_script(_DECIDE)
        self._announce = redis.register_script(_ANNOUNCE)

    async def run(self) -> None:
        """Deliver until cancelled: first what this consumer took and never acknowledged, then what other
        replicas left for ``claim_idle_s``, then new alerts as they come."""
        s = self.settings
        log.info("alert deliverer started", extra={"consumer": s.consumer, "retention_s": s.retention_s})
        next_claim = next_trim = next_notice = 0.0
        own_backlog = True
        caught_up = False  # the last read found nothing new: what waits in the stream is decided
        failures = 0
        while True:
            reraise_if_cancelling()  # redis-py can swallow a cancellation during a blocking read
            try:
                if own_backlog:
                    await self._ensure_group()
                    own_backlog = await self._handle(await self._read("0"))
                    continue
                now = time.monotonic()
                if now >= next_trim:
                    await self._trim()
                    next_trim = now + TRIM_INTERVAL_S
                if now >= next_claim:
                    await self._claim_idle()
                    next_claim = now + s.claim_idle_s / 2
                if caught_up and now >= next_notice:  # not while alerts wait: they may announce what was held
                    await self._announce_held()
                    next_notice = now + NOTICE_INTERVAL_S
                entries = await self._read(">", block_ms=BLOCK_MS)
                caught_up = not entries
                await self._handle(entries)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis away: the alerts wait in the stream
                reraise_if_cancelling()
                delay = self.backoff.delay(min(failures, 10), self.rng.random())
                failures += 1
                log.warning("alert delivery paused", extra={"error": repr(exc)[:300], "delay_s": round(delay, 2)})
                await asyncio.sleep(delay)

    async def _ensure_group(self) -> None:
        with contextlib.suppress(Exception):  # BUSYGROUP: it exists
            await self.redis.xgroup_create(ALERTS_STREAM, GROUP, id="0", mkstream=True)

    async def _read(self, after: str, *, block_ms: int | None = None) -> list[tuple[Any, Any]]:
        reply = await self.redis.xreadgroup(GROUP, self.settings.consumer, {ALERTS_STREAM: after},
                                            count=READ_COUNT, block=block_ms)
        return [entry for _stream, entries in reply or [] for entry in entries]

    async def _claim_idle(self) -> None:
        """Take over what other replicas took and left unacknowledged for ``claim_idle_s``."""
        start = "0-0"
        while True:
            reply = await self.redis.xautoclaim(ALERTS_STREAM, GROUP, self.settings.consumer,
                                                int(self.settings.claim_idle_s * 1000), start_id=start,
                                                count=READ_COUNT)
            start, entries = _text(reply[0]), reply[1]
            if entries:
                log.warning("alerts taken over from another deliverer", extra={"count": len(entries)})
                await self._handle(entries)
            if start == "0-0" or not entries:
                return

    async def _announce_held(self) -> None:
        """Append a notice for each key whose window is over with alerts held that no later alert announced."""
        now = self.clock_ms()
        for raw in await self.redis.zrangebyscore(HELD_DUE, "-inf", now, start=0, num=100):
            key = _text(raw)
            await self._announce(keys=[HELD_DUE, f"tt:alerts:held:{key}", f"tt:alerts:last_held:{key}",
                                       ALERTS_STREAM], args=[key, now, FIELD, HELD_FIELD])

    async def _trim(self) -> None:
        oldest = self.clock_ms() - int(self.settings.retention_s * 1000)
        await trim_before(self.redis, ALERTS_STREAM, f"{max(oldest, 0)}-0")

    async def _handle(self, entries: list[tuple[Any, Any]]) -> bool:
        """Deliver and acknowledge each entry in order; returns whether there were any."""
        for raw_id, fields in entries:
            entry_id = _text(raw_id)
            outcome = await self._deliver(entry_id, fields)
            await self.redis.xack(ALERTS_STREAM, GROUP, entry_id)
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        return bool(entries)

    async def _deliver(self, entry_id: str, fields: Any) -> str:
        payload = (fields or {}).get(FIELD) if fields else None
        if payload is None:  # trimmed away meanwhile
            return "GONE"
        try:
            alert = Alert.from_json(payload)
        except ValueError as exc:
            log.error("malformed alert entry skipped", extra={"entry": entry_id, "error": str(exc)})
            _OUTCOMES.add(1, {"kind": "UNKNOWN", "outcome": "MALFORMED"})
            return "MALFORMED"
        notice, held_back = HELD_FIELD in fields, int(fields.get(HELD_FIELD) or 0)
        if self._expired(alert):
            return self._gave_up(alert, "EXPIRED", "older than TT_TUNE_CONTROL_ALERT_RETENTION_S", notice, held_back)
        if notice:  # decided when it was appended: sent whatever the rate limit, unless a later state was sent
            if _text(await self.redis.get(f"tt:alerts:last:{alert.key}") or alert.kind) != alert.kind:
                return self._superseded(alert, held_back)
            return await self._send(entry_id, alert, held_back, notice=True)
        decision, _, held = (await self._decision(entry_id, alert)).partition(":")
        if decision != "send":
            outcome = decision.upper()
            _OUTCOMES.add(1, {"kind": alert.kind, "outcome": outcome})
            log.info("alert not sent", extra={"alert_id": alert.dedupe_id, "key": alert.key, "outcome": outcome})
            return outcome
        return await self._send(entry_id, alert, int(held or 0))

    @staticmethod
    def _superseded(alert: Alert, held: int) -> str:
        """A notice of alerts held back whose key has sent another kind since (the breaker closed, then opened):
        the last word must be the state now, so it is not sent (the held alerts repeated a kind sent before them)."""
        _OUTCOMES.add(1, {"kind": alert.kind, "outcome": "SUPERSEDED"})
        log.info("held-alert notice not sent: its key sent another kind since", extra={
            "alert_id": alert.dedupe_id, "key": alert.key, "held_back": held})
        return "SUPERSEDED"

    async def _send(self, entry_id: str, alert: Alert, held: int, *, notice: bool = False) -> str:
        refusals = attempt = 0
        outcome = "NOTICE" if notice else "SENT"
        while True:
            reraise_if_cancelling()  # a replica told to stop must not go on retrying (and claiming) its alert
            answer = await self.sender.send(alert, entry_id, held, notice=notice)
            if answer.delivered:
                _OUTCOMES.add(1, {"kind": alert.kind, "outcome": outcome})
                if not notice:  # a notice waits for its window's end by design
                    _LATENCY.record(max(0, self.clock_ms() - alert.at_ms))
                log.info("alert sent", extra={"alert_id": alert.dedupe_id, "key": alert.key, "attempts": attempt + 1,
                                              "held_back": held, "notice": notice})
                return outcome
            if not answer.retry:
                refusals += 1
                if refusals >= MAX_REFUSALS:
                    return self._gave_up(alert, "REFUSED", answer.detail, notice, held)
            if self._expired(alert):
                return self._gave_up(alert, "EXPIRED", answer.detail, notice, held)
            delay = self.backoff.delay(min(attempt, 30), self.rng.random())
            attempt += 1
            log.warning("alert webhook failed; retrying", extra={"alert_id": alert.dedupe_id, "detail": answer.detail,
                                                                 "attempt": attempt, "delay_s": round(delay, 2)})
            await self._hold(entry_id, delay)

    async def _hold(self, entry_id: str, delay_s: float) -> None:
        """Wait ``delay_s``, claiming the entry again every third of ``claim_idle_s`` meanwhile: a replica that
        is alive keeps the alert it retries (no other sends it too once the webhook is back)."""
        step = self.settings.claim_idle_s / 3
        end = time.monotonic() + delay_s
        while True:
            await self.redis.xclaim(ALERTS_STREAM, GROUP, self.settings.consumer, 0, [entry_id], justid=True)
            reraise_if_cancelling()
            left = end - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, step))

    def _expired(self, alert: Alert) -> bool:
        return self.clock_ms() - alert.at_ms > self.settings.retention_s * 1000

    def _gave_up(self, alert: Alert, outcome: str, why: str, notice: bool = False, held: int = 0) -> str:
        _OUTCOMES.add(1, {"kind": alert.kind, "outcome": outcome})
        log.error("alert NOT delivered", extra={"alert_id": alert.dedupe_id, "outcome": outcome, "why": why,
                                                "text": alert.held_notice(held) if notice else alert.text(held)})
        return outcome

    async def _decision(self, entry_id: str, alert: Alert) -> str:
        s = self.settings
        window_ms = int(s.rate_window_s * 1000)
        window = alert.at_ms // window_ms
        keys = [f"tt:alerts:decision:{entry_id}", f"tt:alerts:dedupe:{_digest(alert.dedupe_id)}",
                f"tt:alerts:rate:{alert.key}:{window}", f"tt:alerts:held:{alert.key}",
                f"tt:alerts:last:{alert.key}", f"tt:alerts:last_held:{alert.key}", HELD_DUE]
        args = [entry_id, s.rate_limit, window_ms, int(s.dedupe_s * 1000), int(s.retention_s * 1000) + window_ms,
                alert.kind, alert.to_json(), (window + 1) * window_ms, alert.key]
        return _text(await self._decide(keys=keys, args=args))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
