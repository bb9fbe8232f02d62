"""Alert delivery against a real Redis and a real local webhook: signed Slack-form bodies, retries after 5xx,
one delivery per occurrence, a rate limit per key, nothing lost across a webhook outage and deliverer restarts,
and raising never waits for the webhook."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace

import pytest
import redis.asyncio as aioredis
import redis.exceptions

from common.alerts import ALERTS_STREAM, Alert, AlertKind, AlertPublisher, Outbox, Severity, raise_alert, verify
from common.config import Secret
from common.streams import create_stream_redis
from services.control.alert_delivery import AlertDeliverer, Answer, WebhookSender
from services.control.config import AlertSettings
from sim.webhook import WebhookReceiver
from tests.helpers import eventually

pytestmark = pytest.mark.integration

SECRET = "whsec-test"
FAST = AlertSettings(webhook_secret=Secret(SECRET), timeout_s=1.0,
                     retry_base_s=0.01, retry_cap_s=0.05, rate_limit=100, consumer="c1", claim_idle_s=1.0)


@dataclass
class Rig:
    redis: aioredis.Redis
    outbox: Outbox
    receiver: WebhookReceiver
    tasks: list[asyncio.Task[None]]
    senders: list[WebhookSender]

    def deliverer(self, settings: AlertSettings = FAST, *, url: str = "") -> AlertDeliverer:
        sender = WebhookSender(url or self.receiver.url, settings.webhook_secret.value, timeout_s=settings.timeout_s)
        self.senders.append(sender)
        d = AlertDeliverer(self.redis, sender, settings)
        self.tasks.append(asyncio.create_task(d.run()))
        return d

    def raise_(self, key: str = "breaker:insiders", dedupe_id: str = "", **fields: object) -> Alert:
        return raise_alert(AlertKind.BREAKER_OPENED, key, f"breaker {key} opened", dedupe_id=dedupe_id,
                           severity=Severity.CRITICAL, outbox=self.outbox, **fields)


@pytest.fixture
async def rig(redis_url: str) -> AsyncIterator[Rig]:
    client = create_stream_redis(redis_url)
    receiver = WebhookReceiver(secret=SECRET)
    await receiver.start()
    outbox = Outbox()
    rig = Rig(client, outbox, receiver, [], [])
    rig.tasks.append(asyncio.create_task(AlertPublisher(client, "executor", outbox=outbox).run()))
    yield rig
    receiver.release()
    for task in rig.tasks:
        task.cancel()
    _done, running = await asyncio.wait(rig.tasks, timeout=10) if rig.tasks else (set(), set())
    assert not running, f"still running 10 s after they were cancelled: {sorted(t.get_name() for t in running)}"
    for sender in rig.senders:
        await sender.close()
    await receiver.stop()
    await client.aclose()


async def stop(task: asyncio.Task[None], timeout_s: float = 10.0) -> None:
    """Cancel a deliverer and wait for it to end (failing, not hanging, when it does not)."""
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    assert done, f"the deliverer was still running {timeout_s:.0f} s after it was cancelled"
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_an_alert_arrives_signed_in_slack_form(rig: Rig) -> None:
    rig.deliverer()
    raised = rig.raise_(venue="insiders", failures="5")
    [got] = await eventually(lambda: rig.receiver.received, message="the alert is delivered")
    assert got.signed and rig.receiver.refused == 0
    assert verify(SECRET, got.headers["x-tt-timestamp"], got.raw, got.headers["x-tt-signature"])
    assert not verify("other", got.headers["x-tt-timestamp"], got.raw, got.headers["x-tt-signature"])
    assert "*CRITICAL* breaker breaker:insiders opened" in got.text and "• venue: insiders" in got.text
    assert got.alert["id"] == raised.dedupe_id and got.alert["service"] == "executor"
    assert got.alert["fields"] == {"venue": "insiders", "failures": "5"}
    assert got.headers["x-tt-alert-id"] == raised.dedupe_id


async def test_a_wrong_secret_is_refused_by_the_receiver_and_retried(rig: Rig) -> None:
    d = rig.deliverer(replace(FAST, webhook_secret=Secret("not-the-secret")))
    rig.raise_()
    await eventually(lambda: rig.receiver.refused >= 2, message="401s")
    assert not rig.receiver.received
    assert not d.outcomes  # refused (4xx) alerts are retried a few times before being given up


async def test_a_5xx_is_retried_until_the_webhook_takes_it(rig: Rig) -> None:
    rig.receiver.fail_next = 3
    d = rig.deliverer()
    rig.raise_(dedupe_id="open:1")
    await eventually(lambda: rig.receiver.received, message="delivered after the 503s")
    assert rig.receiver.requests == 4 and rig.receiver.ids() == ["open:1"]
    await eventually(lambda: d.outcomes == {"SENT": 1})


async def test_one_occurrence_is_sent_once_and_each_key_is_rate_limited(rig: Rig) -> None:
    d = rig.deliverer(replace(FAST, rate_limit=2))
    for i in range(2):
        rig.raise_(key="feed_stalled:rtds", dedupe_id="stall:1")  # the same occurrence twice
        rig.raise_(key="order_lost:INSIDERS", dedupe_id=f"lost:{i}")
    for i in range(2, 5):
        rig.raise_(key="order_lost:INSIDERS", dedupe_id=f"lost:{i}")
    await eventually(lambda: sum(d.outcomes.values()) == 7, message="every entry decided")
    assert sorted(rig.receiver.ids()) == ["lost:0", "lost:1", "stall:1"]
    assert d.outcomes == {"SENT": 3, "DUPLICATE": 1, "HELD": 3}
    # the key's next window: sent, saying how many were held back
    later = replace(rig.raise_(key="order_lost:INSIDERS", dedupe_id="lost:next"),
                    at_ms=time.time_ns() // 1_000_000 + 600_000)
    rig.outbox.items.clear()
    rig.outbox.put(later)
    await eventually(lambda: "lost:next" in rig.receiver.ids())
    assert "+3 more `order_lost:INSIDERS` alerts were held back" in rig.receiver.received[-1].text


async def test_nothing_is_lost_across_a_webhook_outage_and_a_deliverer_restart(rig: Rig) -> None:
    port = rig.receiver.port
    await rig.receiver.stop()  # the webhook is down: connections refused
    first = rig.deliverer()
    for i in range(3):
        rig.raise_(key=f"k{i}", dedupe_id=f"down:{i}")
    await eventually(lambda: _pending(rig.redis, 1), message="the deliverer took the first (one at a time)")
    await stop(rig.tasks.pop())  # the deliverer restarts while the webhook is still down
    assert not first.outcomes
    rig.receiver.port = port
    await rig.receiver.start()
    second = rig.deliverer()  # the same consumer: its own unacknowledged alerts first
    await eventually(lambda: len(rig.receiver.received) == 3, message="all three delivered")
    assert rig.receiver.ids() == ["down:0", "down:1", "down:2"]
    await eventually(lambda: second.outcomes == {"SENT": 3}, message="all three acknowledged")


async def test_another_replica_takes_over_what_a_dead_one_took(rig: Rig, unused_url: str) -> None:
    a = rig.deliverer(replace(FAST, consumer="replica-a"), url=unused_url)  # its webhook is unreachable
    rig.raise_(dedupe_id="taken:1")
    await eventually(lambda: _pending(rig.redis, 1), message="replica a took it")
    await stop(rig.tasks.pop())  # replica a dies with the alert unacknowledged
    assert not a.outcomes
    b = rig.deliverer(replace(FAST, consumer="replica-b", claim_idle_s=1.0))
    await eventually(lambda: rig.receiver.ids() == ["taken:1"], timeout_s=15, message="replica b sent it")
    await eventually(lambda: b.outcomes == {"SENT": 1}, message="replica b acknowledged it")


async def test_a_replica_still_retrying_keeps_its_alert(rig: Rig) -> None:
    port = rig.receiver.port
    await rig.receiver.stop()
    a = rig.deliverer(replace(FAST, consumer="replica-a"))
    rig.raise_(dedupe_id="held:1")
    await eventually(lambda: _pending(rig.redis, 1), message="replica a took it")
    b = rig.deliverer(replace(FAST, consumer="replica-b"))
    await asyncio.sleep(3 * FAST.claim_idle_s)  # the outage outlasts replica b's claim period three times
    rig.receiver.port = port
    await rig.receiver.start()
    await eventually(lambda: a.outcomes == {"SENT": 1}, message="replica a sent it once the webhook was back")
    assert rig.receiver.ids() == ["held:1"] and not b.outcomes


async def test_raising_never_waits_for_a_hanging_webhook(rig: Rig) -> None:
    rig.receiver.hang()
    rig.deliverer(replace(FAST, timeout_s=60.0))
    rig.raise_(dedupe_id="first")
    await eventually(lambda: rig.receiver.requests == 1, message="the webhook holds the first POST")
    raised = [rig.raise_(key=f"k{i % 7}", dedupe_id=f"burst:{i}") for i in range(2000)]  # no await in between
    assert len(raised) == 2000
    await eventually(lambda: _length(rig.redis, 2001), message="every alert reached Redis")
    assert rig.receiver.requests == 1 and not rig.receiver.received  # the webhook still holds the first


async def test_an_alert_older_than_the_retention_is_not_sent(rig: Rig) -> None:
    d = rig.deliverer()
    old = replace(rig.raise_(dedupe_id="old"), at_ms=time.time_ns() // 1_000_000 - 90_000_000)
    rig.outbox.items.clear()
    rig.outbox.put(old)
    rig.raise_(dedupe_id="new")
    await eventually(lambda: rig.receiver.ids() == ["new"])
    assert d.outcomes == {"EXPIRED": 1, "SENT": 1}


async def test_alerts_waiting_out_a_webhook_outage_are_all_kept(rig: Rig) -> None:
    """The webhook is down; an incident raises 10,300 alerts (each its own occurrence; in bursts the publisher's
    outbox takes). Once the webhook is back (well within the retention) the alerts raised first are delivered
    first: none was trimmed off the stream while it waited."""
    port = rig.receiver.port
    await rig.receiver.stop()
    rig.deliverer(replace(FAST, rate_limit=100_000))
    for i in range(10_300):
        rig.raise_(key=f"order_lost:k{i}", dedupe_id=f"flood:{i}")
        if i % 1000 == 999:
            await eventually(lambda: not rig.outbox.items, timeout_s=60, message="the burst published")
    await eventually(lambda: not rig.outbox.items, timeout_s=60, message="all published")
    rig.receiver.port = port
    await rig.receiver.start()
    await eventually(lambda: len(rig.receiver.received) >= 5, timeout_s=30, message="deliveries resumed")
    assert rig.receiver.ids()[:5] == [f"flood:{i}" for i in range(5)]


async def test_alerts_trimmed_by_the_streams_length_cap_are_counted(rig: Rig) -> None:
    outbox = Outbox()
    publisher = AlertPublisher(rig.redis, "executor", outbox=outbox, batch=50, maxlen=100)
    for i in range(450):
        raise_alert(AlertKind.ORDER_LOST, f"order_lost:k{i}", "lost", dedupe_id=f"capped:{i}", outbox=outbox)
    while outbox.items:
        await publisher.publish_some()
    length = await rig.redis.xlen(ALERTS_STREAM)
    assert publisher.trimmed > 0 and publisher.trimmed + length == 450


class SwallowingSender(WebhookSender):
    """A webhook client that, like a library whose own timeout meets the cancel, answers "no answer" when the
    task is cancelled during a POST instead of raising CancelledError (while ``swallow``)."""

    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:9/alerts", "", timeout_s=1.0)
        self.inside = asyncio.Event()
        self.swallow = True

    async def send(self, alert: Alert, entry_id: str, held: int, *, notice: bool = False) -> Answer:
        self.inside.set()
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            if not self.swallow:
                raise
        return Answer(False, True, "TimeoutError: the request timed out")


async def test_a_deliverer_told_to_stop_stops_even_when_its_client_swallows_the_cancel(rig: Rig) -> None:
    sender = SwallowingSender()
    task = asyncio.create_task(AlertDeliverer(rig.redis, sender, FAST).run())
    rig.raise_(dedupe_id="stuck:1")
    await eventually(lambda: sender.inside.is_set(), message="the deliverer is posting the alert")
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)
    sender.swallow = False
    if not done:  # it went on retrying (and claiming the alert) after it was told to stop
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert done, "the cancelled deliverer was still running 5 s later"


async def _pending(client: aioredis.Redis, n: int) -> bool:
    try:
        info = await client.xpending(ALERTS_STREAM, "deliverers")
    except redis.exceptions.ResponseError:  # no group yet
        return False
    return bool(info["pending"] >= n)


@pytest.fixture
def unused_url() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/alerts"


def _length(client: aioredis.Redis, n: int) -> Callable[[], object]:
    async def check() -> bool:
        return bool(await client.xlen(ALERTS_STREAM) >= n)
    return check
