"""A held notice is appended to the stream's END when the announcer finds its window over, so
it was sent after alerts of its key raised later (the operator was left with an old state), and a backlog that took
longer than one announcer pass (1 s) to decide was announced by a notice per pass, each bypassing the rate limit:
notices now wait until the deliverer has decided what waits, and one whose key sent another kind since is not sent.
The announcer's pass and the deliverer's idle read are shortened here (1 s each in production), and the backlog and
the slow webhook with them: the same passes fall inside them, in a fraction of the time."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace

import pytest

from common.alerts import ALERTS_STREAM, FIELD, Alert, AlertKind, Severity, new_alert
from common.config import Secret
from common.streams import create_stream_redis
from services.control import alert_delivery
from services.control.alert_delivery import HELD_DUE, AlertDeliverer, Answer
from services.control.config import AlertSettings
from tests.helpers import eventually

pytestmark = pytest.mark.integration

# the production rate limit (5 per key per 600 s), fast retries
SETTINGS = AlertSettings(webhook_secret=Secret("x"), timeout_s=1.0, retry_base_s=0.01, retry_cap_s=0.05,
                         rate_limit=5, rate_window_s=600.0, consumer="c1", claim_idle_s=30.0)
WINDOW_MS = 600_000
NOTICE_INTERVAL_S = 0.05  # the announcer's pass (production: 1 s)
SLOW_S = 0.2  # a slow webhook's POST: several announcer passes


@pytest.fixture(autouse=True)
def _short_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alert_delivery, "NOTICE_INTERVAL_S", NOTICE_INTERVAL_S)
    monkeypatch.setattr(alert_delivery, "BLOCK_MS", 100)  # an idle read: how soon the deliverer knows it caught up


@dataclass
class Sender:
    """A webhook: every POST taken, those of ``slow_keys`` after ``SLOW_S`` (a slow webhook)."""

    slow_keys: set[str] = field(default_factory=set)
    got: list[tuple[str, str, bool, int]] = field(default_factory=list)

    async def send(self, alert: Alert, entry_id: str, held: int, *, notice: bool = False) -> Answer:
        if alert.key in self.slow_keys:
            await asyncio.sleep(SLOW_S)
        self.got.append((alert.key, alert.kind, notice, held))
        return Answer(True, False, "200")

    async def close(self) -> None:
        return None


def _a(kind: AlertKind, key: str, n: int, at_ms: int) -> Alert:
    return replace(new_alert(kind, key, f"{key} {kind.value} #{n}", severity=Severity.CRITICAL,
                             dedupe_id=f"{key}:{kind.value}:{n}", service="executor"), at_ms=at_ms)


def _past_window_start() -> int:
    """The start of the last 600 s window that is over (its alerts waited out a webhook outage)."""
    return (time.time_ns() // 1_000_000 // WINDOW_MS - 1) * WINDOW_MS


async def _run(redis_url: str, alerts: list[Alert], sender: Sender) -> list[tuple[str, str, bool, int]]:
    client = create_stream_redis(redis_url)
    pipe = client.pipeline(transaction=False)
    for a in alerts:  # the backlog of a webhook outage
        pipe.xadd(ALERTS_STREAM, {FIELD: a.to_json()})
    await pipe.execute()
    d = AlertDeliverer(client, sender, SETTINGS)  # type: ignore[arg-type]
    task = asyncio.create_task(d.run())
    try:
        async def drained() -> bool:
            info = await client.xinfo_groups(ALERTS_STREAM)
            last = (await client.xinfo_stream(ALERTS_STREAM))["last-generated-id"]
            return bool(info) and info[0]["pending"] == 0 and info[0]["last-delivered-id"] == last
        async def decided() -> bool:
            return sum(d.outcomes.values()) >= len(alerts) and await drained()
        async def announced() -> bool:  # no window with alerts held is left to announce, and every notice is sent
            return await client.zcard(HELD_DUE) == 0 and await drained()

        await eventually(decided, timeout_s=60, interval_s=0.2, message="backlog not drained")
        await eventually(announced, timeout_s=30, interval_s=0.05, message="notices not delivered")
    finally:
        task.cancel()
        await asyncio.wait({task}, timeout=10)
        await client.aclose()
    return sender.got


async def test_the_last_word_about_a_breaker_is_its_state_now(redis_url: str) -> None:
    """Two executors (a rollout) share key breaker:insiders. In one window the breaker flaps (O C O C O C: six
    sent, a change of kind is never held), the second executor's CLOSED is held (same kind as the last sent), an
    alert of another key takes several announcer passes to POST (the announcer runs, the window being over), then
    the breaker OPENS and stays open. The operator must be left with OPENED. Instead the held CLOSED's notice,
    appended behind the OPENED, is the last word: CLOSED while the breaker is open."""
    t0 = _past_window_start()
    seq = [AlertKind.BREAKER_OPENED, AlertKind.BREAKER_CLOSED] * 3 + [AlertKind.BREAKER_CLOSED]
    alerts = [_a(kind, "breaker:insiders", n, t0 + n) for n, kind in enumerate(seq)]
    alerts.append(_a(AlertKind.FEED_STALLED, "feed_stalled:rtds", 0, t0 + 50))
    alerts.append(_a(AlertKind.BREAKER_OPENED, "breaker:insiders", 99, t0 + 100))
    got = await _run(redis_url, alerts, Sender({"feed_stalled:rtds"}))
    about = [(kind, "notice" if notice else "alert", held) for key, kind, notice, held in got
             if key == "breaker:insiders"]
    assert about[-1][0] == "BREAKER_OPENED", f"the operator was told, in this order: {about}"


N = 2_000  # decided over tens of announcer passes (the old code sent 26 to 93 notices for it)


async def test_a_backlog_of_one_key_is_announced_by_one_notice(redis_url: str) -> None:
    """2,000 alerts of one key from one window that is over (a webhook outage's backlog; it takes many announcer
    passes to decide): 5 sent, the rest held. What was held in a window is announced by ONE notice; instead the
    announcer finds the window over while the backlog is still being decided, and sends a notice per pass."""
    t0 = _past_window_start()
    alerts = [_a(AlertKind.DEAD_LETTERED, "dead_letter:log", n, t0 + n % 1000) for n in range(N)]
    got = await _run(redis_url, alerts, Sender())
    notices = [held for key, _kind, notice, held in got if key == "dead_letter:log" and notice]
    sent = [1 for key, _kind, notice, _held in got if key == "dead_letter:log" and not notice]
    assert len(sent) == 5 and sum(notices) == N - 5
    assert len(notices) == 1, f"{len(notices)} notices for one window's held alerts (held_back each): {notices}"
